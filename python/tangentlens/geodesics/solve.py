"""``geodesic(generator, z0, z1, ...)``: shortest paths between pairs of latents under the metric
``M = JᵀJ`` of ``F = φ ∘ G``, as minimisers of the discrete curve energy (module
:mod:`tangentlens.geodesics.curves`, optimisers in :mod:`tangentlens.geodesics.optim`)."""

from __future__ import annotations

import time
from typing import Any, Literal

import torch
from torch import nn

from tangentlens._checks import check_bool, check_int, check_tensor, nonfinite_rows
from tangentlens._operator import _generator, _Operator, _ranges_checked_here, _width
from tangentlens.generators.adapters import OutputRange, fingerprint
from tangentlens.generators.outputs import RangeMonitor
from tangentlens.geodesics.checks import METHODS, Settings, check_settings, probe
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

__all__ = ["METHODS", "geodesic", "solve_pairs"]

Method = Literal["lbfgs", "gauss-newton"]
MAX_ITERS = {"lbfgs": 500, "gauss-newton": 100}


def _check_method(method: str, n: int, D: int, d: int) -> str:
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
    first_index: int = 0,
) -> dict[str, Any]:
    """Geodesics of one group of pairs: the interpolation path, the optimised curve, the refinement."""
    interp = interpolation_path(x0, x1, n, init)  # type: ignore[arg-type]
    shell = Shell.for_endpoints(x0, x1, n, constrain)  # type: ignore[arg-type]
    prob = Problem(op, x0, x1, n, shell, first_index)
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
    output_range: OutputRange | None = None,
    check_range: bool = True,
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
        tol: relative energy tolerance in (0, 1): a pair converges when its last step lowered E by at most
            ``tol · E`` and the model predicts at most that much more.
        refine: optimise again at 2n - 1 points (midpoints inserted) and report those lengths too, so
            that the resolution of the length is known (:class:`Geodesic`).
        batch_size: pairs per pass (default: all); a pair's result does not depend on it.
        memory: L-BFGS curvature pairs kept.
        precision, chunk_size: as for :func:`tangentlens.spectrum` (the JVPs' precision and tangent chunks).
        z_dim, output_range: for a plain callable (its latent size, default the endpoints' width; its image
            range, default ``"-1_1"``), as :func:`tangentlens.generators.as_generator`.
        check_range: compare the images with the declared range and warn once (never an error).

    Every argument is checked before any work (the message names it). Before the pairs are optimised the
    generator is probed at the endpoints (:mod:`tangentlens.geodesics.checks`): a failure inside it names
    the latents' shape and z_dim, a tuple or another number of rows is refused, NaN / inf images name the
    pairs, a generator whose output is random, or whose derivative along the path is exactly 0 (rounded or
    detached output) or not finite, is refused, and values unlike the declared range warn once.

    Returns:
        a :class:`Geodesic` (its ``images()`` and ``plot()`` render through the generator).
    """
    t0 = time.perf_counter()
    settings = check_settings(
        points=points,
        init=init,
        constrain=constrain,
        method=method,
        max_iters=max_iters,
        tol=tol,
        refine=refine,
        memory=memory,
    )
    bs = None if batch_size is None else check_int(batch_size, "batch_size", 1)
    check_bool(check_range, "check_range")
    if z_dim is not None:
        z_dim = check_int(z_dim, "z_dim", 1)
    for name, z in (("z0", z0), ("z1", z1)):  # before their width is taken for a plain callable's z_dim
        check_tensor(z, name, shape="[B, d]", floating=True)
    width = _width(z0)
    op = _Operator(
        _generator(generator, z_dim, output_range, width),
        distance,
        space,
        precision,
        chunk_size,
        z_dim=width,
        name="generator",
    )
    if isinstance(op.adapter.module, nn.Module):
        op.adapter.module.eval()
    x0, x1 = op.check_points(z0, "z0"), op.check_points(z1, "z1")
    if x0.shape != x1.shape:
        raise ValueError(f"z1: expected the shape of z0 {tuple(x0.shape)}, got {tuple(x1.shape)}")
    notes: list[str] = []
    monitor = RangeMonitor(op.adapter.output_range, check_range, notes)
    g = solve_pairs(op, x0, x1, settings, monitor, notes, batch_size=bs)
    g.seconds = time.perf_counter() - t0
    return g


@_ranges_checked_here
def solve_pairs(
    op: _Operator,
    x0: torch.Tensor,
    x1: torch.Tensor,
    s: Settings,
    monitor: RangeMonitor | None,
    notes: list[str],
    *,
    first_index: int = 0,
    batch_size: int | None = None,
) -> Geodesic:
    """:func:`geodesic` of checked endpoints x0, x1 [B, d] (pairs ``first_index ..``) through an operator
    (``scan`` keeps one operator, range monitor and notes for its whole run)."""
    t0 = time.perf_counter()
    n = s.points
    B, d = x0.shape
    bs = B if batch_size is None else batch_size
    dtype = op.adapter.param_dtype or x0.dtype
    x0, x1 = x0.to(op.adapter.device, dtype), x1.to(op.adapter.device, dtype)
    if s.constrain == "sphere":
        zero = (x0.norm(dim=1) == 0) | (x1.norm(dim=1) == 0)
        if bool(zero.any()):
            rows = (torch.nonzero(zero).flatten() + first_index).tolist()[:20]
            raise ValueError(
                "constrain='sphere': expected non-zero endpoints (a zero latent has no direction), got a "
                f"zero z0 or z1 at pairs {rows}"
            )
    probe(op, x0, x1, s.init, first_index, monitor, notes)
    with torch.no_grad():
        D = op.F(x0[:1]).shape[1]
    resolved = _check_method(s.method, 2 * n - 1 if s.refine else n, D, d)
    iters = MAX_ITERS[resolved] if s.max_iters is None else s.max_iters
    groups = [
        _group(
            op,
            x0[i : i + bs],
            x1[i : i + bs],
            n,
            s.init,
            s.constrain,
            resolved,
            s.tol,
            iters,
            s.memory,
            s.refine,
            first_index + i,
        )
        for i in range(0, B, bs)
    ]
    merged = {k: torch.cat([g[k] for g in groups]).cpu() for k in groups[0] if k != "evaluations"}
    for k in ("length", "interp_length", "energy", "interp_energy"):
        bad = nonfinite_rows(merged[k], f"geodesic: {k}", first_index, "pairs")
        if bad is not None:
            raise FloatingPointError(
                f"{bad} (the images at the endpoints are finite: the generator or the distance returned "
                "NaN / inf along the path)"
            )
    config = {
        "space": op.space,
        "distance": op.distance_name,
        "points": n,
        "init": s.init,
        "constrain": s.constrain,
        "method": resolved,
        "max_iters": iters,
        "tol": s.tol,
        "refine": s.refine,
        "memory": s.memory,
        "precision": op.precision,
        "dtype": str(dtype).removeprefix("torch."),
        "generator": fingerprint(op.adapter.module),
        "output_range": op.adapter.output_range,
    }
    if notes:
        config["notes"] = list(notes)
    return Geodesic(
        **merged,
        config=config,
        seconds=time.perf_counter() - t0,
        evaluations=sum(int(g["evaluations"]) for g in groups),
        _render=renderer(op.adapter, op.space),
    )
