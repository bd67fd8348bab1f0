"""StyleGAN3: the filtered_lrelu forward rule, the K-tangent JVP through StyleGAN3 + LPIPS, and PPL.

StyleGAN3Generator (config T, random weights, seeded; 64x64 with channel_max 64 on the CPU, 256x256 with
NVIDIA's widths on a GPU), LPIPS-VGG16 with random weights, float32.

- ``stylegan3.filtered_lrelu_jvp_k16``: one StyleGAN3 layer's ``filtered_lrelu`` (2x up, 12-tap Kaiser
  filters, leaky ReLU, clamp, 2x down) and 16 tangents under ``torch.func.vmap(jvp)``: the native op (its
  forward rule evaluates the primal's mask once and sends all tangents through one launch) vs the reference
  composition. Floor: reading the primal and tangent stacks once and writing the outputs once.
- ``stylegan3.jvp_lpips_k8``: ``|J v_i|^2`` of F = e(G(z)) for 8 tangents at one point: ``tangentlens.jvp``
  (the stacked forward rules: primal and tangents share each convolution; the native filtered_lrelu_jvp)
  then ``LPIPS.tangent_norms``, vs ``torch.func.vmap(jvp)`` of the reference path (impl="reference"). The
  check stores each variant's max relative error against a float64 reference run. Floor: (1 + k) forward
  passes of F.
- ``ppl.stylegan3_lpips_wend``: per-sample PPL in W at t = 0 (``ppl2_wend``):
  ``tangentlens.ppl(method="jvp")`` (the exact limit, batch 4) and ``preset="stylegan3"`` (finite
  differences on our kernels, batch 2) vs NVIDIA stylegan3's protocol as its ``PPLSampler`` runs it on a
  CPU (batch 2, fp32, reference ops: bench/baselines/ppl_protocols.nvidia_ppl; StyleGAN3 has no noise
  buffers to redraw). The check stores a pilot's mean, CI and time to a +-1 % CI per variant. Floor: one
  forward of G + LPIPS per image, two images per sample.
"""

from __future__ import annotations

import functools
import time

import scipy.signal
import torch

import tangentlens
from bench.baselines.ppl_protocols import nvidia_ppl, trimmed_mean_ci
from bench.harness import Case, time_call
from tangentlens import reference
from tangentlens.filtered_lrelu import filtered_lrelu
from tangentlens.models import StyleGAN3Generator
from tangentlens.ppl import ppl


def _filtered_lrelu_case(device: torch.device, quick: bool) -> Case:
    shape, k = ((1, 16, 36, 36), 4) if quick else ((2, 64, 52, 52), 16)
    fu = torch.tensor(scipy.signal.firwin(12, 8.0, width=6.0, fs=64), dtype=torch.float32, device=device)
    fd = fu.clone()
    kw = dict(up=2, down=2, padding=[9, 8, 9, 8], clamp=256.0)

    @functools.cache
    def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(shape, generator=g).to(device)
        return (
            x,
            torch.randn(shape[1], generator=g).to(device),
            torch.randn((k, *shape), generator=g).to(device),
        )

    def run(impl: str):  # noqa: ANN202
        def call() -> torch.Tensor:
            x, b, t = inputs()

            def fn(a: torch.Tensor) -> torch.Tensor:
                return filtered_lrelu(a, fu, fd, b, impl=impl, **kw)

            return torch.func.vmap(lambda v: torch.func.jvp(fn, (x,), (v,)), out_dims=(None, 0))(t)[1]

        return call

    def check() -> None:
        torch.testing.assert_close(run("native")(), run("reference")(), rtol=1e-4, atol=1e-4)

    x, b, _ = inputs()
    n_in, n_out = x.numel(), reference.filtered_lrelu(x, fu, fd, b, **kw).numel()
    return Case(
        name="stylegan3.filtered_lrelu_jvp_k16" if not quick else "stylegan3.filtered_lrelu_jvp_k4",
        variants={"tangentlens": run("native"), "reference": run("reference")},
        ours="tangentlens",
        baseline="reference",
        work=k,
        work_unit="tangents",
        repeats=5,
        meta={"shape": list(shape), "tangents": k, "up": 2, "down": 2, "taps": 12, "dtype": "float32"},
        floor_bytes=float((1 + k) * (n_in + n_out) * 4),
        check=check,
    )


def cases(device: torch.device, quick: bool) -> list[Case]:
    cpu = device.type == "cpu"
    res, cmax, k, samples, pilot = (64, 64, 8, 8, 32) if cpu else (256, 512, 32, 32, 256)
    if quick:
        res, cmax, k, samples, pilot = 16, 16, 2, 2, 4

    @functools.cache
    def models(impl: str, dtype: torch.dtype = torch.float32) -> tuple[StyleGAN3Generator, tangentlens.LPIPS]:
        G = StyleGAN3Generator(img_resolution=res, channel_max=cmax, seed=0, impl=impl)
        with torch.no_grad():  # trained-like: rotated, translated Fourier features (drawn in float32)
            G.synthesis.input.affine.weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
        G.to(device, dtype).eval().requires_grad_(False)
        lp = tangentlens.LPIPS("vgg16", pretrained=False, impl=impl).to(device, dtype)
        return G, lp

    def inputs(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator(device="cpu").manual_seed(k)
        z = torch.randn(1, 512, generator=g, dtype=torch.float64)
        return z.to(device, dtype), torch.randn(1, k, 512, generator=g, dtype=torch.float64).to(device, dtype)

    def ours(z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        G, lp = models("auto", z.dtype)
        img, timg = tangentlens.jvp(G, z, v, chunk_size=k)
        return lp.tangent_norms(img, timg)

    def vmap_jvp(z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        G, lp = models("reference", z.dtype)
        _, t = tangentlens.jvp(
            lambda zz: lp.embed(G(zz)), z, v, chunk_size=k, impl="reference", method="forward"
        )
        return t.square().sum(-1)

    jvp_variants = {"tangentlens": ours, "vmap_jvp": vmap_jvp}
    jvp_meta: dict = {"batch": 1, "tangents": k, "resolution": res, "channel_max": cmax, "dtype": "float32"}

    def jvp_check() -> None:
        ref = vmap_jvp(*inputs(torch.float64))
        errs = {}
        for name, f in jvp_variants.items():
            got = f(*inputs(torch.float32)).detach().double()
            errs[name] = float(((got - ref).abs() / ref.abs()).max())
        jvp_meta["max_rel_error_vs_float64"] = errs
        if errs["tangentlens"] > 1e-3:
            raise AssertionError(f"stylegan3 jvp bench: error {errs['tangentlens']:.2e} vs float64")

    def jvp_floor() -> float:
        G, lp = models("auto")
        zz = inputs(torch.float32)[0].repeat(1 + k, 1)
        with torch.no_grad():
            return time_call(lambda: lp.embed(G(zz)), device)

    def bind(f):  # noqa: ANN001, ANN202
        return lambda: f(*inputs(torch.float32))

    # ---- PPL ----
    def ppl_ours(method: str, n: int = samples):  # noqa: ANN202
        G, lp = models("auto")
        kw = dict(preset="stylegan3") if method == "fd" else dict(method="jvp", batch_size=4)
        r = ppl(G, **kw, num_samples=n, distance=lp, progress=False, bootstrap=0)
        return r.distances.numpy()

    def ppl_nvidia(n: int = samples):  # noqa: ANN202
        G, lp = models("reference")
        return nvidia_ppl(G, lp, n)

    ppl_variants = {
        "tangentlens_jvp": lambda n=samples: ppl_ours("jvp", n),
        "tangentlens_fd": lambda n=samples: ppl_ours("fd", n),
        "nvidia": ppl_nvidia,
    }
    ppl_meta: dict = {
        "resolution": res,
        "channel_max": cmax,
        "samples_per_call": samples,
        "lpips": "vgg16 (random weights)",
        "dtype": "float32",
        "pilot_samples": pilot,
    }

    def ppl_check() -> None:
        stats = {}
        for name, f in ppl_variants.items():
            torch.manual_seed(1)
            t0 = time.perf_counter()
            d = f(pilot)
            dt = time.perf_counter() - t0
            mean, half = trimmed_mean_ci(d)
            need = pilot * (half / (0.01 * mean)) ** 2
            stats[name] = {
                "mean": mean,
                "ci95_half": half,
                "samples_for_1pct": need,
                "seconds_to_1pct_ci": need * dt / pilot,
            }
        ppl_meta["pilot"] = stats
        a, b = stats["tangentlens_jvp"], stats["nvidia"]
        ppl_meta["jvp_mean_within_nvidia_ci"] = abs(a["mean"] - b["mean"]) <= b["ci95_half"] + a["ci95_half"]

    def ppl_floor() -> float:
        G, lp = models("auto")
        z = torch.randn(2 * samples, G.z_dim, device=device)
        with torch.no_grad():
            return time_call(lambda: [lp.embed(G(zz)) for zz in z.split(4)], device)

    return [
        _filtered_lrelu_case(device, quick),
        Case(
            name=f"stylegan3.jvp_lpips_k{k}",
            variants={name: bind(f) for name, f in jvp_variants.items()},
            ours="tangentlens",
            baseline="vmap_jvp",
            work=k,
            work_unit="tangents",
            repeats=3,
            meta=jvp_meta,
            floor_seconds=jvp_floor,
            check=jvp_check,
        ),
        Case(
            name="ppl.stylegan3_lpips_wend",
            variants=dict(ppl_variants),
            ours="tangentlens_jvp",
            baseline="nvidia",
            work=samples,
            work_unit="sample",
            repeats=3,
            meta=ppl_meta,
            floor_seconds=ppl_floor,
            check=ppl_check,
        ),
    ]
