"""Linear-Gaussian (γλ-)VAE study (SPEC §6).

The model, exactly as in the spec:

* data ``Y = Γ V + N``, ``V ~ N(0, Σ_V)``, ``N ~ N(0, σ² I_n)``, so ``Σ_Y = Γ Σ_V Γᵀ + σ² I``;
* encoder ``X = B Y + W``, ``W ~ N(0, Σ_W)`` (full SPD, or diagonal for the mean-field variant);
* decoder ``Ŷ = A X̂ + Z``, ``X̂ ~ N(0, I_m)``, ``Z ~ N(0, Σ_Z)`` with ``Σ_Z`` diagonal;
* loss ``L = ½[tr(BΣ_YBᵀ + Σ_W) − log|Σ_W| − m] − γ·E[log p(y|x)] + λ·E‖Y − AX‖²`` (the ``n/2·log 2π``
  of the Gaussian log-likelihood is included, so that at γ = 1, λ = 0 the loss is the negative ELBO).

:func:`solve` minimises it by alternating exact block minimisations (decoder, then encoder), batched over
restarts and the (γ, λ) grid. :func:`gaussian_mi`, :func:`gaussian_cmi`, :func:`total_correlation`,
:func:`im_score` and :func:`sap_score` evaluate a solution through the joint covariance of (X, V)
(``Cov(X) = BΣ_YBᵀ + Σ_W``, ``Cov(X, V) = BΓΣ_V``), and :func:`success_rates` produces the study table.

Derivation of the updates (all in closed form):

* decoder given (B, Σ_W): ``A`` enters only through ``tr(Q E)/2`` with ``E = E[(Y−AX)(Y−AX)ᵀ]`` and
  ``Q = γΣ_Z⁻¹ + 2λI`` positive definite, so ``A = Σ_YBᵀ(BΣ_YBᵀ + Σ_W)⁻¹`` whatever Q is; this equals
  the spec's ``P Bᵀ Σ_W⁻¹`` with ``P = (Σ_Y⁻¹ + BᵀΣ_W⁻¹B)⁻¹``, and at this A, ``E = P``; then
  ``Σ_Z = diag(diag P)``. ``P`` is evaluated in the Joseph form ``(I − AB)Σ_Y(I − AB)ᵀ + AΣ_WAᵀ``, which
  stays PSD when Σ_W is tiny.
* encoder given (A, Σ_Z), with ``M = I + AᵀQA``: ``B = M⁻¹AᵀQ`` (the B-part of the loss does not involve
  Σ_W); full ``Σ_W = M⁻¹``; mean-field ``Σ_W = diag(1 / diag M)`` (the minimiser of
  ``½tr(MΣ_W) − ½log|Σ_W|`` over diagonal Σ_W). By Hadamard's inequality the mean-field loss exceeds the
  full one by ``½(Σ log M_ii − log|M|)``, zero iff AᵀQA is diagonal: the mean-field optimum has
  Q-orthogonal decoder columns (Allen 2024; plain column orthogonality when Q ∝ I, e.g. γ = 0).

At γ > 1 the loss is unbounded below (a latent can copy one coordinate of Y exactly: Σ_W → 0 costs
``−½ log|Σ_W|`` but gains ``γ/2·log Σ_Z,ii``); such runs are reported as ``"diverging"``. At γ = 1 with
λ > 0 the infimum is approached only as Σ_W → 0, slowly: those runs typically end at ``"max_iters"``.

Named examples (SPEC §6 configurations (s, n, m) = (3, 4, 3) and (5, 5, 4), three scenarios each) are built
by :func:`named_scenarios` from the module constants below; change them there or pass keywords.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "CONFIGURATIONS",
    "ImResult",
    "SapResult",
    "Scenario",
    "SolveResult",
    "SuccessTable",
    "decoder_update",
    "encoder_update",
    "gaussian_cmi",
    "gaussian_mi",
    "im_score",
    "joint_covariance",
    "named_scenarios",
    "parse_configuration",
    "sap_score",
    "solve",
    "success_rates",
    "total_correlation",
    "vae_objective",
]

_LOG_2PI = math.log(2.0 * math.pi)

# ----------------------------------------------------------------------------------------------------------
# Constants of the named examples (documented, easy to change: edit here or pass keywords to named_scenarios).
# ----------------------------------------------------------------------------------------------------------
#: observation noise σ² of ``Y = ΓV + N``.
DEFAULT_SIGMA2 = 0.1
#: variance of the independent part z_j of factor j is ``DEFAULT_FACTOR_NOISE_DECAY ** j`` (1, 0.7, ...).
#: Distinct variances make the principal axes of Σ_Y unique; with equal ones even a mean-field encoder could
#: rotate freely inside an eigenspace.
DEFAULT_FACTOR_NOISE_DECAY = 0.7
#: coefficient ``a`` in ``v_j = a·v_i + z_j`` (first dependent) and ``b`` (second one: star, two-pairs).
DEFAULT_COEF = 0.8
DEFAULT_COEF2 = -0.6
#: Γ as the observed coordinate of each factor (columns of the identity, a fixed permutation; the remaining
#: coordinate of the (3, 4, 3) configuration is pure noise).
DEFAULT_GAMMA_ROWS: dict[tuple[int, int, int], tuple[int, ...]] = {
    (3, 4, 3): (2, 0, 3),
    (5, 5, 4): (3, 0, 4, 1, 2),
}
#: the dependency structures, as (child, parent, coefficient-name) edges: v_child += coef · v_parent.
#: (3, 4, 3): independent | pair v1 ← v0 | star v1, v2 ← v0.
#: (5, 5, 4): pair v1 ← v0 (4 groups = m) | two pairs v1 ← v0, v3 ← v2 | star v1, v2 ← v0.
_SCENARIO_EDGES: dict[tuple[int, int, int], dict[str, tuple[tuple[int, int, str], ...]]] = {
    (3, 4, 3): {
        "independent": (),
        "pair": ((1, 0, "a"),),
        "star": ((1, 0, "a"), (2, 0, "b")),
    },
    (5, 5, 4): {
        "pair": ((1, 0, "a"),),
        "two-pairs": ((1, 0, "a"), (3, 2, "b")),
        "star": ((1, 0, "a"), (2, 0, "b")),
    },
}
CONFIGURATIONS: tuple[tuple[int, int, int], ...] = tuple(_SCENARIO_EDGES)

#: largest m**s that im_score enumerates (its tables take ~ m**s·(s² + 8·batch) bytes).
MAX_ASSIGNMENTS = 200_000

STATUSES = ("converged", "max_iters", "collapsed", "diverging")
_CONVERGED, _MAX_ITERS, _COLLAPSED, _DIVERGING = range(4)


# ----------------------------------------------------------------------------------------------------------
# Validation and linear-algebra helpers
# ----------------------------------------------------------------------------------------------------------
def _check_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_cov(cov: Any, name: str = "cov", size: int | None = None) -> np.ndarray:
    """Float64 array of shape (..., k, k), finite and symmetric; SPD-ness is checked by the Cholesky users."""
    S = np.asarray(cov, dtype=np.float64)
    if S.ndim < 2 or S.shape[-1] != S.shape[-2]:
        raise ValueError(f"{name}: expected a square matrix of shape (..., k, k), got shape {S.shape}")
    if size is not None and S.shape[-1] != size:
        raise ValueError(f"{name}: expected a {size}x{size} matrix, got shape {S.shape}")
    if not np.all(np.isfinite(S)):
        raise ValueError(f"{name}: expected finite entries, got NaN or inf")
    scale = max(float(np.max(np.abs(S), initial=0.0)), 1e-300)
    asym = float(np.max(np.abs(S - np.swapaxes(S, -1, -2)), initial=0.0))
    if asym > 1e-9 * scale:
        raise ValueError(f"{name}: expected a symmetric matrix, got max |S - S^T| = {asym:.3g}")
    return S


def _chol_logdet(mats: np.ndarray, name: str) -> np.ndarray:
    """log det of a stack of SPD matrices through Cholesky; a clear error when one is not SPD."""
    try:
        L = np.linalg.cholesky(mats)
    except np.linalg.LinAlgError:
        low = float(np.min(np.linalg.eigvalsh(mats)))
        raise ValueError(
            f"{name}: expected a symmetric positive-definite covariance (every block used must be SPD), "
            f"got a block with smallest eigenvalue {low:.3g}"
        ) from None
    return 2.0 * np.sum(np.log(np.diagonal(L, axis1=-2, axis2=-1)), axis=-1)


def _spd_inverse(M: np.ndarray) -> np.ndarray:
    """Inverse of a stack of SPD matrices via Cholesky, symmetrised."""
    L = np.linalg.cholesky(M)
    eye = np.broadcast_to(np.eye(M.shape[-1]), M.shape)
    Linv = np.linalg.solve(L, eye)
    inv = np.swapaxes(Linv, -1, -2) @ Linv
    return 0.5 * (inv + np.swapaxes(inv, -1, -2))


def _sym(M: np.ndarray) -> np.ndarray:
    return 0.5 * (M + np.swapaxes(M, -1, -2))


def _T(M: np.ndarray) -> np.ndarray:
    return np.swapaxes(M, -1, -2)


def _index_list(idx: Any, k: int, name: str) -> list[int]:
    if isinstance(idx, (int, np.integer)):
        idx = [idx]
    out = [int(i) for i in idx]
    for i in out:
        if not 0 <= i < k:
            raise ValueError(f"{name}: expected indices in [0, {k}), got {i}")
    if len(set(out)) != len(out):
        raise ValueError(f"{name}: expected distinct indices, got {out}")
    return out


def _sub_logdet(S: np.ndarray, idx: list[int], name: str) -> np.ndarray | float:
    if not idx:
        return np.zeros(S.shape[:-2]) if S.ndim > 2 else 0.0
    block = S[..., idx, :][..., :, idx]
    ld = _chol_logdet(block, name)
    return ld if S.ndim > 2 else float(ld)


# ----------------------------------------------------------------------------------------------------------
# Gaussian information quantities
# ----------------------------------------------------------------------------------------------------------
def gaussian_mi(cov: Any, a: Sequence[int] | int, b: Sequence[int] | int) -> float | np.ndarray:
    """``I(a; b) = ½ log(det S_aa · det S_bb / det S_{a∪b})`` in nats for the Gaussian with covariance
    ``cov``.

    ``cov`` is (k, k) or a stack (..., k, k); ``a`` and ``b`` are disjoint index sets (an empty set gives 0).
    Raises ``ValueError`` for non-symmetric, non-finite or non-SPD blocks and for overlapping index sets.
    """
    S = _check_cov(cov)
    k = S.shape[-1]
    ia, ib = _index_list(a, k, "a"), _index_list(b, k, "b")
    if set(ia) & set(ib):
        raise ValueError(f"a, b: expected disjoint index sets, got a={ia}, b={ib} (the MI would be infinite)")
    if not ia or not ib:
        return np.zeros(S.shape[:-2]) if S.ndim > 2 else 0.0
    return 0.5 * (_sub_logdet(S, ia, "cov") + _sub_logdet(S, ib, "cov") - _sub_logdet(S, ia + ib, "cov"))


def gaussian_cmi(
    cov: Any, a: Sequence[int] | int, b: Sequence[int] | int, c: Sequence[int] | int
) -> float | np.ndarray:
    """Conditional MI ``I(a; b | c) = ½[log|S_ac| + log|S_bc| − log|S_c| − log|S_abc|]`` in nats."""
    S = _check_cov(cov)
    k = S.shape[-1]
    ia, ib, ic = _index_list(a, k, "a"), _index_list(b, k, "b"), _index_list(c, k, "c")
    if set(ia) & set(ib) or set(ia) & set(ic) or set(ib) & set(ic):
        raise ValueError(f"a, b, c: expected pairwise disjoint index sets, got a={ia}, b={ib}, c={ic}")
    if not ia or not ib:
        return np.zeros(S.shape[:-2]) if S.ndim > 2 else 0.0
    ld = lambda idx: _sub_logdet(S, idx, "cov")  # noqa: E731
    return 0.5 * (ld(ia + ic) + ld(ib + ic) - ld(ic) - ld(ia + ib + ic))


def total_correlation(cov: Any, groups: Sequence[Sequence[int]] | None = None) -> float | np.ndarray:
    """Total correlation ``Σ_g H(g) − H(∪g) = ½[Σ_g log|S_gg| − log|S_∪|]`` (default: one group each)."""
    S = _check_cov(cov)
    k = S.shape[-1]
    if groups is None:
        groups = [[i] for i in range(k)]
    lists = [_index_list(g, k, f"groups[{j}]") for j, g in enumerate(groups)]
    union = [i for g in lists for i in g]
    if len(set(union)) != len(union):
        raise ValueError(f"groups: expected disjoint groups, got {lists}")
    total = _sub_logdet(S, union, "cov")
    return 0.5 * (sum(_sub_logdet(S, g, "cov") for g in lists) - total)


# ----------------------------------------------------------------------------------------------------------
# Groupings
# ----------------------------------------------------------------------------------------------------------
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
            f"got m={m}, s={s} (m**s = {m**s}); raise linear_gaussian.MAX_ASSIGNMENTS if memory allows"
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


# ----------------------------------------------------------------------------------------------------------
# Scenarios
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Scenario:
    """One data model ``Y = ΓV + N(0, σ²I)`` with ``V`` from a linear dependency structure.

    ``factor_structure`` lists edges ``(child, parent, coef)`` meaning ``v_child = Σ coef·v_parent + z_child``
    with independent ``z_j ~ N(0, factor_noise[j])`` (default 1); the edges must form a DAG. The covariance is
    exact: ``Σ_V = T D Tᵀ`` with ``T = (I − L)⁻¹``. ``gamma_matrix`` is an (n, s) matrix of full column rank,
    or a sequence of s distinct row indices (Γ = those columns of the identity, as in SPEC §6). The true
    grouping of the factors is the set of connected components of the dependency graph.
    """

    s: int
    n: int
    m: int
    gamma_matrix: Any
    sigma2: float
    factor_structure: Sequence[tuple[int, int, float]] = ()
    name: str = ""
    factor_noise: Sequence[float] | None = None

    def __post_init__(self) -> None:
        s = _check_int(self.s, "s")
        n = _check_int(self.n, "n")
        _check_int(self.m, "m")
        if s > n:
            raise ValueError(f"s, n: expected s <= n (Γ of full column rank), got s={s}, n={n}")
        G = np.asarray(self.gamma_matrix)
        if G.ndim == 1:
            rows = _index_list(G.tolist(), n, "gamma_matrix")
            if len(rows) != s:
                raise ValueError(f"gamma_matrix: expected {s} row indices, got {len(rows)}")
            G = np.eye(n)[:, rows]
        G = np.asarray(G, dtype=np.float64)
        if G.shape != (n, s) or not np.all(np.isfinite(G)):
            raise ValueError(f"gamma_matrix: expected a finite ({n}, {s}) matrix, got shape {G.shape}")
        if np.linalg.matrix_rank(G) < s:
            raise ValueError("gamma_matrix: expected full column rank, got a rank-deficient matrix")
        sigma2 = float(self.sigma2)
        if not sigma2 > 0 or not math.isfinite(sigma2):
            raise ValueError(f"sigma2: expected a finite noise variance > 0, got {self.sigma2!r}")
        edges = []
        for e in self.factor_structure:
            if len(e) != 3:
                raise ValueError(f"factor_structure: expected (child, parent, coef) triples, got {e!r}")
            c, p, a = int(e[0]), int(e[1]), float(e[2])
            if not (0 <= c < s and 0 <= p < s) or c == p or not math.isfinite(a):
                raise ValueError(
                    f"factor_structure: expected child != parent in [0, {s}) and finite coef, got {e}"
                )
            edges.append((c, p, a))
        if len({(c, p) for c, p, _ in edges}) != len(edges):
            raise ValueError("factor_structure: expected each (child, parent) edge once")
        noise = np.ones(s) if self.factor_noise is None else np.asarray(self.factor_noise, dtype=np.float64)
        if noise.shape != (s,) or not np.all(noise > 0) or not np.all(np.isfinite(noise)):
            raise ValueError(f"factor_noise: expected {s} positive variances, got {self.factor_noise!r}")
        L = np.zeros((s, s))
        for c, p, a in edges:
            L[c, p] = a
        # Acyclic iff the weighted adjacency (with |coef| > 0 replaced by 1) is nilpotent.
        adj = (L != 0).astype(float)
        if edges and np.any(np.linalg.matrix_power(adj, s) != 0):
            raise ValueError("factor_structure: expected an acyclic dependency graph, got a cycle")
        object.__setattr__(self, "gamma_matrix", G)
        object.__setattr__(self, "sigma2", sigma2)
        object.__setattr__(self, "factor_structure", tuple(edges))
        object.__setattr__(self, "factor_noise", tuple(float(x) for x in noise))
        object.__setattr__(self, "_L", L)

    @property
    def sigma_v(self) -> np.ndarray:
        """Exact factor covariance Σ_V (s, s)."""
        T = np.linalg.inv(np.eye(self.s) - self._L)  # type: ignore[attr-defined]
        return _sym(T @ np.diag(self.factor_noise) @ T.T)

    @property
    def sigma_y(self) -> np.ndarray:
        """Data covariance Σ_Y = ΓΣ_VΓᵀ + σ²I (n, n)."""
        G = self.gamma_matrix
        return _sym(G @ self.sigma_v @ G.T + self.sigma2 * np.eye(self.n))

    @property
    def true_labels(self) -> np.ndarray:
        """Component label of each factor (connected components of the dependency graph)."""
        lab = np.arange(self.s)
        changed = True
        while changed:  # tiny graphs: label propagation to the minimum
            changed = False
            for c, p, _ in self.factor_structure:
                lo = min(lab[c], lab[p])
                if lab[c] != lo or lab[p] != lo:
                    lab[lab == lab[c]] = lo
                    lab[lab == lab[p]] = lo
                    changed = True
        return lab

    @property
    def true_grouping(self) -> tuple[tuple[int, ...], ...]:
        return _partition_from_labels(self.true_labels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "s": self.s,
            "n": self.n,
            "m": self.m,
            "gamma_matrix": self.gamma_matrix.tolist(),
            "sigma2": self.sigma2,
            "factor_structure": [list(e) for e in self.factor_structure],
            "factor_noise": list(self.factor_noise),  # type: ignore[arg-type]
            "sigma_v": self.sigma_v.tolist(),
            "true_grouping": [list(g) for g in self.true_grouping],
        }


def parse_configuration(config: str | Sequence[int]) -> tuple[int, int, int]:
    """``"3,4,3"`` or ``(3, 4, 3)`` -> (s, n, m), checked against the named configurations."""
    try:
        parts = [int(x) for x in config.split(",")] if isinstance(config, str) else [int(x) for x in config]
    except (TypeError, ValueError):
        raise ValueError(f"config: expected 's,n,m' such as '3,4,3', got {config!r}") from None
    key = tuple(parts)
    if key not in _SCENARIO_EDGES:
        known = ", ".join(",".join(map(str, c)) for c in CONFIGURATIONS)
        raise ValueError(f"config: expected one of the named configurations ({known}), got {config!r}")
    return key  # type: ignore[return-value]


def named_scenarios(
    config: str | Sequence[int],
    *,
    sigma2: float = DEFAULT_SIGMA2,
    coef: float = DEFAULT_COEF,
    coef2: float = DEFAULT_COEF2,
    factor_noise_decay: float = DEFAULT_FACTOR_NOISE_DECAY,
) -> list[Scenario]:
    """The three named scenarios of configuration (s, n, m) = (3, 4, 3) or (5, 5, 4) (module constants)."""
    s, n, m = key = parse_configuration(config)
    coefs = {"a": coef, "b": coef2}
    noise = tuple(factor_noise_decay**j for j in range(s))
    return [
        Scenario(
            s,
            n,
            m,
            DEFAULT_GAMMA_ROWS[key],
            sigma2,
            tuple((c, p, coefs[k]) for c, p, k in edges),
            name=name,
            factor_noise=noise,
        )
        for name, edges in _SCENARIO_EDGES[key].items()
    ]


# ----------------------------------------------------------------------------------------------------------
# Objective and closed-form updates (all batched over leading dimensions)
# ----------------------------------------------------------------------------------------------------------
def _recon_diag(sigma_y: np.ndarray, B: np.ndarray, sigma_w: np.ndarray, A: np.ndarray) -> np.ndarray:
    """diag E[(Y − AX)(Y − AX)ᵀ] = diag[(I − AB)Σ_Y(I − AB)ᵀ + AΣ_WAᵀ]."""
    R = np.eye(sigma_y.shape[-1]) - A @ B
    return np.einsum("...ij,...jk,...ik->...i", R, sigma_y, R) + np.einsum(
        "...ij,...jk,...ik->...i", A, sigma_w, A
    )


def vae_objective(
    sigma_y: Any, gamma: Any, lam: Any, B: Any, sigma_w: Any, A: Any, sigma_z: Any
) -> np.ndarray | float:
    """The loss L of SPEC §6 (with the ``n/2 log 2π`` of −E log p(y|x)), batched over leading dimensions.

    Shapes: sigma_y (..., n, n), B (..., m, n), sigma_w (..., m, m), A (..., n, m), sigma_z (..., n) (the
    diagonal of Σ_Z); gamma and lam broadcast against the batch shape. At γ = 0 the Σ_Z term is dropped (it
    has weight 0).
    """
    Sy, B, W, A = (np.asarray(x, dtype=np.float64) for x in (sigma_y, B, sigma_w, A))
    Z = np.asarray(sigma_z, dtype=np.float64)
    g = np.asarray(gamma, dtype=np.float64)
    lm = np.asarray(lam, dtype=np.float64)
    m, n = B.shape[-2], B.shape[-1]
    kl = 0.5 * (
        np.einsum("...ij,...jk,...ik->...", B, Sy, B)
        + np.trace(W, axis1=-2, axis2=-1)
        - _chol_logdet(W, "sigma_w")
        - m
    )
    e = _recon_diag(Sy, B, W, A)
    with np.errstate(divide="ignore", invalid="ignore"):
        nll = 0.5 * (np.sum(e / Z, -1) + np.sum(np.log(Z), -1) + n * _LOG_2PI)
    out = kl + np.where(g == 0, 0.0, g * nll) + lm * e.sum(-1)
    return float(out) if np.ndim(out) == 0 else out


def decoder_update(sigma_y: Any, B: Any, sigma_w: Any) -> tuple[np.ndarray, np.ndarray]:
    """Exact minimiser over (A, Σ_Z) given the encoder: ``A = Σ_YBᵀ(BΣ_YBᵀ + Σ_W)⁻¹ (= PBᵀΣ_W⁻¹)``,
    ``Σ_Z = diag(P)`` with ``P = (Σ_Y⁻¹ + BᵀΣ_W⁻¹B)⁻¹`` in Joseph form. Returns (A, diag Σ_Z)."""
    Sy, B, W = (np.asarray(x, dtype=np.float64) for x in (sigma_y, B, sigma_w))
    BSy = B @ Sy
    C = _sym(BSy @ _T(B) + W)
    A = _T(np.linalg.solve(C, BSy))  # C symmetric: (C⁻¹BΣ_Y)ᵀ = Σ_YBᵀC⁻¹
    return A, _recon_diag(Sy, B, W, A)


def encoder_update(
    A: Any, sigma_z: Any, gamma: Any, lam: Any, *, diagonal: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Exact minimiser over (B, Σ_W) given the decoder, with ``Q = γΣ_Z⁻¹ + 2λI`` and ``M = I + AᵀQA``:
    ``B = M⁻¹AᵀQ``; ``Σ_W = M⁻¹`` (full) or ``diag(1/diag M)`` (mean-field). Returns (B, Σ_W)."""
    A = np.asarray(A, dtype=np.float64)
    Z = np.asarray(sigma_z, dtype=np.float64)
    g = np.asarray(gamma, dtype=np.float64)[..., None]
    lm = np.asarray(lam, dtype=np.float64)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(g == 0, 0.0, g / Z) + 2.0 * lm  # diagonal of Q
    AtQ = _T(A) * q[..., None, :]
    m = A.shape[-1]
    M = _sym(np.eye(m) + AtQ @ A)
    Minv = _spd_inverse(M)
    B = Minv @ AtQ
    if diagonal:
        W = np.eye(m) / np.diagonal(M, axis1=-2, axis2=-1)[..., None, :]
    else:
        W = Minv
    return B, W


def joint_covariance(scenario: Scenario, B: Any, sigma_w: Any) -> np.ndarray:
    """Covariance of (X, V) for ``X = B(ΓV + N) + W``: [[BΣ_YBᵀ + Σ_W, BΓΣ_V], [Σ_VΓᵀBᵀ, Σ_V]], batched."""
    B = np.asarray(B, dtype=np.float64)
    W = np.asarray(sigma_w, dtype=np.float64)
    Sv = scenario.sigma_v
    xx = _sym(B @ scenario.sigma_y @ _T(B) + W)
    xv = B @ scenario.gamma_matrix @ Sv
    batch = xx.shape[:-2]
    top = np.concatenate([xx, xv], -1)
    bottom = np.concatenate([_T(xv), np.broadcast_to(Sv, batch + Sv.shape)], -1)
    return np.concatenate([top, bottom], -2)


# ----------------------------------------------------------------------------------------------------------
# Batched alternating solver
# ----------------------------------------------------------------------------------------------------------
@dataclass
class _RunOut:
    B: np.ndarray
    W: np.ndarray
    A: np.ndarray
    Z: np.ndarray
    objective: np.ndarray
    status: np.ndarray
    n_iter: np.ndarray
    history: np.ndarray
    history_half: np.ndarray


def _run(
    sigma_y: np.ndarray,
    gamma: np.ndarray,
    lam: np.ndarray,
    B0: np.ndarray,
    W0: np.ndarray,
    *,
    diagonal: bool,
    max_iters: int,
    tol: float,
    param_tol: float,
    sigma_w_floor: float,
    collapse_tol: float,
    record_history: bool,
) -> _RunOut:
    """Flat batch of N problems; finished problems are frozen and dropped from the working set."""
    N, m, n = B0.shape
    B, W = B0.copy(), W0.copy()
    A = np.zeros((N, n, m))
    Z = np.ones((N, n))
    obj = np.full(N, np.nan)
    status = np.full(N, _MAX_ITERS, dtype=np.int64)
    n_iter = np.zeros(N, dtype=np.int64)
    T = max_iters if record_history else 0
    hist = np.full((N, T), np.nan)
    hist_half = np.full((N, T), np.nan)
    active = np.arange(N)
    for t in range(max_iters):
        if active.size == 0:
            break
        Sy, g, lm = sigma_y[active], gamma[active], lam[active]
        with np.errstate(all="ignore"):
            try:
                A1, Z1 = decoder_update(Sy, B[active], W[active])
                f_half = vae_objective(Sy, g, lm, B[active], W[active], A1, Z1)
                B1, W1 = encoder_update(A1, Z1, g, lm, diagonal=diagonal)
                f_new = vae_objective(Sy, g, lm, B1, W1, A1, Z1)
                ok = np.isfinite(f_new) & np.isfinite(f_half)
                ok &= np.all(np.isfinite(B1), axis=(-2, -1)) & np.all(np.isfinite(A1), axis=(-2, -1))
            except (np.linalg.LinAlgError, ValueError):
                # A numerically singular member: redo one by one to isolate it (rare; only when diverging).
                ok = np.zeros(active.size, dtype=bool)
                A1, Z1, B1, W1 = A[active], Z[active], B[active], W[active]
                f_half = np.full(active.size, np.nan)
                f_new = np.full(active.size, np.nan)
                for r in range(active.size):
                    try:
                        a1, z1 = decoder_update(Sy[r], B[active[r]], W[active[r]])
                        fh = vae_objective(Sy[r], g[r], lm[r], B[active[r]], W[active[r]], a1, z1)
                        b1, w1 = encoder_update(a1, z1, g[r], lm[r], diagonal=diagonal)
                        fn = vae_objective(Sy[r], g[r], lm[r], b1, w1, a1, z1)
                    except (np.linalg.LinAlgError, ValueError):
                        continue
                    A1[r], Z1[r], B1[r], W1[r], f_half[r], f_new[r] = a1, z1, b1, w1, fh, fn
                    ok[r] = np.isfinite(fn) and np.isfinite(fh)
        upd = active[ok]
        # largest change of the encoder, relative to max(1, its size): the objective alone is too flat near an
        # optimum approached slowly (EM-like rates), so both must settle.
        move = np.full(active.size, np.inf)
        scale = np.maximum(1.0, np.abs(B1[ok]).max(axis=(-2, -1)))
        move[ok] = (
            np.maximum(np.abs(B1[ok] - B[upd]).max(axis=(-2, -1)), np.abs(W1[ok] - W[upd]).max(axis=(-2, -1)))
            / scale
        )
        B[upd], W[upd], A[upd], Z[upd] = B1[ok], W1[ok], A1[ok], Z1[ok]
        prev = obj[upd]
        obj[upd] = f_new[ok]
        n_iter[upd] = t + 1
        if record_history:
            hist[upd, t] = f_new[ok]
            hist_half[upd, t] = f_half[ok]
        wmin = np.full(active.size, -np.inf)
        if diagonal:
            wmin[ok] = np.min(np.diagonal(W1[ok], axis1=-2, axis2=-1), -1)
        elif ok.any():
            wmin[ok] = np.linalg.eigvalsh(W1[ok])[..., 0]
        diverging = ~ok | (wmin < sigma_w_floor)
        fn = np.where(ok, f_new, 0.0)
        step = np.full(active.size, np.inf)
        step[ok] = np.abs(np.where(np.isnan(prev), np.inf, prev - fn[ok]))
        converged = ~diverging & (step <= tol * np.maximum(1.0, np.abs(fn))) & (move <= param_tol)
        status[active[diverging]] = _DIVERGING
        status[active[converged]] = _CONVERGED
        active = active[~(diverging | converged)]
    # Collapse: the encoder carries (almost) no signal, tr(BΣ_YBᵀ) ~ 0 (B → 0 is a fixed point).
    signal = np.einsum("...ij,...jk,...ik->...", B, sigma_y, B)
    status[(status != _DIVERGING) & (signal < collapse_tol)] = _COLLAPSED
    return _RunOut(B, W, A, Z, obj, status, n_iter, hist, hist_half)


def _random_init(
    rng: np.random.Generator, shape: tuple[int, ...], m: int, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """B0 with i.i.d. N(0, 1/n) entries and diagonal Σ_W0 with entries U(0.2, 1) (valid for both variants)."""
    B0 = rng.standard_normal(shape + (m, n)) / math.sqrt(n)
    W0 = np.eye(m) * rng.uniform(0.2, 1.0, size=shape + (1, m))
    return B0, W0


def _pca_init(sigma_y: np.ndarray, shape: tuple[int, ...], m: int) -> tuple[np.ndarray, np.ndarray]:
    """B0 = top-m whitened principal directions of Σ_Y (identical for all restarts), Σ_W0 = I/2."""
    evals, evecs = np.linalg.eigh(sigma_y)
    order = np.argsort(evals)[::-1][:m]
    B = (evecs[:, order] / np.sqrt(evals[order])).T
    if B.shape[0] < m:
        raise ValueError(f"init: 'pca' needs m <= n, got m={m}, n={sigma_y.shape[0]}")
    return np.broadcast_to(B, shape + B.shape).copy(), np.broadcast_to(0.5 * np.eye(m), shape + (m, m)).copy()


def _grid(values: Any, name: str) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name}: expected a non-negative finite scalar or 1-d sequence, got {values!r}")
    return arr


@dataclass
class SolveResult:
    """Solutions on the grid; arrays are indexed [gamma, lam, restart, ...].

    ``status`` holds one of ``"converged"``, ``"max_iters"``, ``"collapsed"`` (tr(BΣ_YBᵀ) < collapse_tol),
    ``"diverging"`` (min eigenvalue of Σ_W fell below ``sigma_w_floor`` while the objective was still moving,
    or the update stopped being finite; the state is the last finite one). ``recon_error`` is
    ``‖Σ_Y − (AAᵀ + Σ_Z)‖₂/‖Σ_Y‖₂``; ``active_dims`` counts eigenvalues of BΣ_YBᵀ above ``collapse_tol``.
    ``history[..., t]`` is the objective after iteration t (NaN once stopped); ``history_half`` after its
    decoder half-step.
    """

    scenario: Scenario
    gamma: np.ndarray
    lam: np.ndarray
    diagonal: bool
    objective: np.ndarray
    status: np.ndarray
    n_iter: np.ndarray
    recon_error: np.ndarray
    active_dims: np.ndarray
    B: np.ndarray
    sigma_w: np.ndarray
    A: np.ndarray
    sigma_z: np.ndarray
    history: np.ndarray = field(repr=False)
    history_half: np.ndarray = field(repr=False)

    def best_restart(self) -> np.ndarray:
        """(G, L) index of the lowest-objective non-diverging restart (-1 where all diverged)."""
        f = np.where(self.status == "diverging", np.inf, self.objective)
        best = np.argmin(f, axis=-1)
        return np.where(np.isfinite(np.min(f, axis=-1)), best, -1)

    def joint_covariance(self) -> np.ndarray:
        """Cov(X, V) of every solution, shape (G, L, R, m+s, m+s)."""
        return joint_covariance(self.scenario, self.B, self.sigma_w)

    def to_dict(self, *, include_history: bool = False) -> dict[str, Any]:
        out = {
            "scenario": self.scenario.to_dict(),
            "gamma": self.gamma.tolist(),
            "lam": self.lam.tolist(),
            "diagonal": self.diagonal,
            "objective": _json_array(self.objective),
            "status": self.status.tolist(),
            "n_iter": self.n_iter.tolist(),
            "recon_error": _json_array(self.recon_error),
            "active_dims": self.active_dims.tolist(),
            "B": _json_array(self.B),
            "sigma_w": _json_array(self.sigma_w),
            "A": _json_array(self.A),
            "sigma_z": _json_array(self.sigma_z),
        }
        if include_history:
            out["history"] = _json_array(self.history)
        return out


def _json_array(a: np.ndarray) -> Any:
    """ndarray -> nested lists with NaN/inf as None (strict JSON)."""
    obj = np.asarray(a, dtype=object)
    obj[~np.isfinite(np.asarray(a, dtype=np.float64))] = None
    return obj.tolist()


def _check_solver_args(max_iters: int, tol: float, param_tol: float, restarts: int) -> None:
    _check_int(max_iters, "max_iters")
    _check_int(restarts, "restarts")
    for name, value in (("tol", tol), ("param_tol", param_tol)):
        if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0 <= value < 1):
            raise ValueError(f"{name}: expected a relative tolerance in [0, 1), got {value!r}")


def _finish(
    scenario: Scenario,
    out: _RunOut,
    shape: tuple[int, ...],
    collapse_tol: float,
) -> dict[str, np.ndarray]:
    Sy = scenario.sigma_y
    model = out.A @ _T(out.A) + np.eye(scenario.n) * out.Z[:, None, :]
    recon = np.linalg.norm(Sy - model, ord=2, axis=(-2, -1)) / np.linalg.norm(Sy, ord=2)
    sig = np.linalg.eigvalsh(_sym(out.B @ Sy @ _T(out.B)))
    active = np.sum(sig > collapse_tol, axis=-1)
    status = np.array(STATUSES, dtype=object)[out.status].astype(str)
    m, n = scenario.m, scenario.n
    return {
        "objective": out.objective.reshape(shape),
        "status": status.reshape(shape),
        "n_iter": out.n_iter.reshape(shape),
        "recon_error": recon.reshape(shape),
        "active_dims": active.reshape(shape),
        "B": out.B.reshape(shape + (m, n)),
        "sigma_w": out.W.reshape(shape + (m, m)),
        "A": out.A.reshape(shape + (n, m)),
        "sigma_z": out.Z.reshape(shape + (n,)),
        "history": out.history.reshape(shape + (-1,)),
        "history_half": out.history_half.reshape(shape + (-1,)),
    }


def solve(
    scenario: Scenario,
    gamma: float | Sequence[float],
    lam: float | Sequence[float],
    *,
    init: str | tuple[Any, Any] = "random",
    seed: int = 0,
    restarts: int = 4,
    max_iters: int = 5000,
    tol: float = 1e-12,
    param_tol: float = 1e-9,
    diagonal: bool = False,
    sigma_w_floor: float = 1e-9,
    collapse_tol: float = 1e-10,
    record_history: bool = True,
) -> SolveResult:
    """Minimise the SPEC §6 loss by alternating exact updates (decoder, then encoder) on the γ × λ grid.

    Every (γ, λ, restart) is one member of a single batched iteration (stacked ``np.linalg`` calls). ``init``:
    ``"random"`` (seeded by ``seed``, see :func:`_random_init`), ``"pca"``, or an explicit ``(B0, Σ_W0)`` pair
    broadcastable to (G, L, R, m, n) / (G, L, R, m, m) (Σ_W0 must be diagonal when ``diagonal``). Stops a
    member as converged when the relative objective change is ``<= tol`` and the largest change of an entry of
    (B, Σ_W) is ``<= param_tol·max(1, max|B|)``, as diverging when Σ_W degenerates or after ``max_iters``.
    ``diagonal=True`` is the mean-field (diagonal Σ_W) encoder.
    """
    if not isinstance(scenario, Scenario):
        raise ValueError(f"scenario: expected a Scenario, got {type(scenario).__name__}")
    _check_solver_args(max_iters, tol, param_tol, restarts)
    g, lm = _grid(gamma, "gamma"), _grid(lam, "lam")
    m, n = scenario.m, scenario.n
    shape = (g.size, lm.size, restarts)
    if isinstance(init, str):
        if init == "random":
            B0, W0 = _random_init(np.random.default_rng(seed), shape, m, n)
        elif init == "pca":
            B0, W0 = _pca_init(scenario.sigma_y, shape, m)
        else:
            raise ValueError(f"init: expected 'random', 'pca' or a (B0, sigma_w0) pair, got {init!r}")
    else:
        try:
            B0 = np.broadcast_to(np.asarray(init[0], dtype=np.float64), shape + (m, n)).copy()
            W0 = np.broadcast_to(np.asarray(init[1], dtype=np.float64), shape + (m, m)).copy()
        except (ValueError, TypeError, IndexError):
            raise ValueError(
                f"init: expected (B0, sigma_w0) broadcastable to {shape + (m, n)} and {shape + (m, m)}"
            ) from None
        _chol_logdet(W0, "init sigma_w0")
        if diagonal and np.any(W0 * (1 - np.eye(m)) != 0):
            raise ValueError("init: expected a diagonal sigma_w0 for the mean-field (diagonal=True) solver")
    N = int(np.prod(shape))
    out = _run(
        np.broadcast_to(scenario.sigma_y, (N, n, n)),
        np.broadcast_to(g[:, None, None], shape).reshape(N),
        np.broadcast_to(lm[None, :, None], shape).reshape(N),
        B0.reshape(N, m, n),
        W0.reshape(N, m, m),
        diagonal=diagonal,
        max_iters=max_iters,
        tol=tol,
        param_tol=param_tol,
        sigma_w_floor=sigma_w_floor,
        collapse_tol=collapse_tol,
        record_history=record_history,
    )
    return SolveResult(
        scenario=scenario, gamma=g, lam=lm, diagonal=diagonal, **_finish(scenario, out, shape, collapse_tol)
    )


# ----------------------------------------------------------------------------------------------------------
# The study table
# ----------------------------------------------------------------------------------------------------------
@dataclass
class SuccessTable:
    """Success rates per scenario × γ × λ for I_m and SAP.

    Per seed, the rate is the fraction of the converged or max-iterations restarts (collapsed and diverging
    ones are left out) whose metric recovers the true grouping of the factors: for I_m the true partition must
    strictly beat every other one (a tie fails), for SAP every factor's arg-max latent must be unique and
    induce the true partition. ``*_mean`` / ``*_std`` are the mean and standard deviation of that rate over
    seeds (NaN where no run counts, shown as ``n/a``). Arrays are indexed [scenario, gamma, lam]; ``per_seed``
    arrays add a seed axis; the status fractions count all seeds × restarts.
    """

    configuration: tuple[int, int, int]
    scenarios: list[Scenario]
    gamma: np.ndarray
    lam: np.ndarray
    seeds: list[int]
    restarts: int
    diagonal: bool
    im_mean: np.ndarray
    im_std: np.ndarray
    sap_mean: np.ndarray
    sap_std: np.ndarray
    im_score_mean: np.ndarray
    sap_score_mean: np.ndarray
    status_fractions: dict[str, np.ndarray]
    im_per_seed: np.ndarray = field(repr=False)
    sap_per_seed: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "configuration": list(self.configuration),
            "scenarios": [sc.to_dict() for sc in self.scenarios],
            "gamma": self.gamma.tolist(),
            "lam": self.lam.tolist(),
            "seeds": list(self.seeds),
            "restarts": self.restarts,
            "diagonal": self.diagonal,
            "im_mean": _json_array(self.im_mean),
            "im_std": _json_array(self.im_std),
            "sap_mean": _json_array(self.sap_mean),
            "sap_std": _json_array(self.sap_std),
            "im_score_mean": _json_array(self.im_score_mean),
            "sap_score_mean": _json_array(self.sap_score_mean),
            "status_fractions": {k: _json_array(v) for k, v in self.status_fractions.items()},
            "im_per_seed": _json_array(self.im_per_seed),
            "sap_per_seed": _json_array(self.sap_per_seed),
        }

    def format(self) -> str:
        """Plain-text (Markdown) table."""
        s, n, m = self.configuration
        enc = "diagonal (mean-field)" if self.diagonal else "full"
        lines = [
            f"(s, n, m) = ({s}, {n}, {m}), Σ_W {enc}, seeds {len(self.seeds)} × restarts {self.restarts}; "
            "success rate mean ± std over seeds",
            "",
            "| scenario | true grouping | γ | λ | I_m success | SAP success | I_m score | SAP score "
            "| conv / coll / div / max |",
            "|---|---|---|---|---|---|---|---|---|",
        ]

        def pm(mu: float, sd: float) -> str:
            return "n/a" if not np.isfinite(mu) else f"{mu:.2f} ± {sd:.2f}"

        def num(x: float) -> str:
            return "n/a" if not np.isfinite(x) else f"{x:.3f}"

        for a, sc in enumerate(self.scenarios):
            grouping = " ".join("{" + ",".join(map(str, gr)) + "}" for gr in sc.true_grouping)
            for i, gv in enumerate(self.gamma):
                for j, lv in enumerate(self.lam):
                    fr = "/".join(
                        f"{self.status_fractions[k][a, i, j]:.2f}"
                        for k in ("converged", "collapsed", "diverging", "max_iters")
                    )
                    lines.append(
                        f"| {sc.name} | {grouping} | {gv:g} | {lv:g}"
                        f" | {pm(self.im_mean[a, i, j], self.im_std[a, i, j])}"
                        f" | {pm(self.sap_mean[a, i, j], self.sap_std[a, i, j])}"
                        f" | {num(self.im_score_mean[a, i, j])}"
                        f" | {num(self.sap_score_mean[a, i, j])} | {fr} |"
                    )
        return "\n".join(lines)


def success_rates(
    configuration: str | Sequence[int] | Sequence[Scenario],
    gamma_grid: Sequence[float],
    lambda_grid: Sequence[float],
    seeds: Sequence[int] | int,
    *,
    restarts: int = 4,
    diagonal: bool = False,
    max_iters: int = 5000,
    tol: float = 1e-12,
    param_tol: float = 1e-9,
    sigma_w_floor: float = 1e-9,
    collapse_tol: float = 1e-10,
) -> SuccessTable:
    """Success rates of I_m and SAP for every scenario of a configuration on the γ × λ grid.

    ``configuration`` is ``"3,4,3"`` / ``(5, 5, 4)`` (the named scenarios) or a list of Scenarios sharing (s,
    n, m). ``seeds`` is a list of seeds or a count (seeds 0..count-1); each seed draws the random
    initialisations of all its restarts (``np.random.default_rng(seed)``, the same draws for every scenario).
    All scenarios × seeds × grid × restarts are solved in one batched run, and all their I_m tables in one
    batched evaluation.
    """
    if isinstance(configuration, (str, tuple)) and not (
        isinstance(configuration, tuple) and configuration and isinstance(configuration[0], Scenario)
    ):
        scenarios = named_scenarios(configuration)  # type: ignore[arg-type]
    else:
        scenarios = list(configuration)  # type: ignore[arg-type]
        if not scenarios or not all(isinstance(sc, Scenario) for sc in scenarios):
            raise ValueError("configuration: expected 's,n,m' or a non-empty list of Scenario objects")
        if len({(sc.s, sc.n, sc.m) for sc in scenarios}) != 1:
            raise ValueError("configuration: expected Scenarios sharing the same (s, n, m)")
    s, n, m = scenarios[0].s, scenarios[0].n, scenarios[0].m
    seed_list = (
        list(range(_check_int(seeds, "seeds"))) if isinstance(seeds, (int, np.integer)) else list(seeds)
    )
    if not seed_list:
        raise ValueError("seeds: expected at least one seed, got none")
    _check_solver_args(max_iters, tol, param_tol, restarts)
    g, lm = _grid(gamma_grid, "gamma_grid"), _grid(lambda_grid, "lambda_grid")
    nsc, nsd = len(scenarios), len(seed_list)
    shape = (nsc, nsd, g.size, lm.size, restarts)
    inits = [_random_init(np.random.default_rng(sd), shape[2:], m, n) for sd in seed_list]
    B0 = np.broadcast_to(np.stack([b for b, _ in inits]), shape + (m, n))
    W0 = np.broadcast_to(np.stack([w for _, w in inits]), shape + (m, m))
    Sy = np.stack([sc.sigma_y for sc in scenarios])
    N = int(np.prod(shape))
    idx = np.indices(shape).reshape(len(shape), N)
    out = _run(
        Sy[idx[0]],
        g[idx[2]],
        lm[idx[3]],
        B0.reshape(N, m, n).copy(),
        W0.reshape(N, m, m).copy(),
        diagonal=diagonal,
        max_iters=max_iters,
        tol=tol,
        param_tol=param_tol,
        sigma_w_floor=sigma_w_floor,
        collapse_tol=collapse_tol,
        record_history=False,
    )
    # The scenario axis is the outermost one, so per-scenario blocks are contiguous in the flat order.
    cov_flat = np.concatenate(
        [joint_covariance(sc, out.B[idx[0] == a], out.W[idx[0] == a]) for a, sc in enumerate(scenarios)]
    )
    table, assign = _im_tables(cov_flat, m, s)
    top = table.max(-1)
    true = np.stack([sc.true_labels for sc in scenarios])[idx[0]]
    # I_m success: the true partition strictly beats every other partition (a tie, e.g. a collapsed code
    # with an all-zero table, is a failure rather than whatever np.argmax picks first).
    in_true = np.stack([_same_partition(assign, sc.true_labels) for sc in scenarios])[idx[0]]  # (N, m**s)
    best_true = np.where(in_true, table, -np.inf).max(-1)
    best_other = np.where(in_true, -np.inf, table).max(-1)
    im_ok = best_true - best_other > _tie_tol(top)
    sap, sap_mat, sap_top = _sap_batch(cov_flat, m)
    srt = np.sort(sap_mat, axis=-2)
    sap_gap = srt[..., -1, :] - (srt[..., -2, :] if m > 1 else 0.0)
    sap_ok = _same_partition(sap_top, true) & np.all(sap_gap > 1e-12, axis=-1)
    # Collapsed codes carry no information (their I_m arg-max is decided by the factor penalty alone) and
    # diverging runs stop at an arbitrary point: neither counts towards the success rates.
    valid = ((out.status != _DIVERGING) & (out.status != _COLLAPSED)).reshape(shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        nvalid = valid.sum(-1)

        def rate(ok: np.ndarray) -> np.ndarray:
            return np.where(nvalid > 0, (ok.reshape(shape) & valid).sum(-1) / np.maximum(nvalid, 1), np.nan)

        im_seed, sap_seed = rate(im_ok), rate(sap_ok)  # (scenario, seed, G, L)

        def mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            cnt = np.sum(np.isfinite(x), axis=1)
            mu = np.where(cnt > 0, np.nansum(x, axis=1) / np.maximum(cnt, 1), np.nan)
            var = np.where(cnt > 0, np.nansum((x - mu[:, None]) ** 2, axis=1) / np.maximum(cnt, 1), np.nan)
            return mu, np.sqrt(var)

        def valid_mean(x: np.ndarray) -> np.ndarray:
            tot = valid.sum((1, 4))
            return np.where(
                tot > 0, np.where(valid, x.reshape(shape), 0).sum((1, 4)) / np.maximum(tot, 1), np.nan
            )

        im_mu, im_sd = mean_std(im_seed)
        sap_mu, sap_sd = mean_std(sap_seed)
        fractions = {
            name: (out.status.reshape(shape) == code).mean(axis=(1, 4)) for code, name in enumerate(STATUSES)
        }
        return SuccessTable(
            configuration=(s, n, m),
            scenarios=scenarios,
            gamma=g,
            lam=lm,
            seeds=[int(x) for x in seed_list],
            restarts=restarts,
            diagonal=diagonal,
            im_mean=im_mu,
            im_std=im_sd,
            sap_mean=sap_mu,
            sap_std=sap_sd,
            im_score_mean=valid_mean(top),
            sap_score_mean=valid_mean(sap),
            status_fractions=fractions,
            im_per_seed=im_seed,
            sap_per_seed=sap_seed,
        )
