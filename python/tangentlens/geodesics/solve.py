"""``geodesic(generator, z0, z1, ...)``: shortest paths between pairs of latents under the metric
``M = JᵀJ`` of ``F = φ ∘ G``, as minimisers of the discrete curve energy (module
:mod:`tangentlens.geodesics.curves`, optimisers in :mod:`tangentlens.geodesics.optim`)."""

from __future__ import annotations

import time
from typing import Any, Literal

import torch
from torch import nn

from tangentlens._checks import check_choice as _check_choice
from tangentlens._checks import check_int as _check_int
from tangentlens._operator import _Operator, _width
from tangentlens.generators.adapters import fingerprint
from tangentlens.geodesics.curves import (
    Constrain,
    Init,
    Shell,
    energy,
    interpolation_path,
    length,
    refine,
    segments,
)
from tangentlens.geodesics.optim import GN_BYTES, Problem, Solution, gauss_newton, lbfgs
from tangentlens.geodesics.result import Geodesic, renderer
from tangentlens.jvp import Precision

__all__ = ["METHODS", "geodesic"]

Method = Literal["lbfgs", "gauss-newton"]
METHODS = ("lbfgs", "gauss-newton")
MAX_ITERS = {"lbfgs": 500, "gauss-newton": 100}


def _check_tol(tol: object) -> float:
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 < float(tol) < 1:
        raise ValueError(f"tol: expected a relative energy tolerance in (0, 1), got {tol!r}")
    return float(tol)


def _check_method(method: str, n: int, D: int, d: int) -> str:
    _check_choice(method, "method", METHODS)
    if method == "gauss-newton" and (n - 2) * d * D * 12 > GN_BYTES:
        raise ValueError(
            f"method='gauss-newton': the Jacobians of one pair ({n - 2} points x {d} x {D}) exceed the "
            f"{GN_BYTES >> 20} MiB pass budget; use method='lbfgs' or fewer points"
        )
    return method


def _solve(prob: Problem, u0: torch.Tensor, method: str, tol: float, max_iters: int, memory: int) -> Solution:
    if method == "gauss-newton":
        return gauss_newton(prob, u0, tol=tol, max_iters=max_iters)
    return lbfgs(prob, u0, tol=tol, max_iters=max_iters, memory=memory)


def _interp_numbers(prob: Problem, path: torch.Tensor) -> torch.Tensor:
    """Segments [b, n - 1] of a given curve [b, n, d] (endpoints included) of all pairs of prob."""
    idx = torch.arange(path.shape[0], device=path.device)
    return segments(prob.full(idx, prob.embed_points(path[:, 1:-1])))


def _group(
    op: _Operator,
    x0: torch.Tensor,
    x1: torch.Tensor,
    n: int,
    init: str,
    constrain: str,
    method: str,
    tol: float,
    max_iters: int,
    memory: int,
    do_refine: bool,
) -> dict[str, Any]:
    """Geodesics of one group of pairs: the interpolation path, the optimised curve, the refinement."""
    interp = interpolation_path(x0, x1, n, init)  # type: ignore[arg-type]
    shell = Shell.for_endpoints(x0, x1, n, constrain)  # type: ignore[arg-type]
    prob = Problem(op, x0, x1, n, shell)
    seg_i = _interp_numbers(prob, interp)
    sol = _solve(prob, shell.project(interp[:, 1:-1]), method, tol, max_iters, memory)
    path = torch.cat([interp[:, :1], shell.points(sol.params), interp[:, -1:]], dim=1)
    out: dict[str, Any] = {
        "path": path,
        "interp_path": interp,
        "energy": sol.energy,
        "length": length(sol.segments),
        "interp_energy": energy(seg_i),
        "interp_length": length(seg_i),
        "speeds": (n - 1) * sol.segments.clamp_min(0).sqrt(),
        "interp_speeds": (n - 1) * seg_i.clamp_min(0).sqrt(),
        "iterations": sol.iterations,
        "status": sol.status,
    }
    evaluations = prob.evaluations
    if do_refine:
        fine = prob.refined()
        nf = 2 * n - 1
        interp_f = interpolation_path(x0, x1, nf, init)  # type: ignore[arg-type]
        seg_if = _interp_numbers(fine, interp_f)
        solf = _solve(fine, fine.shell.project(refine(path)[:, 1:-1]), method, tol, max_iters, memory)
        out.update(
            length_fine=length(solf.segments),
            interp_length_fine=length(seg_if),
            energy_fine=solf.energy,
            iterations_fine=solf.iterations,
            status_fine=solf.status,
        )
        evaluations += fine.evaluations
    out["evaluations"] = evaluations
    return out


def geodesic(
    generator: object,
    z0: torch.Tensor,
    z1: torch.Tensor,
    *,
    space: Literal["z", "w", "w+"] = "z",
    distance: object = "auto",
    points: int = 16,
    init: Init = "lerp",
    constrain: Constrain = "none",
    method: Method = "lbfgs",
    max_iters: int | None = None,
    tol: float = 1e-4,
    refine: bool = True,
    batch_size: int | None = None,
    memory: int = 10,
    precision: Precision = "fp32",
    chunk_size: int | None = None,
    z_dim: int | None = None,
) -> Geodesic:
    """Discrete geodesics from ``z0`` to ``z1`` (``[B, d]`` each) under the perceptual metric of G.

    Minimises ``E = (n - 1) Σ_i d(G(c_i), G(c_{i+1}))`` over the interior points c_1 .. c_{n-2} (the
    endpoints fixed; d the squared embedding distance: LPIPS or pixels), with exact gradients (reverse mode
    through G and φ), for all pairs and points in one batch; each pair converges on its own.

    Args:
        generator: anything :func:`tangentlens.ppl` takes (StyleGAN-like ``mapping``/``synthesis``,
            ``decode``, torchmetrics / torch-fidelity generators, a callable z -> image with ``z_dim=``);
            images are measured in [-1, 1] (the adapter's ``output_range`` mapped affinely).
        z0, z1: endpoints ``[B, d]``: latents for ``space="z"``, w ``[B, w_dim]`` for ``"w"`` (one w for
            all layers), ``[B, num_ws * w_dim]`` for ``"w+"``. Cast to the generator's dtype and device.
        distance: ``"auto"`` (LPIPS-VGG16 when its weights are found, else pixels with a warning),
            ``"l2"`` (pixels), ``"lpips-vgg16"`` / an :class:`~tangentlens.LPIPS`, or any module with
            ``embed(x) -> [N, F]``. LPIPS needs 3-channel images.
        points: n, the points of the discrete curve (endpoints included), >= 3.
        init: the interpolation path the optimiser starts from and compares with: ``"lerp"`` or
            ``"slerp"`` (of the raw vectors: the angle swept at a constant rate, the norm moving between
            |z0| and |z1|, ending exactly at z1).
        constrain: ``"none"``: the points move freely in the latent space; ``"sphere"``: point i stays on
            the sphere of radius ``(1 - t_i) |z0| + t_i |z1|``. In Z with a Gaussian prior in high
            dimension the latents the generator was trained on live near the shell |z| ≈ sqrt(d); a free
            geodesic may cut through the low-norm interior, whose images the generator rarely produced
            (for a VAE, the blurry "average" images near z = 0), which can make it shorter than any path
            through typical latents. ``"sphere"`` keeps it on the shell (and removes the radial null
            direction of generators that normalise z, like StyleGAN's mapping).
        method: ``"lbfgs"`` (the default: robust on the piecewise-linear networks generators are made of)
            or ``"gauss-newton"`` (exact block-tridiagonal Gauss-Newton from the Jacobians, d JVPs per
            point per iteration: a few iterations on smooth decoders with small d, but slow where the
            Jacobian jumps between ReLU regions); see :mod:`tangentlens.geodesics.optim` and
            docs/geodesics.md for measurements.
        max_iters: iterations per pair (default 500 for L-BFGS, 100 for Gauss-Newton).
        tol: relative energy tolerance: a pair converges when its last step lowered E by at most
            ``tol · E`` and the model predicts at most that much more.
        refine: optimise again at 2n - 1 points (midpoints inserted) and report those lengths too, so
            that the resolution of the length is known (:class:`Geodesic`).
        batch_size: pairs per pass (default: all); a pair's result does not depend on it.
        memory: L-BFGS curvature pairs kept.
        precision, chunk_size: as for :func:`tangentlens.spectrum` (the JVPs' precision and tangent chunks).
        z_dim: the latent width of a plain callable (default: the endpoints' width).

    Returns:
        a :class:`Geodesic` (its ``images()`` and ``plot()`` render through the generator).
    """
    t0 = time.perf_counter()
    width = _width(z0)
    op = _Operator(
        generator, distance, space, precision, chunk_size, z_dim=z_dim if z_dim is not None else width
    )
    if isinstance(op.adapter.module, nn.Module):
        op.adapter.module.eval()
    x0, x1 = op.check_points(z0, "z0"), op.check_points(z1, "z1")
    if x0.shape != x1.shape:
        raise ValueError(f"z1: expected the shape of z0 {tuple(x0.shape)}, got {tuple(x1.shape)}")
    n = _check_int(points, "points", 3)
    _check_choice(init, "init", ("lerp", "slerp"))
    _check_choice(constrain, "constrain", ("none", "sphere"))
    tol = _check_tol(tol)
    if not isinstance(refine, bool):
        raise TypeError(f"refine: expected a bool, got {type(refine).__name__}")
    _check_int(memory, "memory", 1)
    B, d = x0.shape
    bs = B if batch_size is None else _check_int(batch_size, "batch_size", 1)
    dtype = op.adapter.param_dtype or x0.dtype
    device = op.adapter.device
    x0, x1 = x0.to(device, dtype), x1.to(device, dtype)
    if constrain == "sphere" and bool(((x0.norm(dim=1) == 0) | (x1.norm(dim=1) == 0)).any()):
        raise ValueError("constrain='sphere': expected non-zero endpoints (a zero latent has no direction)")
    with torch.no_grad():
        D = op.F(x0[:1]).shape[1]
    resolved = _check_method(method, 2 * n - 1 if refine else n, D, d)
    iters = MAX_ITERS[resolved] if max_iters is None else _check_int(max_iters, "max_iters", 1)
    groups = [
        _group(op, x0[s : s + bs], x1[s : s + bs], n, init, constrain, resolved, tol, iters, memory, refine)
        for s in range(0, B, bs)
    ]
    merged = {k: torch.cat([g[k] for g in groups]).cpu() for k in groups[0] if k != "evaluations"}
    for k in ("length", "interp_length", "energy", "interp_energy"):
        if not torch.isfinite(merged[k]).all():
            raise FloatingPointError(f"geodesic: non-finite {k} (the generator or distance returned NaN/inf)")
    config = {
        "space": space,
        "distance": op.distance_name,
        "points": n,
        "init": init,
        "constrain": constrain,
        "method": resolved,
        "max_iters": iters,
        "tol": tol,
        "refine": refine,
        "memory": memory,
        "precision": precision,
        "dtype": str(dtype).removeprefix("torch."),
        "generator": fingerprint(op.adapter.module),
    }
    return Geodesic(
        **merged,
        config=config,
        seconds=time.perf_counter() - t0,
        evaluations=sum(int(g["evaluations"]) for g in groups),
        _render=renderer(op.adapter, space),
    )
