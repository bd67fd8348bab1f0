"""Gaussian information quantities from log-determinants of a covariance (SPEC §6)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tangentlens.linear_gaussian._common import _check_cov, _index_list, _sub_logdet

__all__ = ["gaussian_cmi", "gaussian_mi", "total_correlation"]


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
