"""The measurements behind docs/ppl.md's bf16 accuracy table and its shared-primal table.

    python scripts/ppl_precision_study.py accuracy [--models sg2,vae1,vae4] [--samples 200] [--seed 0]
        [--reference fp64|fp32] [--out study.json]
    python scripts/ppl_precision_study.py shared-primal [--models sg2,vae1,vae4] [--groups 64] [--k 4]

``accuracy``: per-sample exact-mode PPL of each model in bf16 and in the reference precision (same samples:
the latents, t and noise of sample i come from (seed, i)), the per-sample relative errors (median, 95th
percentile, max), the error of the trimmed mean and the mean of the per-sample errors with its 95 %
half-width, and the relative standard deviation of one sample's contribution to the trimmed mean
(``sem sqrt(n) / mean``), from which the 95 % half-width at 10k and 50k samples follows. On a CPU without
native bf16 the bf16 runs are emulated (tangentlens.bf16: native bf16's numbers).

``shared-primal``: W/end (the VAEs: Z/end lerp) with one primal carrying K endpoints; the intraclass
correlation of the distances (one-way ANOVA, winsorised at the 1st/99th percentiles, bootstrap CI over
groups), the design effect ``1 + (K - 1) rho``, the time per sample with K tangents per primal against one
(interleaved), and their product: the time to a given CI, shared over independent.

Models: ``sg2`` the bench StyleGAN2 (64², channel_max 128, noise strength 0.05, W/end), ``vae1``/``vae4``
the demo VAEs (the demo's protocol: Z, lerp, t ~ U[0, 1]); LPIPS-VGG16 with random weights throughout.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from typing import Any

import numpy as np
import torch

import tangentlens
from tangentlens.jvp import jvp as tl_jvp
from tangentlens.models import StyleGAN2Generator
from tangentlens.models.vae import load_demo_vae
from tangentlens.ppl import ppl, trimmed_stats

DTYPES = {"fp64": torch.float64, "fp32": torch.float32, "bf16": torch.float32}


def bench_stylegan2() -> StyleGAN2Generator:
    G = StyleGAN2Generator(img_resolution=64, channel_max=128, seed=0).eval()
    for name, p in G.named_parameters():  # trained generators have non-zero noise strengths
        if name.endswith("noise_strength"):
            p.data.fill_(0.05)
    return G.requires_grad_(False)


def _model(name: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    if name == "sg2":
        return bench_stylegan2(), dict(batch_size=4)
    vae = load_demo_vae(int(name[3:]))
    return vae, dict(space="z", z_interp="lerp", sampling="full", resize=None, batch_size=16)


def _generator(name: str, model: torch.nn.Module, dtype: torch.dtype) -> object:
    m = copy.deepcopy(model).to(dtype)
    return m if name == "sg2" else m.generator(channels=1)


def accuracy(name: str, n: int, seed: int, reference: str) -> dict[str, Any]:
    model, kw = _model(name)
    lp = tangentlens.LPIPS("vgg16", pretrained=False)
    d, seconds = {}, {}
    for prec in (reference, "bf16"):
        dtype = DTYPES[prec]
        t0 = time.perf_counter()
        r = ppl(
            _generator(name, model, dtype),
            method="jvp",
            precision="fp32" if prec == "fp64" else prec,
            distance=copy.deepcopy(lp).to(dtype),
            num_samples=n,
            seed=seed,
            progress=False,
            bootstrap=0,
            **kw,
        )
        seconds[prec] = time.perf_counter() - t0
        d[prec] = r.distances.numpy()
    ref, got = d[reference], d["bf16"]
    rel = got / ref - 1
    st_ref, st_got = trimmed_stats(ref), trimmed_stats(got)
    rel_std = st_ref["sem"] * math.sqrt(n) / st_ref["mean"]
    return {
        "model": name,
        "samples": n,
        "seed": seed,
        "reference": reference,
        "median_abs_rel": float(np.median(np.abs(rel))),
        "p95_abs_rel": float(np.quantile(np.abs(rel), 0.95)),
        "max_abs_rel": float(np.abs(rel).max()),
        "trimmed_mean_rel_error": st_got["mean"] / st_ref["mean"] - 1,
        "mean_of_rel": float(rel.mean()),
        "mean_of_rel_ci95_half": float(1.96 * rel.std(ddof=1) / math.sqrt(n)),
        "rel_std": rel_std,
        "ci95_half_at_10k": 1.96 * rel_std / math.sqrt(10_000),
        "ci95_half_at_50k": 1.96 * rel_std / math.sqrt(50_000),
        "seconds": seconds,
        "distances": {k: v.tolist() for k, v in d.items()},
    }


def _icc(x: np.ndarray) -> float:
    """One-way random-effects intraclass correlation of x [groups, K]."""
    k = x.shape[1]
    msb = k * x.mean(1).var(ddof=1)
    msw = x.var(1, ddof=1).mean()
    return float((msb - msw) / (msb + (k - 1) * msw))


def shared_primal(name: str, groups: int, k: int, repeats: int = 3) -> dict[str, Any]:
    model, _ = _model(name)
    lp = tangentlens.LPIPS("vgg16", pretrained=False)
    if name == "sg2":
        G, dim = model, 512
        shapes = G.synthesis.noise_shapes()

        def images(z0: torch.Tensor, z1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            m, kk = z1.shape[:2]
            with torch.no_grad():
                w0 = G.mapping(z0, None)
                w1 = G.mapping(z1.reshape(m * kk, -1), None).reshape(m, kk, *w0.shape[1:])
                noise = [torch.randn(m, 1, h, w) for h, w in shapes]  # one draw per primal
                return G.synthesis.forward_jvp(w0, w1 - w0[:, None], noise=noise)
    else:
        gen, dim = model.generator(channels=3), model.z_dim

        def images(z0: torch.Tensor, z1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x, v = tl_jvp(gen, z0, z1 - z0[:, None])
            return x.detach(), v.detach()

    def distances(z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
        x, v = images(z0, z1)
        with torch.no_grad():
            return lp.tangent_norms(x, v).double()  # [m, K]

    g = torch.Generator().manual_seed(1)
    torch.manual_seed(0)
    rows = []
    for i in range(0, groups, 4):
        m = min(4, groups - i)
        rows.append(distances(torch.randn(m, dim, generator=g), torch.randn(m, k, dim, generator=g)))
    D = torch.cat(rows).numpy()
    flat = D.ravel()
    W = np.clip(D, np.percentile(flat, 1, method="lower"), np.percentile(flat, 99, method="higher"))
    rng = np.random.default_rng(0)
    boot = [_icc(W[rng.integers(0, groups, groups)]) for _ in range(500)]
    rho = _icc(W)

    def per_sample_seconds(kk: int, n: int) -> float:
        per_call = max(1, 4 // kk)  # primals per call: about 4 samples' rows either way
        z0, z1 = torch.randn(n // kk, dim), torch.randn(n // kk, kk, dim)
        t0 = time.perf_counter()
        for i in range(0, n // kk, per_call):
            distances(z0[i : i + per_call], z1[i : i + per_call])
        return (time.perf_counter() - t0) / n

    distances(torch.randn(2, dim), torch.randn(2, k, dim))  # warm-up
    times: dict[int, list[float]] = {1: [], k: []}
    for _ in range(repeats):
        for kk in (1, k):
            times[kk].append(per_sample_seconds(kk, 8 * k))
    cost = float(np.median(times[k]) / np.median(times[1]))
    de = 1 + (k - 1) * rho
    return {
        "model": name,
        "groups": groups,
        "K": k,
        "icc_winsorised": rho,
        "icc_winsorised_ci95": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
        "icc_raw": _icc(D),
        "design_effect": de,
        "time_per_sample_shared_over_independent": cost,
        "time_to_ci_shared_over_independent": cost * de,
        "break_even_icc": 1 / (1 + k),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", choices=("accuracy", "shared-primal"))
    ap.add_argument("--models", default="sg2,vae1,vae4")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference", choices=("fp64", "fp32"), default="fp64")
    ap.add_argument("--groups", type=int, default=64)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--out", default=None, help="JSON file for the results")
    args = ap.parse_args()
    results = []
    for name in args.models.split(","):
        if args.study == "accuracy":
            r = accuracy(name, args.samples, args.seed, args.reference)
        else:
            r = shared_primal(name, args.groups, args.k)
        print(json.dumps({k: v for k, v in r.items() if k != "distances"}, indent=1), flush=True)
        results.append(r)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
