"""JVP-only estimators of ``tr M`` (Hutchinson / Hutch++) and ``Σ_{i≠j} M_ij²``, with standard errors."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from tangentlens import ops
from tangentlens._checks import check_choice as _check_choice
from tangentlens._checks import check_int as _check_int
from tangentlens._checks import (
    check_u64,
)
from tangentlens._operator import _Operator, _width
from tangentlens.generators.adapters import OutputRange
from tangentlens.generators.outputs import RangeMonitor
from tangentlens.jvp import Precision
from tangentlens.spectra.solve import STREAM_PROBE, Space, _generator, _orth, _probe, _ranges_checked_here

# ---- trace and off-diagonal energy (JVP-only estimators) ------------------------------------------------


@dataclass
class Estimate:
    """A stochastic estimate per point with its standard error (both float64 [B])."""

    estimate: torch.Tensor
    stderr: torch.Tensor
    probes: int
    method: str


def _rademacher(seed: int, first_index: int, B: int, m: int, d: int, device: torch.device) -> torch.Tensor:
    g = ops.philox_normal(seed, first_index, B, m * d, stream=STREAM_PROBE, dtype=torch.float64)
    return torch.where(g >= 0, 1.0, -1.0).to(torch.float64).reshape(B, m, d).to(device)


@_ranges_checked_here
def trace(
    fn_or_generator: object,
    z: torch.Tensor,
    *,
    probes: int = 32,
    method: Literal["hutchinson", "hutch++"] = "hutchinson",
    distance: object = None,
    space: Space = "z",
    precision: Precision = "fp32",
    chunk_size: int | None = None,
    seed: int = 0,
    first_index: int = 0,
    z_dim: int | None = None,
    output_range: OutputRange | None = None,
) -> Estimate:
    """Stochastic ``tr M(z)`` with a standard error, per point.

    ``"hutchinson"``: the mean of ``uᵀMu = |J u|²`` over Rademacher probes u (JVPs only; standard error
    std/sqrt(probes)). ``"hutch++"`` (Meyer et al. 2021): a third of the probes sketch Q = orth(M S) (one
    J and one Jᵀ product each), ``tr(QᵀMQ)`` is exact (|J Q|², JVPs), Hutchinson on the deflated
    ``(I − QQᵀ) M (I − QQᵀ)`` with the last third; the standard error is that of the deflated part.
    """
    gen = _generator(fn_or_generator, z_dim, output_range, _width(z))
    op = _Operator(gen, distance, space, precision, chunk_size, z_dim=_width(z))
    x = op.check_points(z)
    _check_choice(method, "method", ("hutchinson", "hutch++"))
    _check_int(probes, "probes", 2 if method == "hutchinson" else 6)
    check_u64(seed, "seed")
    check_u64(first_index, "first_index")
    _probe(op, x, first_index, RangeMonitor(op.adapter.output_range))
    B, d = x.shape
    U = _rademacher(seed, first_index, B, probes, d, x.device)
    if method == "hutchinson":
        q = op.sqnorms(x, U)
        return Estimate(q.mean(1), q.std(1) / math.sqrt(probes), probes, method)
    m3 = probes // 3
    S, G = U[:, :m3], U[:, 2 * m3 :]  # sketch; the middle third's cost goes to tr(QᵀMQ)
    Q = _orth(op.mv(x, S).transpose(1, 2))  # [B, d, m3]
    top = op.sqnorms(x, Q.transpose(1, 2)).sum(1)
    Gd = G - (G @ Q) @ Q.transpose(1, 2)
    q = op.sqnorms(x, Gd)
    n = q.shape[1]
    return Estimate(top + q.mean(1), q.std(1) / math.sqrt(n), probes, method)


@_ranges_checked_here
def off_diagonal_energy(
    fn_or_generator: object,
    z: torch.Tensor,
    *,
    probes: int = 64,
    distance: object = None,
    space: Space = "z",
    precision: Precision = "fp32",
    chunk_size: int | None = None,
    seed: int = 0,
    first_index: int = 0,
    z_dim: int | None = None,
    output_range: OutputRange | None = None,
) -> Estimate:
    """``Σ_{i≠j} M_ij² = ½ Var(xᵀ M x)`` for Rademacher x (SPEC 2), from ``|J x|²`` (JVPs only): half the
    unbiased sample variance, with the standard error of a sample variance
    ``sqrt((μ₄ − σ⁴ (n − 3)/(n − 1)) / n) / 2``."""
    gen = _generator(fn_or_generator, z_dim, output_range, _width(z))
    op = _Operator(gen, distance, space, precision, chunk_size, z_dim=_width(z))
    x = op.check_points(z)
    _check_int(probes, "probes", 4)
    check_u64(seed, "seed")
    check_u64(first_index, "first_index")
    _probe(op, x, first_index, RangeMonitor(op.adapter.output_range))
    B, d = x.shape
    s = op.sqnorms(x, _rademacher(seed, first_index, B, probes, d, x.device))
    n = probes
    var = s.var(1)
    mu4 = (s - s.mean(1, keepdim=True)).pow(4).mean(1)
    se = torch.sqrt(((mu4 - var.square() * (n - 3) / (n - 1)) / n).clamp_min(0.0))
    return Estimate(0.5 * var, 0.5 * se, probes, "rademacher")
