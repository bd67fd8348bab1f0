"""PPL end to end on StyleGAN2Generator + LPIPS-VGG16 (random weights, seeded), W space, t = 0.

The headline is the time to a +-1 % CI (95 %) of the trimmed mean: samples/s times the samples that
precision needs. Every variant computes ``samples`` per-sample path lengths per call:

- ``tangentlens_jvp``: ``tangentlens.ppl(method="jvp")`` (exact limit: one stacked JVP through G and the
  LPIPS trunk per sample, fused tangent-norm head), float32;
- ``tangentlens_jvp_bf16``: the same with ``precision="bf16"`` (convolutions in bf16 with float32
  accumulation; emulated by float32 kernels on CPUs without native bf16, see tangentlens.bf16);
- ``tangentlens_jvp_auto``: ``precision="auto"`` (bf16 where native and fast, else float32);
- ``tangentlens_fd``: ``tangentlens.ppl(method="fd")`` (finite difference, our native kernels), float32;
- ``nvidia``: the stylegan2-ada-pytorch protocol (bench/baselines/ppl_protocols.py), batch 2 as NVIDIA runs
  it, float32, on the reference ops (what its code uses without its CUDA plugins);
- ``torchmetrics``: torchmetrics' loop (z-lerp at t = 0, LPIPS forward at the same 64 px) on the reference
  ops. A different protocol (Z space), hence a different number and spread.

The check runs a pilot of ``pilot`` samples per variant (ours on the same seeds, so their means compare
pair by pair; the peers on their own draws) and stores each mean, its 95 % half-width and the relative
standard deviation of the trimmed mean scaled to one sample (``rel_std = sem sqrt(n) / mean``) in meta.
After the timing, ``summarize`` turns the medians into samples/s and, with the pilot's spread, into the
samples and seconds a +-1 % half-width needs (``(1.96 rel_std / 0.01)²`` samples). The W-space variants
sample one distribution (G, LPIPS, protocol alike), so their spread is estimated once, pooled over the
independent pilots of ``tangentlens_jvp`` and ``nvidia``; per-variant estimates are kept beside it. The
floor is one forward pass of G + LPIPS per image, two images per sample (an fd sample's work; a JVP sample
is at least a forward pass's FLOPs for the tangent on top of the primal).
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import numpy as np
import torch

import tangentlens
from bench.baselines.ppl_protocols import nvidia_ppl, torchmetrics_ppl, trimmed_mean_ci
from bench.harness import Case, time_call
from tangentlens.models import StyleGAN2Generator
from tangentlens.ppl import ppl

# the W-space variants: one distribution of per-sample distances
W_VARIANTS = ("tangentlens_jvp", "tangentlens_jvp_bf16", "tangentlens_jvp_auto", "tangentlens_fd", "nvidia")
# independent pilots of that distribution (ours share seeds, so only one of them counts)
POOLED = ("tangentlens_jvp", "nvidia")
TARGET_REL_HALF_WIDTH = 0.01


def samples_for(rel_std: float, target: float = TARGET_REL_HALF_WIDTH) -> float:
    """Samples for a 95 % half-width of ``target`` times the mean."""
    return (1.96 * rel_std / target) ** 2


def cases(device: torch.device, quick: bool) -> list[Case]:
    cpu = device.type == "cpu"
    res, cmax, samples, pilot = (64, 128, 16, 128) if cpu else (256, 512, 64, 512)
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

    def run_ours(method: str, precision: str, n: int, seed: int = 0) -> tangentlens.PPLResult:
        G, lp = models("auto")
        return ppl(
            G,
            method=method,
            precision=precision,
            num_samples=n,
            batch_size=batch,
            distance=lp,
            progress=False,
            bootstrap=0,
            seed=seed,
        )

    def ours(method: str, precision: str = "fp32"):  # noqa: ANN202
        return lambda n=samples: run_ours(method, precision, n).distances.numpy()

    def nvidia(n: int = samples):  # noqa: ANN202
        G, lp = models("reference")
        return nvidia_ppl(G, lp, n)

    def torchmetrics(n: int = samples):  # noqa: ANN202
        G, lp = models("reference")
        return torchmetrics_ppl(lambda z: G(z, noise_mode="const"), G.z_dim, lp, n, batch_size=batch)

    variants_fn = {
        "tangentlens_jvp": ours("jvp"),
        "tangentlens_jvp_bf16": ours("jvp", "bf16"),
        "tangentlens_jvp_auto": ours("jvp", "auto"),
        "tangentlens_fd": ours("fd"),
        "nvidia": nvidia,
        "torchmetrics": torchmetrics,
    }
    meta: dict[str, Any] = {
        "resolution": res,
        "channel_max": cmax,
        "samples_per_call": samples,
        "batch": batch,
        "lpips": "vgg16 (random weights)",
        "pilot_samples": pilot,
    }

    def check() -> None:
        auto = run_ours("jvp", "auto", 2)
        meta["auto_precision"] = auto.config["precision"]
        meta["auto_notes"] = [n for n in auto.config["notes"] if n.startswith("precision")]
        stats, dists = {}, {}
        for name, f in variants_fn.items():
            torch.manual_seed(1)
            t0 = time.perf_counter()
            d = f(pilot)
            dt = time.perf_counter() - t0
            mean, half = trimmed_mean_ci(d, upper="lower" if name == "torchmetrics" else "higher")
            rel_std = half / 1.96 * math.sqrt(d.size) / mean
            stats[name] = {"mean": mean, "ci95_half": half, "rel_std": rel_std, "pilot_seconds": dt}
            dists[name] = d
        ref = dists["tangentlens_jvp"]
        for name in ("tangentlens_jvp_bf16", "tangentlens_jvp_auto", "tangentlens_fd"):
            rel = (dists[name] - ref) / ref  # the same samples: pair by pair
            stats[name]["vs_fp32_median_abs_rel"] = float(np.median(np.abs(rel)))
            stats[name]["vs_fp32_mean_rel"] = float(dists[name].mean() / ref.mean() - 1)
        meta["pilot"] = stats

    def summarize(result: dict[str, Any]) -> None:
        stats = meta["pilot"]
        n = meta["pilot_samples"]
        pooled = math.sqrt(sum(stats[k]["rel_std"] ** 2 for k in POOLED) / len(POOLED))
        table = {}
        for name, sps in result["throughput_per_s"].items():
            rel_std = pooled if name in W_VARIANTS else stats[name]["rel_std"]
            need = samples_for(rel_std)
            table[name] = {
                "samples_per_s": sps,
                "rel_std": rel_std,
                "rel_std_own_pilot": stats[name]["rel_std"],
                "samples_for_1pct": need,
                "seconds_to_1pct_ci": need / sps,
                "pilot_mean": stats[name]["mean"],
                "pilot_ci95_half": stats[name]["ci95_half"],
            }
        base = table["nvidia"]["seconds_to_1pct_ci"]
        for row in table.values():
            row["speedup_vs_nvidia"] = base / row["seconds_to_1pct_ci"]
        ours_ = stats[result["ours"]]
        nv = stats["nvidia"]
        result["time_to_ci"] = {
            "target_rel_half_width": TARGET_REL_HALF_WIDTH,
            "pooled_rel_std": pooled,
            "pilot_samples": n,
            "variants": table,
            "speedup_vs_nvidia": table[result["ours"]]["speedup_vs_nvidia"],
            "ours_mean_within_nvidia_ci95": abs(ours_["mean"] - nv["mean"]) <= nv["ci95_half"],
        }

    def floor() -> float:
        G, lp = models("auto")
        z = torch.randn(2 * samples, G.z_dim, device=device)
        with torch.no_grad():  # in the variants' batches: on a CPU the batch size moves the cost by 20-30 %
            return time_call(lambda: [lp.embed(G(zz)) for zz in z.split(2 * batch)], device)

    return [
        Case(
            name="ppl.stylegan2_lpips_wend",
            variants=dict(variants_fn),
            ours="tangentlens_jvp_auto",
            baseline="nvidia",
            work=samples,
            work_unit="sample",
            repeats=3 if cpu else 5,
            meta=meta,
            floor_seconds=floor,
            check=check,
            summarize=summarize,
        )
    ]
