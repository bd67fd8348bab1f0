"""PPL end to end on StyleGAN2Generator + LPIPS-VGG16 (random weights, seeded), W space, t = 0, float32.

Every variant computes ``samples`` per-sample path lengths:

- ``tangentlens_jvp``: ``tangentlens.ppl(method="jvp")`` (exact limit: one stacked JVP through G and the
  LPIPS trunk per sample, fused tangent-norm head), batch 16;
- ``tangentlens_fd``: ``tangentlens.ppl(method="fd")`` (finite difference, our native kernels), batch 16;
- ``nvidia``: the stylegan2-ada-pytorch protocol (bench/baselines/ppl_protocols.py), batch 2 as NVIDIA runs
  it, on the reference ops (what its code uses without its CUDA plugins);
- ``torchmetrics``: torchmetrics' loop (z-lerp at t = 0, LPIPS forward at the same 64 px) on the reference
  ops, batch 16.

Note that the four do not compute the same number: torchmetrics' protocol is a Z-space lerp. The check
runs a pilot of ``pilot`` samples per variant and stores each mean with its 95 % half-width and the time to
a +-1 % CI (samples needed from the pilot's variance / samples per second) in meta. The floor is one
forward pass of G + LPIPS per image, two images per sample (an fd sample's work; a JVP sample is at least
a forward pass's FLOPs for the tangent on top of the primal).
"""

from __future__ import annotations

import functools

import torch

import tangentlens
from bench.baselines.ppl_protocols import nvidia_ppl, torchmetrics_ppl, trimmed_mean_ci
from bench.harness import Case, time_call
from tangentlens.models import StyleGAN2Generator
from tangentlens.ppl import ppl


def cases(device: torch.device, quick: bool) -> list[Case]:
    cpu = device.type == "cpu"
    res, cmax, samples, pilot = (64, 128, 16, 96) if cpu else (256, 512, 64, 512)
    if quick:
        res, cmax, samples, pilot = 32, 32, 4, 8
    # on CPU small batches keep a layer's activations in cache: 4 samples per batch ran fastest of 2, 4, 16
    batch = 4 if cpu else 32

    @functools.cache
    def models(impl: str) -> tuple[StyleGAN2Generator, tangentlens.LPIPS]:
        G = StyleGAN2Generator(img_resolution=res, channel_max=cmax, seed=0, impl=impl).to(device).eval()
        for name, p in G.named_parameters():  # trained generators have non-zero noise strengths
            if name.endswith("noise_strength"):
                p.data.fill_(0.05)
        G.requires_grad_(False)
        lp = tangentlens.LPIPS("vgg16", pretrained=False, impl=impl).to(device)
        return G, lp

    def ours(method: str, n: int = samples, seed: int = 0):  # noqa: ANN202
        G, lp = models("auto")
        r = ppl(
            G,
            method=method,
            num_samples=n,
            batch_size=batch,
            distance=lp,
            progress=False,
            bootstrap=0,
            seed=seed,
        )
        return r.distances.numpy()

    def nvidia(n: int = samples):  # noqa: ANN202
        G, lp = models("reference")
        return nvidia_ppl(G, lp, n)

    def torchmetrics(n: int = samples):  # noqa: ANN202
        G, lp = models("reference")
        return torchmetrics_ppl(lambda z: G(z, noise_mode="const"), G.z_dim, lp, n, batch_size=batch)

    variants_fn = {
        "tangentlens_jvp": lambda n=samples: ours("jvp", n),
        "tangentlens_fd": lambda n=samples: ours("fd", n),
        "nvidia": nvidia,
        "torchmetrics": torchmetrics,
    }
    meta: dict = {
        "resolution": res,
        "channel_max": cmax,
        "samples_per_call": samples,
        "batch": batch,
        "lpips": "vgg16 (random weights)",
        "dtype": "float32",
        "pilot_samples": pilot,
    }

    def check() -> None:
        import time

        stats = {}
        for name, f in variants_fn.items():
            torch.manual_seed(1)
            t0 = time.perf_counter()
            d = f(pilot)
            dt = time.perf_counter() - t0
            mean, half = trimmed_mean_ci(d, upper="lower" if name == "torchmetrics" else "higher")
            need = pilot * (half / (0.01 * mean)) ** 2  # samples for a +-1 % half-width
            stats[name] = {
                "mean": mean,
                "ci95_half": half,
                "samples_for_1pct": need,
                "seconds_to_1pct_ci": need * dt / pilot,
            }
        meta["pilot"] = stats
        a, b = stats["tangentlens_jvp"], stats["nvidia"]
        meta["jvp_mean_within_nvidia_ci"] = abs(a["mean"] - b["mean"]) <= b["ci95_half"] + a["ci95_half"]

    def floor() -> float:
        G, lp = models("auto")
        z = torch.randn(2 * samples, G.z_dim, device=device)
        with torch.no_grad():  # in the variants' batches: on a CPU the batch size moves the cost by 20-30 %
            return time_call(lambda: [lp.embed(G(zz)) for zz in z.split(2 * batch)], device)

    return [
        Case(
            name="ppl.stylegan2_lpips_wend",
            variants=dict(variants_fn),
            ours="tangentlens_jvp",
            baseline="nvidia",
            work=samples,
            work_unit="sample",
            repeats=3 if cpu else 5,
            meta=meta,
            floor_seconds=floor,
            check=check,
        )
    ]
