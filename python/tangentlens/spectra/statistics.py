"""SPEC 5 statistics of a Spectrum per point (``stats``), and their summaries over points (``aggregate``,
``consistency``, ``grassmann_distance``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from tangentlens._checks import check_int as _check_int
from tangentlens._checks import check_positive as _check_positive
from tangentlens._checks import nonfinite_rows
from tangentlens.spectra.solve import Spectrum

TRACE_FRACTIONS = (0.99, 0.999, 0.9999)

# ---- statistics (SPEC 5) ---------------------------------------------------------------------------------


def stats(spec: Spectrum, *, rel_floor: float = 1e-12) -> dict[str, torch.Tensor]:
    """SPEC 5 statistics per point, as float64 tensors [B].

    With λ the eigenvalues (floored at ``rel_floor · λ_1`` where a logarithm or a ratio needs it):
    ``trace`` Σλ, ``rank`` the number of λ above the floor, ``log_det`` Σ log λ, ``condition_number``
    λ_1/λ_d, ``participation_ratio`` (Σλ)²/Σλ², ``entropy_rank`` exp(H(λ/Σλ)), ``dims_99`` / ``dims_99.9``
    / ``dims_99.99`` (fewest eigenvalues holding that fraction of the trace), ``alignment_distance``
    ‖|V| − P‖_F to the best permutation P (Hungarian on |V|), ``alignment_max`` mean over latent axes of
    max_j |V_ij|, and with M kept (method "full") ``column_orthogonality`` ½(log det diag M − log det M)
    over the columns with M_jj above the floor (a latent the generator ignores has J e_j = 0, orthogonal to
    everything) and ``off_diagonal_energy`` Σ_{i≠j} M_ij² / Σ_ij M_ij². For a partial spectrum (k < d) the
    spectral statistics are those of the rank-k part (trace, rank, participation ratio, entropy rank, dims
    over the k computed eigenvalues), the alignment is over its k eigenvectors (``alignment_max``: mean
    over them of their largest coordinate), and log_det, condition_number and the column statistics, which
    need all of M, are left out.

    Rank-deficient M (collapsed latents of a VAE) is the normal case: log_det and condition_number then use
    the floor (``condition_number`` at most ``1 / rel_floor``). Where M = 0 (a generator constant around
    the point) ``trace``, ``rank``, the ratios and the dims are 0, ``log_det`` is -inf and
    ``condition_number`` inf. NaN eigenvalues are an error that names them and the points.
    """
    rel_floor = _check_positive(rel_floor, "rel_floor")
    lam = spec.eigenvalues.double()
    msg = nonfinite_rows(lam, "stats: eigenvalues", 0, "points")
    if msg is not None:
        raise FloatingPointError(msg)
    tiny = torch.finfo(torch.float64).tiny
    lam = lam.clamp_min(0.0)  # PSD: negative values are rounding
    zero = lam[:, 0] <= 0  # M = 0 at that point
    floor = lam[:, :1] * rel_floor
    tr = lam.sum(1)
    p = lam / tr.clamp_min(tiny)[:, None]
    entropy = -torch.where(p > 0, p * p.clamp_min(1e-300).log(), torch.zeros_like(p)).sum(1)
    out: dict[str, torch.Tensor] = {
        "trace": tr,
        "rank": (lam > floor).sum(1).double(),
        "participation_ratio": tr.square() / lam.square().sum(1).clamp_min(tiny),
        "entropy_rank": torch.where(zero, 0.0, torch.exp(entropy)),
    }
    cum = lam.cumsum(1)
    for q in TRACE_FRACTIONS:
        # fewest eigenvalues holding a fraction q of the trace (relative slack for the rounding of cumsum)
        dims = ((cum < q * tr[:, None] * (1 - 1e-12)).sum(1) + 1).clamp_max(lam.shape[1]).double()
        out[f"dims_{100 * q:g}"] = torch.where(zero, 0.0, dims)
    if spec.complete:
        fl = torch.maximum(lam, floor)
        out["log_det"] = fl.log().sum(1)  # -inf where M = 0
        out["condition_number"] = torch.where(zero, math.inf, lam[:, 0] / fl[:, -1].clamp_min(tiny))
    a_dist, a_max = _alignment(spec.eigenvectors, spec.complete)
    out["alignment_distance"], out["alignment_max"] = a_dist, a_max
    if spec.metric is not None:
        out["column_orthogonality"] = _column_orthogonality(spec.metric.double(), rel_floor)
        M = spec.metric.double()
        total = M.square().sum((1, 2))
        off = total - torch.diagonal(M, dim1=1, dim2=2).square().sum(1)
        out["off_diagonal_energy"] = off / total.clamp_min(tiny)
    for name, v in out.items():
        bad = torch.isnan(v) | (torch.isinf(v) & (name not in ("log_det", "condition_number")))
        if bool(bad.any()):
            points = torch.nonzero(bad).flatten().tolist()
            raise FloatingPointError(
                f"stats: {name} is {'NaN' if bool(torch.isnan(v).any()) else 'inf'} at points {points[:20]} "
                f"(eigenvalues there: {spec.eigenvalues[points[:3]].tolist()})"
            )
    return out


def _column_orthogonality(M: torch.Tensor, rel_floor: float) -> torch.Tensor:
    """½(log det diag M − log det M) = −½ log det C, C the correlation matrix of the columns of J (scale
    free), over the columns with M_jj above ``rel_floor · max_j M_jj``; the others (J e_j = 0) are left
    out, an identity block of C. Eigenvalues of C are floored at ``rel_floor`` times the largest."""
    tiny = torch.finfo(torch.float64).tiny
    diag = torch.diagonal(M, dim1=1, dim2=2)
    active = diag > (diag.amax(dim=1, keepdim=True) * rel_floor).clamp_min(tiny)
    scale = torch.where(active, diag.clamp_min(tiny).rsqrt(), torch.zeros_like(diag))
    C = M * scale[:, :, None] * scale[:, None, :]
    C = C + torch.diag_embed((~active).double())
    ev = torch.linalg.eigvalsh(0.5 * (C + C.transpose(1, 2)))
    ev = torch.maximum(ev, ev[:, -1:].clamp_min(tiny) * rel_floor)
    return (-0.5 * ev.log().sum(1)).clamp_min(0.0) + 0.0  # + 0.0: no -0.0


def _alignment(V: torch.Tensor, complete: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from scipy.optimize import linear_sum_assignment

    A = V.detach().double().abs().cpu()
    dist = torch.empty(A.shape[0], dtype=torch.float64)
    for b in range(A.shape[0]):
        rows, cols = linear_sum_assignment(A[b].numpy(), maximize=True)
        P = torch.zeros_like(A[b])
        P[torch.as_tensor(rows), torch.as_tensor(cols)] = 1.0
        dist[b] = (A[b] - P).norm()
    amax = A.amax(dim=2).mean(1) if complete else A.amax(dim=1).mean(1)
    return dist.to(V.device), amax.to(V.device)


# ---- aggregation and consistency over points ---------------------------------------------------------


QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def aggregate(per_point: Mapping[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    """Mean, std (ddof 1), quantiles (5, 25, 50, 75, 95 %) and count over points of each statistic
    (tensors [N] give floats; [N, k] tensors, e.g. eigenvalues, give lists over k)."""
    if not isinstance(per_point, Mapping):
        raise TypeError(f"per_point: expected a dict of tensors [N], got {type(per_point).__name__}")
    out: dict[str, dict[str, Any]] = {}
    for name, v in per_point.items():
        if not isinstance(v, torch.Tensor) or v.dim() not in (1, 2) or v.shape[0] < 1:
            got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(f"per_point[{name!r}]: expected a tensor [N] or [N, k] with N >= 1, got {got}")
        v = v.double()
        q = torch.quantile(v, torch.tensor(QUANTILES, dtype=torch.float64), dim=0)

        def py(t: torch.Tensor) -> Any:
            return t.tolist()

        out[name] = {
            "mean": py(v.mean(0)),
            "std": py(v.std(0) if v.shape[0] > 1 else torch.zeros_like(v[0])),
            **{f"q{int(100 * p):02d}": py(q[i]) for i, p in enumerate(QUANTILES)},
            "count": int(v.shape[0]),
        }
    return out


def grassmann_distance(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Grassmann (geodesic) distance ‖θ‖₂ between the column spans of orthonormal A, B [..., d, k], θ the
    principal angles."""
    s = torch.linalg.svdvals(A.double().transpose(-1, -2) @ B.double()).clamp(-1.0, 1.0)
    return torch.arccos(s).norm(dim=-1)


def consistency(
    *,
    quadratic_forms: torch.Tensor | None = None,
    eigenvectors: torch.Tensor | None = None,
    k: int | None = None,
) -> dict[str, Any]:
    """Cross-position consistency of the metric over N points.

    ``quadratic_forms [N, n]``: ``vᵀ M(z_i) v`` for n fixed directions; gives ``qform_correlation`` [N, N]
    (Pearson correlation over directions between points) and its mean over pairs. ``eigenvectors
    [N, d, ≥k]``: gives ``grassmann`` [N, N] distances between the top-k subspaces and their mean over pairs
    (0 = the same subspace everywhere; the maximum is sqrt(k)·π/2).
    """
    out: dict[str, Any] = {}
    if quadratic_forms is None and eigenvectors is None:
        raise ValueError("consistency: expected quadratic_forms and/or eigenvectors, got neither")
    if quadratic_forms is not None:
        q = quadratic_forms
        if not isinstance(q, torch.Tensor) or q.dim() != 2 or q.shape[0] < 2 or q.shape[1] < 2:
            got = tuple(q.shape) if isinstance(q, torch.Tensor) else type(q).__name__
            raise ValueError(f"quadratic_forms: expected [N >= 2, n >= 2], got {got}")
        c = torch.corrcoef(q.double())
        iu = torch.triu_indices(c.shape[0], c.shape[0], 1)
        out["qform_correlation"] = c
        out["qform_correlation_mean"] = float(c[iu[0], iu[1]].mean())
    if eigenvectors is not None:
        V = eigenvectors
        if not isinstance(V, torch.Tensor) or V.dim() != 3 or V.shape[0] < 2:
            got = tuple(V.shape) if isinstance(V, torch.Tensor) else type(V).__name__
            raise ValueError(f"eigenvectors: expected [N >= 2, d, k], got {got}")
        k = V.shape[2] if k is None else _check_int(k, "k", 1, V.shape[2])
        Vk = V[:, :, :k].double()
        G = grassmann_distance(Vk[:, None], Vk[None, :])
        iu = torch.triu_indices(G.shape[0], G.shape[0], 1)
        out["grassmann"] = G
        out["grassmann_mean"] = float(G[iu[0], iu[1]].mean())
    return out
