"""Data models ``Y = ΓV + N(0, σ²I)`` of the study and the library's named scenarios (SPEC §6)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tangentlens.linear_gaussian._common import _check_cov, _check_int, _chol_logdet, _index_list, _sym
from tangentlens.linear_gaussian.metrics import _partition_from_labels

__all__ = ["CONFIGURATIONS", "Scenario", "named_scenarios", "parse_configuration"]

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


@dataclass(frozen=True, eq=False)
class Scenario:
    """One data model ``Y = ΓV + N(0, σ²I)`` with ``V`` from a linear dependency structure.

    ``factor_structure`` lists edges ``(child, parent, coef)`` meaning ``v_child = Σ coef·v_parent + z_child``
    with independent ``z_j ~ N(0, factor_noise[j])`` (default 1); the edges must form a DAG. The covariance is
    exact: ``Σ_V = T D Tᵀ`` with ``T = (I − L)⁻¹``. ``gamma_matrix`` is an (n, s) matrix of full column rank,
    or a sequence of s distinct row indices (Γ = those columns of the identity, as in SPEC §6). The true
    grouping of the factors is the set of connected components of the dependency graph.

    ``factor_covariance`` (s, s), when given, replaces the structural Σ_V (e.g. the sampled-and-rounded matrix
    of the Vu–Wei–Wan notebooks); the structure then only defines the true grouping.
    """

    s: int
    n: int
    m: int
    gamma_matrix: Any
    sigma2: float
    factor_structure: Sequence[tuple[int, int, float]] = ()
    name: str = ""
    factor_noise: Sequence[float] | None = None
    factor_covariance: Any = None

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
        if self.factor_covariance is not None:
            C = _check_cov(self.factor_covariance, "factor_covariance", size=s)
            if C.ndim != 2:
                raise ValueError(f"factor_covariance: expected one ({s}, {s}) matrix, got shape {C.shape}")
            _chol_logdet(C, "factor_covariance")
            C = C.copy()
            C.setflags(write=False)
            object.__setattr__(self, "factor_covariance", C)

    @property
    def sigma_v(self) -> np.ndarray:
        """Factor covariance Σ_V (s, s): exact from the structure, or ``factor_covariance`` when given."""
        if self.factor_covariance is not None:
            return self.factor_covariance.copy()
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
            "sigma_v_given": self.factor_covariance is not None,
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
