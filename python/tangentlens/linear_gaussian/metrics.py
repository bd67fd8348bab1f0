"""The I_m and SAP metrics of a joint covariance of (latents, factors) (SPEC §6), and grouping helpers."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tangentlens.linear_gaussian._common import _check_cov, _check_int, _chol_logdet

__all__ = ["MAX_ASSIGNMENTS", "ImResult", "SapResult", "im_score", "sap_score"]

#: largest m**s that im_score enumerates (its tables take ~ m**s·(s² + 8·batch) bytes).
MAX_ASSIGNMENTS = 200_000


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

    def to_dict(self) -> dict[str, Any]:
        return {
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


def im_score(cov_xv: Any, m: int, s: int) -> ImResult:
    """The I_m metric of SPEC §6 for the joint covariance of (x_1..x_m, v_1..v_s) (latents first).

    Enumerates all ``m**s`` labelled assignments of factors to latents (empty groups allowed) and scores
    ``Σ_j I(x_j; v_{G_j}) − Σ_{i<j} I(v_{G_i}; v_{G_j})``. Raises ``ValueError`` when ``m**s`` exceeds
    :data:`MAX_ASSIGNMENTS` (no heuristic search is attempted: the table would be incomplete).
    """
    m = _check_int(m, "m")
    s = _check_int(s, "s")
    S = _check_cov(cov_xv, "cov_xv", size=m + s)
    if S.ndim != 2:
        raise ValueError(f"cov_xv: expected one (m+s)x(m+s) matrix, got shape {S.shape}")
    table, assign = _im_tables(S[None], m, s)
    r = int(np.argmax(table[0]))
    pid = _partition_ids(assign)
    others = table[0][pid != pid[r]]
    margin = float(table[0, r] - others.max()) if others.size else math.inf
    return ImResult(
        score=float(table[0, r]),
        assignment=tuple(int(a) for a in assign[r]),
        grouping=_partition_from_labels(assign[r]),
        margin=margin if margin > _tie_tol(table[0, r]) else 0.0,
        table=table[0],
        assignments=assign,
    )


@dataclass
class SapResult:
    """SAP of SPEC §6: ``matrix[i, j] = Cov(x_i, v_j)² / (Var x_i Var v_j)``; ``score`` = mean over factors of
    top1 − top2; ``top_latent[j]`` = arg-max latent of factor j; ``grouping`` = the partition it induces."""

    score: float
    matrix: np.ndarray
    top_latent: tuple[int, ...]
    grouping: tuple[tuple[int, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "matrix": self.matrix.tolist(),
            "top_latent": list(self.top_latent),
            "grouping": [list(g) for g in self.grouping],
        }


def _sap_batch(S: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    var = np.diagonal(S, axis1=-2, axis2=-1)
    if np.any(var <= 0):
        raise ValueError("cov_xv: expected positive variances on the diagonal, got a non-positive one")
    c = S[..., :m, m:]
    mat = c**2 / (var[..., :m, None] * var[..., None, m:])
    srt = np.sort(mat, axis=-2)
    gap = srt[..., -1, :] - (srt[..., -2, :] if m > 1 else 0.0)
    return gap.mean(-1), mat, np.argmax(mat, axis=-2)


def sap_score(cov_xv: Any, m: int, s: int) -> SapResult:
    """SAP score (squared-correlation version) from the joint covariance of (x_1..x_m, v_1..v_s)."""
    m = _check_int(m, "m")
    s = _check_int(s, "s")
    S = _check_cov(cov_xv, "cov_xv", size=m + s)
    if S.ndim != 2:
        raise ValueError(f"cov_xv: expected one (m+s)x(m+s) matrix, got shape {S.shape}")
    score, mat, top = _sap_batch(S, m)
    return SapResult(float(score), mat, tuple(int(t) for t in top), _partition_from_labels(top))
