"""The I_m and SAP metrics of a joint covariance of (latents, factors) (SPEC §6), and grouping helpers."""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from tangentlens.linear_gaussian._common import _check_cov, _check_int, _chol_logdet

__all__ = [
    "MAX_ASSIGNMENTS",
    "METRIC_PROTOCOLS",
    "SAP_TIE_TOL",
    "ImResult",
    "SapResult",
    "im_score",
    "sap_score",
]

#: largest m**s that im_score enumerates (its tables take ~ m**s·(s² + 8·batch) bytes).
MAX_ASSIGNMENTS = 200_000

#: the metric variants: the library's (actual Cov X, exact values) and the Vu–Wei–Wan notebooks' (latent block
#: I_m, nominal σ_v in SAP, I_m values rounded to 8 decimals, the first maximum in their enumeration order
#: wins).
MetricProtocol = Literal["tangentlens", "vu2024"]
METRIC_PROTOCOLS: tuple[str, ...] = ("tangentlens", "vu2024")

#: a factor whose two largest SAP entries differ by at most this (squared-correlation units) has no unique
#: arg-max latent: a tie (a collapsed encoder has every entry ~0).
SAP_TIE_TOL = 1e-12

#: the notebooks round every I_m value to this many decimals before taking the arg-max.
VU2024_IM_DECIMALS = 8


def _partition_from_labels(labels: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """Canonical set partition (groups sorted, ordered by smallest member) from a label per factor."""
    groups: dict[int, list[int]] = {}
    for i, lab in enumerate(labels):
        groups.setdefault(int(lab), []).append(i)
    return tuple(sorted(tuple(g) for g in groups.values()))


def _partition_ids(labels: np.ndarray) -> np.ndarray:
    """Integer id of the partition induced by each row of ``labels`` (R, s) (equal ids = equal partitions)."""
    # Canonical form: each factor points at the first factor sharing its label.
    first = np.argmax(labels[:, :, None] == labels[:, None, :], axis=-1)
    return np.unique(first, axis=0, return_inverse=True)[1].reshape(-1)


def _same_partition(labels: np.ndarray, true_labels: np.ndarray) -> np.ndarray:
    """Does each row of ``labels`` (..., s) induce the same partition as the row of ``true_labels``?"""
    eq = labels[..., :, None] == labels[..., None, :]
    teq = true_labels[..., :, None] == true_labels[..., None, :]
    return np.all(eq == teq, axis=(-2, -1))


def _assignments(m: int, s: int) -> np.ndarray:
    """All m**s labelled assignments (factor i -> latent a[r, i]) as an int array (m**s, s), mixed radix."""
    if m**s > MAX_ASSIGNMENTS:
        raise ValueError(
            f"m, s: im_score enumerates m**s labelled groupings; expected m**s <= {MAX_ASSIGNMENTS}, "
            f"got m={m}, s={s} (m**s = {m**s}); raise linear_gaussian.metrics.MAX_ASSIGNMENTS if memory"
            " allows"
        )
    return np.array(list(itertools.product(range(m), repeat=s)), dtype=np.int64).reshape(m**s, s)


def _tie_tol(best: np.ndarray | float) -> np.ndarray | float:
    """Scores within this of the maximum count as tied (collapsed codes give exactly tied tables)."""
    return 1e-9 * np.maximum(1.0, np.abs(best))


@dataclass
class ImResult:
    """I_m metric: ``score`` = max over groupings, ``assignment[i]`` = latent of factor i at the arg-max,
    ``grouping`` = the induced partition of the factors, ``margin`` = score minus the best score of an
    assignment inducing a different partition (0 for a tie: the grouping is then not determined), ``table[r]``
    = value of ``assignments[r]``."""

    score: float
    assignment: tuple[int, ...]
    grouping: tuple[tuple[int, ...], ...]
    margin: float
    table: np.ndarray
    assignments: np.ndarray
    protocol: str = "tangentlens"

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "score": self.score,
            "margin": self.margin,
            "assignment": list(self.assignment),
            "grouping": [list(g) for g in self.grouping],
            "table": self.table.tolist(),
            "assignments": self.assignments.tolist(),
        }


def _im_tables(S: np.ndarray, m: int, s: int) -> tuple[np.ndarray, np.ndarray]:
    """I_m values of every labelled grouping for a stack of joint covariances S (N, m+s, m+s) -> (N, m**s)."""
    assign = _assignments(m, s)
    k = m + s
    nsub = 1 << s
    # Index masks: row 0 = factor subset G alone, row 1 + j = {x_j} ∪ G. Log-dets of principal
    # sub-matrices are taken on S with the other rows/columns replaced by the identity, so all 2^s·(m+1)
    # blocks go in one batched Cholesky (the "cache" of all subset log-dets).
    bits = (np.arange(nsub)[:, None] >> np.arange(s)[None, :]) & 1
    masks = np.zeros((m + 1, nsub, k), dtype=bool)
    masks[:, :, m:] = bits.astype(bool)[None]
    for j in range(m):
        masks[1 + j, :, j] = True
    outer = masks[..., :, None] & masks[..., None, :]
    eye = np.eye(k)
    blocks = np.where(
        outer[None], S[:, None, None], np.where(masks[..., :, None] | masks[..., None, :], 0.0, eye)
    )
    ld = _chol_logdet(blocks, "cov_xv")  # (N, m+1, 2^s)
    ld_v = ld[:, 0, :]  # log|S_GG|, ld_v[:, 0] = 0
    ld_xv = ld[:, 1:, :]  # log|S_{x_j ∪ G}|
    ld_x = ld_xv[:, :, 0]  # log Var x_j
    mi_xg = 0.5 * (ld_x[:, :, None] + ld_v[:, None, :] - ld_xv)  # I(x_j; v_G), (N, m, 2^s)
    # group bit-masks of each assignment: gm[r, j] = Σ_i [assign[r, i] == j] 2^i
    gm = np.zeros((assign.shape[0], m), dtype=np.int64)
    for i in range(s):
        gm[np.arange(assign.shape[0]), assign[:, i]] += 1 << i
    term1 = mi_xg[:, np.arange(m)[None, :], gm].sum(-1)  # (N, R)
    term2 = np.zeros_like(term1)
    for i, j in itertools.combinations(range(m), 2):
        # I(v_Gi; v_Gj); an empty group gives ld_v[0] = 0 and contributes exactly 0.
        term2 += 0.5 * (ld_v[:, gm[:, i]] + ld_v[:, gm[:, j]] - ld_v[:, gm[:, i] | gm[:, j]])
    return term1 - term2, assign


def _vu2024_order_labels(m: int, s: int) -> list[tuple[int, ...]]:
    """The notebooks' enumeration of the m**s labelled groupings, as labels (latent of each factor).

    Their loops: the sizes (k_1, ..., k_{m-1}) of groups 1..m-1 run through range(s+1)^(m-1) in lexicographic
    order (sum <= s); group g takes each k_g-combination (itertools.combinations) of the factors not placed
    yet, visited in the iteration order of the CPython set that holds them, keyed by the 1-based
    joint-covariance index m+1..m+s and built by set difference; group m takes the rest. That set order puts
    indices >= 8 first in sets of at most four elements (hash slot = index mod 8), so it matters for (s, n, m)
    = (5, 5, 4)."""
    out: list[tuple[int, ...]] = []
    first = set(range(m + 1, m + s + 1))

    def place(sizes: tuple[int, ...], g: int, remaining: set[int], labels: list[int]) -> None:
        if g == m - 1:
            for v in remaining:
                labels[v - m - 1] = g
            out.append(tuple(labels))
            return
        for combo in itertools.combinations(remaining, sizes[g]):
            for v in combo:
                labels[v - m - 1] = g
            place(sizes, g + 1, set(remaining) - set(combo), labels)

    for sizes in itertools.product(range(s + 1), repeat=m - 1):
        if sum(sizes) <= s:
            place(sizes, 0, first, [-1] * s)
    return out


@functools.lru_cache(maxsize=8)
def _vu2024_assignments(m: int, s: int) -> np.ndarray:
    """(m**s, s) int array of the notebooks' labelled groupings in their order (see _vu2024_order_labels)."""
    _assignments(m, s)  # the size check
    if m == 1:
        return np.zeros((1, s), dtype=np.int64)
    out = np.array(_vu2024_order_labels(m, s), dtype=np.int64).reshape(-1, s)
    out.setflags(write=False)
    return out


def _vu2024_im_tables(
    cross: np.ndarray, sigma_v: np.ndarray, m: int, s: int
) -> tuple[np.ndarray, np.ndarray]:
    """I_m values of every labelled grouping, in the notebooks' order and rounded to 8 decimals, for a stack
    of
    cross-covariances ``cross`` (N, m, s) = Cov(X, V) and factor covariances ``sigma_v`` (N, s, s), with the
    latent block taken as the identity.

    With Var x_j = 1, ``I(x_j; v_G) = −½ log(1 − c_G Σ_GG⁻¹ c_Gᵀ)``: NaN when the quadratic form exceeds 1
    (the notebooks' ``det([[1, c], [cᵀ, Σ_GG]])`` is then negative and their log NaN), +inf when it equals 1.
    """
    assign = _vu2024_assignments(m, s)
    nsub = 1 << s
    N = cross.shape[0]
    bits = ((np.arange(nsub)[:, None] >> np.arange(s)[None, :]) & 1).astype(bool)
    # K[:, G] = Σ_GG⁻¹ padded with zeros; ld_v[:, G] = log|Σ_GG| (the factor blocks are SPD)
    K = np.zeros((N, nsub, s, s))
    ld_v = np.zeros((N, nsub))
    for G in range(1, nsub):
        idx = np.flatnonzero(bits[G])
        block = sigma_v[:, idx[:, None], idx[None, :]]
        K[:, G, idx[:, None], idx[None, :]] = np.linalg.inv(block)
        ld_v[:, G] = _chol_logdet(block, "sigma_v")
    quad = np.einsum("njs,ngst,njt->njg", cross, K, cross)  # (N, m, 2^s)
    with np.errstate(divide="ignore", invalid="ignore"):
        mi_xg = -0.5 * np.log1p(-quad)  # I(x_j; v_G); 0 for the empty group
    gm = np.zeros((assign.shape[0], m), dtype=np.int64)
    for i in range(s):
        gm[np.arange(assign.shape[0]), assign[:, i]] += 1 << i
    term1 = mi_xg[:, np.arange(m)[None, :], gm].sum(-1)
    term2 = np.zeros_like(term1)
    for i, j in itertools.combinations(range(m), 2):
        term2 += 0.5 * (ld_v[:, gm[:, i]] + ld_v[:, gm[:, j]] - ld_v[:, gm[:, i] | gm[:, j]])
    with np.errstate(invalid="ignore"):
        return np.round(term1 - term2, VU2024_IM_DECIMALS), assign


def _first_max(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the first maximum of each row, NaN never winning (the notebooks' strict ``>`` scan), and
    whether
    any value was not NaN."""
    finite = ~np.isnan(table)
    idx = np.argmax(np.where(finite, table, -np.inf), axis=-1)
    return idx, finite.any(axis=-1)


def _metric_args(cov_xv: Any, m: Any, s: Any, protocol: str) -> tuple[int, int, np.ndarray]:
    """The checks shared by im_score and sap_score: (m, s, one (m+s)×(m+s) float64 covariance)."""
    m = _check_int(m, "m")
    s = _check_int(s, "s")
    if protocol not in METRIC_PROTOCOLS:
        raise ValueError(f"protocol: expected one of {METRIC_PROTOCOLS}, got {protocol!r}")
    S = _check_cov(cov_xv, "cov_xv", size=m + s)
    if S.ndim != 2:
        raise ValueError(f"cov_xv: expected one (m+s)x(m+s) matrix, got shape {S.shape}")
    return m, s, S


def im_score(cov_xv: Any, m: int, s: int, *, protocol: MetricProtocol = "tangentlens") -> ImResult:
    """The I_m metric of SPEC §6 for the joint covariance of (x_1..x_m, v_1..v_s) (latents first).

    Enumerates all ``m**s`` labelled assignments of factors to latents (empty groups allowed) and scores
    ``Σ_j I(x_j; v_{G_j}) − Σ_{i<j} I(v_{G_i}; v_{G_j})``. Raises ``ValueError`` when ``m**s`` exceeds
    :data:`MAX_ASSIGNMENTS` (no heuristic search is attempted: the table would be incomplete).

    ``protocol="tangentlens"`` reads the whole covariance (the actual Cov X) and tabulates the assignments in
    mixed-radix order. ``protocol="vu2024"`` is the Vu–Wei–Wan notebooks' variant: the latent block is
    replaced by the identity (whatever ``cov_xv`` holds there), each value is rounded to 8 decimals, the table
    follows their enumeration order and the first maximum wins; a value whose log-determinant ratio is
    negative is NaN and never wins (when every value is NaN there is no arg-max: ``score`` NaN, empty
    assignment and grouping)."""
    m, s, S = _metric_args(cov_xv, m, s, protocol)
    if protocol == "vu2024":
        _chol_logdet(S[None, m:, m:], "cov_xv (factor block)")
        table, assign = _vu2024_im_tables(S[None, :m, m:], S[None, m:, m:], m, s)
        r, ok = _first_max(table)
        r = int(r[0])
        if not ok[0]:
            return ImResult(math.nan, (), (), 0.0, table[0], assign, protocol)
    else:
        table, assign = _im_tables(S[None], m, s)
        r = int(np.argmax(table[0]))
    pid = _partition_ids(assign)
    others = table[0][(pid != pid[r]) & ~np.isnan(table[0])]
    margin = float(table[0, r] - others.max()) if others.size else math.inf
    return ImResult(
        score=float(table[0, r]),
        assignment=tuple(int(a) for a in assign[r]),
        grouping=_partition_from_labels(assign[r]),
        margin=margin if margin > _tie_tol(table[0, r]) else 0.0,
        table=table[0],
        assignments=assign,
        protocol=protocol,
    )


@dataclass
class SapResult:
    """SAP of SPEC §6: ``matrix[i, j]`` = the score of latent i for factor j; ``score`` = mean over factors of
    top1 − top2 (``margins[j]``); ``top_latent[j]`` = arg-max latent of factor j (the first on a tie);
    ``grouping`` = the partition it induces. ``tie`` is True when some factor's two largest entries differ by
    at most :data:`SAP_TIE_TOL`: its arg-max latent is then arbitrary (a collapsed encoder ties every factor),
    so ``grouping`` says nothing about the code.

    ``protocol="tangentlens"``: ``matrix[i, j] = Cov(x_i, v_j)² / (Var x_i Var v_j)``; ``"vu2024"``:
    ``(Cov(x_i, v_j) / σ_j)²`` with Var x_i taken as 1 and σ_j the nominal std of factor j."""

    score: float
    matrix: np.ndarray
    top_latent: tuple[int, ...]
    grouping: tuple[tuple[int, ...], ...]
    margins: np.ndarray | None = None
    tie: bool = False
    protocol: str = "tangentlens"

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "score": self.score,
            "matrix": self.matrix.tolist(),
            "top_latent": list(self.top_latent),
            "grouping": [list(g) for g in self.grouping],
            "margins": None if self.margins is None else self.margins.tolist(),
            "tie": self.tie,
        }


def _sap_from_matrix(mat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score, margins, top latent) of SAP matrices (..., m, s): a stable descending sort, first max wins."""
    m = mat.shape[-2]
    srt = np.sort(mat, axis=-2)
    gap = srt[..., -1, :] - (srt[..., -2, :] if m > 1 else 0.0)
    return gap.mean(-1), gap, np.argmax(mat, axis=-2)


def _sap_batch(S: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    var = np.diagonal(S, axis1=-2, axis2=-1)
    if np.any(var <= 0):
        raise ValueError("cov_xv: expected positive variances on the diagonal, got a non-positive one")
    c = S[..., :m, m:]
    mat = c**2 / (var[..., :m, None] * var[..., None, m:])
    score, _, top = _sap_from_matrix(mat)
    return score, mat, top


def _vu2024_sap_matrix(cross: np.ndarray, sigma_v: np.ndarray) -> np.ndarray:
    """The notebooks' SAP matrix ``(Cov(x_i, v_j) / σ_j)²`` (Var x_i taken as 1), cross (..., m, s)."""
    return (cross / sigma_v[..., None, :]) ** 2


def sap_score(
    cov_xv: Any, m: int, s: int, *, protocol: MetricProtocol = "tangentlens", sigma_v: Any = None
) -> SapResult:
    """SAP score from the joint covariance of (x_1..x_m, v_1..v_s) (see :class:`SapResult`).

    ``protocol="vu2024"`` divides by ``sigma_v`` (s nominal factor stds; default: the square roots of the
    factor variances in ``cov_xv``) and takes Var x_i as 1, like the Vu–Wei–Wan notebooks.
    """
    m, s, S = _metric_args(cov_xv, m, s, protocol)
    if protocol == "vu2024":
        if sigma_v is None:
            var = np.diag(S)[m:]
            if np.any(var <= 0):
                raise ValueError("cov_xv: expected positive factor variances on the diagonal")
            sd = np.sqrt(var)
        else:
            sd = np.asarray(sigma_v, dtype=np.float64)
            if sd.shape != (s,) or not np.all(np.isfinite(sd)) or np.any(sd <= 0):
                raise ValueError(f"sigma_v: expected {s} positive finite stds, got {sigma_v!r}")
        mat = _vu2024_sap_matrix(S[:m, m:], sd)
    elif sigma_v is not None:
        raise ValueError("sigma_v: only the 'vu2024' protocol takes nominal factor stds")
    else:
        _, mat, _ = _sap_batch(S, m)
    score, gap, top = _sap_from_matrix(mat)
    return SapResult(
        score=float(score),
        matrix=mat,
        top_latent=tuple(int(t) for t in top),
        grouping=_partition_from_labels(top),
        margins=gap,
        tie=bool(np.any(gap <= SAP_TIE_TOL)),
        protocol=protocol,
    )
