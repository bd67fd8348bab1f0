"""Spectra of M = JᵀJ for F = LPIPS-VGG16 embedding ∘ StyleGAN2 (random weights, fp32) against GAN-Geometry's
published methods (``bench/baselines/gan_geometry.py``: the Hessian of ``z' -> LPIPS(G(z), G(z'))`` = 2 M by
double backward, row by row or inside ARPACK Lanczos).

Cases (CPU sizes; one point unless said):

- ``spectra.full_d128``: all 128 eigenpairs, 32² images, channel_max 64. Ours: ``spectrum(method="full")``
  (128 JVPs through the stacked rules, the LPIPS Gram from ``tangent_norms(gram=True)``, eigh in float64).
  Baseline: the exact Hessian by sequential double-backward passes, one per row.
- ``spectra.top20_d128``: the top 20. Ours: ``method="auto"`` (at d = 128 the full method is cheaper than
  any iteration: exact); baseline: ``eigsh(k=20, which="LA", tol=1e-3)`` with double-backward HVPs.
- ``spectra.full_d512``: all 512, 16² images.

For the full cases the baseline is timed on its first 32 Hessian rows and extrapolated linearly to d rows
through the harness's ``variant_work`` (each row is one backward pass over the same retained graph, so a
row costs the same whatever its index; the whole case must fit in 10 minutes on 2 busy cores, where 128
rows alone take 3-5 minutes). Those rows are compared with our M.
- ``spectra.top20_d512``: ours ``method="lanczos"`` (block Krylov, block 30, tol 1e-3 on the error
  bound) vs ARPACK as above.
- ``spectra.points64_d128``: top-20 at 64 points (points/s): ``spectra.scan`` (8 points per batch,
  statistics included) vs one ``spectrum`` call per point vs ARPACK per point (timed on its first 2
  points and extrapolated linearly: each point is an independent run of the same cost).

The check (run before timing, also the warm-up) computes our full spectrum, the baselines' answers and the
relative eigenvalue errors, stored in ``meta``. The floor is the physical one of forward mode: k JVPs cost
at least k forward passes of F, timed as one forward of the batch repeated (1 + k) times.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

import tangentlens
from bench.baselines import gan_geometry
from bench.harness import Case, time_call
from tangentlens.models import StyleGAN2Generator

# ARPACK's relative tolerance on the Ritz values: the same nominal accuracy as our tol=1e-3 on the residual
ARPACK_TOL = 1e-3


def cases(device: torch.device, quick: bool) -> list[Case]:
    # (d, image resolution); quick: a smoke run
    sizes = {128: 32, 512: 16} if not quick else {16: 16}
    base_rows = {128: 32, 512: 32, 16: 8}
    k_top = 20 if not quick else 4

    @functools.cache
    def models(d: int) -> tuple[StyleGAN2Generator, tangentlens.LPIPS, tangentlens.LPIPS]:
        G = StyleGAN2Generator(z_dim=d, w_dim=d, img_resolution=sizes[d], channel_max=64, seed=0)
        G = G.to(device).eval()
        lp = tangentlens.LPIPS("vgg16", pretrained=False).to(device)
        # the baselines differentiate twice through the distance: the reference head (plain torch ops)
        lp_ref = tangentlens.LPIPS("vgg16", pretrained=False, impl="reference").to(device)
        return G, lp, lp_ref

    def point(d: int, n: int = 1) -> torch.Tensor:
        return tangentlens.ops.philox_normal(0, 0, n, d, device=device)

    @functools.cache
    def full_spectrum(d: int) -> tangentlens.spectra.Spectrum:
        G, lp, _ = models(d)
        return tangentlens.spectrum(G, point(d), distance=lp, method="full")

    def reference(d: int) -> torch.Tensor:
        return full_spectrum(d).eigenvalues[0]

    def metric(d: int) -> torch.Tensor:
        M = full_spectrum(d).metric
        assert M is not None
        return M[0]

    def rel(got: torch.Tensor | np.ndarray, d: int, k: int) -> float:
        ref = reference(d)[:k]
        got = torch.as_tensor(np.asarray(got), dtype=torch.float64)[:k]
        return float(((got - ref).abs() / ref).max())

    def floor(d: int, k: int):  # noqa: ANN202
        def run() -> float:
            G, lp, _ = models(d)
            zz = point(d).repeat(1 + k, 1)
            with torch.no_grad():
                return time_call(lambda: lp.embed(G(zz)), device)

        return run

    out: list[Case] = []
    for d, res in sizes.items():
        meta_base = {
            "d": d,
            "resolution": res,
            "channel_max": 64,
            "lpips": "vgg16 (random weights)",
            "dtype": "float32",
            "points": 1,
        }
        rows = base_rows[d]

        def ours_full(d: int = d) -> torch.Tensor:
            G, lp, _ = models(d)
            return tangentlens.spectrum(G, point(d), distance=lp, method="full").eigenvalues[0]

        meta_full = dict(meta_base, baseline_rows_timed=rows)

        def base_full(d: int = d, rows: int = rows, meta: dict = meta_full) -> torch.Tensor:
            G, _, lp_ref = models(d)
            H = _partial_rows(G, lp_ref, point(d), rows)  # rows == d: hessian_backward_iter's loop
            M = metric(d)[:rows]
            meta["max_abs_error_baseline_rows_vs_ours_over_max"] = float(
                (H / 2 - M).abs().max() / M.abs().max()
            )
            return H

        def check_full(d: int = d, meta: dict = meta_full) -> None:
            ours = reference(d)  # also the warm-up
            if d <= 128:
                meta["max_rel_error_ours_top20_vs_float64_svd"] = _vs_float64(models(d), point(d), ours)

        out.append(
            Case(
                name=f"spectra.full_d{d}",
                variants={"tangentlens": ours_full, "gan_geometry_backward_iter": base_full},
                ours="tangentlens",
                baseline="gan_geometry_backward_iter",
                work=d,
                work_unit="Hessian rows",
                variant_work={"gan_geometry_backward_iter": float(rows)},
                repeats=1,
                warmup=0,
                meta=meta_full,
                floor_seconds=floor(d, d),
                check=check_full,
            )
        )

        method = "auto" if d <= 128 else "lanczos"
        meta_top = dict(meta_base, k=k_top, ours_method=method, arpack_tol=ARPACK_TOL)

        # The variants record their errors against the full spectrum (computed in the check) themselves:
        # ARPACK is too slow to be run a second time for the check.
        def ours_top(d: int = d, method: str = method, meta: dict = meta_top) -> torch.Tensor:
            G, lp, _ = models(d)
            sp = tangentlens.spectrum(G, point(d), distance=lp, k=k_top, method=method)
            meta["ours_resolved_method"] = sp.method
            meta["ours_products"] = sp.products
            meta["ours_max_relative_error_bound"] = float((sp.error_bounds / sp.eigenvalues).max())
            err = meta["max_rel_error_ours_vs_full"] = rel(sp.eigenvalues[0], d, k_top)
            if err > 1e-3:
                raise AssertionError(f"spectra bench: top-{k_top} relative error {err:.2e} > 1e-3")
            return sp.eigenvalues[0]

        def base_top(d: int = d, meta: dict = meta_top) -> np.ndarray:
            G, _, lp_ref = models(d)
            vals, _, calls = gan_geometry.lanczos_top_k(G, lp_ref, point(d), k_top, tol=ARPACK_TOL)
            meta["baseline_hvps"] = calls
            meta["max_rel_error_baseline_vs_full"] = rel(vals / 2, d, k_top)  # Hessian = 2 M
            return vals / 2

        def check_top(d: int = d) -> None:
            reference(d)

        out.append(
            Case(
                name=f"spectra.top{k_top}_d{d}",
                variants={"tangentlens": ours_top, "gan_geometry_arpack": base_top},
                ours="tangentlens",
                baseline="gan_geometry_arpack",
                work=1,
                work_unit="points",
                repeats=1,
                warmup=0,
                meta=meta_top,
                floor_seconds=floor(d, k_top),
                check=check_top,
            )
        )

    d0 = min(sizes)
    npts = 64 if not quick else 2
    arpack_pts = 2 if not quick else 1  # ARPACK is timed on these and extrapolated to npts
    meta_pts = {
        "d": d0,
        "resolution": sizes[d0],
        "k": k_top,
        "points": npts,
        "method": "auto",
        "batch_size": 8,
        "baseline_points_timed": arpack_pts,
        "arpack_tol": ARPACK_TOL,
    }

    def scanned(d: int = d0) -> None:
        G, lp, _ = models(d)
        res = tangentlens.spectra.scan(G, npts, k=k_top, distance=lp, batch_size=8, progress=False)
        meta_pts["max_relative_error_bound"] = float((res.error_bounds / res.eigenvalues).max())

    def looped(d: int = d0) -> None:
        G, lp, _ = models(d)
        z = point(d, npts)
        for i in range(npts):
            tangentlens.spectrum(G, z[i : i + 1], distance=lp, k=k_top, first_index=i)

    def arpack(d: int = d0) -> None:
        G, _, lp_ref = models(d)
        z = point(d, arpack_pts)
        for i in range(arpack_pts):
            gan_geometry.lanczos_top_k(G, lp_ref, z[i : i + 1], k_top, tol=ARPACK_TOL)

    out.append(
        Case(
            name=f"spectra.points{npts}_d{d0}",
            variants={
                "tangentlens_scan": scanned,
                "tangentlens_per_point": looped,
                "gan_geometry_arpack": arpack,
            },
            ours="tangentlens_scan",
            baseline="gan_geometry_arpack",
            work=npts,
            work_unit="points",
            variant_work={"gan_geometry_arpack": float(arpack_pts)},
            repeats=1,
            warmup=0,
            meta=meta_pts,
        )
    )
    return out


def _partial_rows(G, dist, z: torch.Tensor, rows: int) -> torch.Tensor:  # noqa: ANN001
    """The first ``rows`` Hessian rows, exactly as ``hessian_backward_iter`` computes them."""
    zp, grad = gan_geometry._gradient(G, dist, z)
    out = []
    for i in range(rows):
        (h,) = torch.autograd.grad(grad[i], zp, retain_graph=True)
        out.append(h.reshape(-1))
    return torch.stack(out)


def _vs_float64(models, z: torch.Tensor, ours: torch.Tensor) -> float:  # noqa: ANN001
    """Our fp32 eigenvalues against the float64 SVD route on the top 20 (the rest sits near fp32 rounding)."""
    G, lp, _ = models
    G64, lp64 = _double(G), _double(lp)  # noqa: N806
    ref = tangentlens.spectrum(G64, z.double(), distance=lp64, method="full", via="svd").eigenvalues[0]
    k = 20
    return float(((ours[:k] - ref[:k]).abs() / ref[:k]).max())


def _double(m: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(m).double()
