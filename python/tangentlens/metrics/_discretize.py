"""Input validation, histogram discretisation and the vectorised plug-in mutual information.

Everything here works on whole ``[N, C]`` / ``[N, F]`` arrays at once: the discretisation of all codes is one
pass, and the joint counts of every (code, factor) pair come from a single ``np.bincount`` over combined
indices, so there is no Python loop over code x factor pairs.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import numpy as np

__all__ = [
    "ContinuousFactorsWarning",
    "as_array",
    "check_discrete_factors",
    "encode_labels",
    "histogram_discretize",
    "mutual_info_matrix",
    "discrete_entropy",
]

# Rows of the combined-index array per bincount call: bounds the temporary memory to ~32 MiB of int64.
_BINCOUNT_BLOCK = 1 << 22


def as_array(x: Any, name: str, *, ndim: int = 2, min_rows: int = 2) -> np.ndarray:
    """Converts a numpy array / torch tensor / nested sequence to a finite float64 array, or raises.

    The error names the argument, the expectation and what came, so a caller sees e.g.
    ``codes must be a 2-D array [N, C]; got shape (10,)``.
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", dtype=torch.float64).numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{name} must be a numeric array (numpy array or torch tensor); got {type(x).__name__}"
        ) from exc
    if arr.ndim != ndim:
        shape = "[N, C]" if ndim == 2 else "[N]"
        raise ValueError(f"{name} must be a {ndim}-D array {shape}; got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name} must have at least {min_rows} rows (samples); got {arr.shape[0]}")
    if ndim == 2 and arr.shape[1] < 1:
        raise ValueError(f"{name} must have at least one column; got shape {arr.shape}")
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        kind = "NaN" if np.isnan(arr[tuple(bad)]) else "inf"
        raise ValueError(f"{name} must be finite; got {kind} at index {tuple(int(b) for b in bad)}")
    return arr


def check_same_rows(a: np.ndarray, a_name: str, b: np.ndarray, b_name: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{a_name} and {b_name} must have the same number of rows (samples); "
            f"got {a.shape[0]} and {b.shape[0]}"
        )


class ContinuousFactorsWarning(UserWarning):
    """Factor values that look continuous given to a metric that takes them as discrete labels."""


def check_discrete_factors(f: np.ndarray, metric: str, alternative: str = "") -> None:
    """Warn once per call when a factor column looks continuous (more than half the rows, and more than 20,
    hold distinct values): the metric takes each distinct value as its own class."""
    n = f.shape[0]
    for j in range(f.shape[1]):
        k = np.unique(f[:, j]).size
        if k > max(n / 2, 20):
            warnings.warn(
                f"{metric}: factors column {j} has {k} distinct values in {n} samples: these look "
                f"continuous, but {metric} takes factor values as discrete labels (each distinct value its "
                "own class), so the score would not mean what it says. Discretise them first, e.g. "
                f"tangentlens.metrics.histogram_discretize(factors, 20){alternative}",
                ContinuousFactorsWarning,
                stacklevel=3,
            )
            return


def check_same_cols(a: np.ndarray, a_name: str, b: np.ndarray, b_name: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{a_name} and {b_name} must have the same number of columns; got {a.shape[1]} and {b.shape[1]}"
        )


def encode_labels(*arrays: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Maps every column's values to dense labels ``0..K_j-1`` (sorted, as sklearn orders classes).

    Several arrays with the same columns (train and test factors) are encoded jointly so that equal values
    get equal labels. Returns the encoded arrays (int64, same shapes) and ``K`` per column.
    """
    cols = arrays[0].shape[1]
    splits = np.cumsum([a.shape[0] for a in arrays])[:-1]
    stacked = np.concatenate(arrays, axis=0)
    out = np.empty(stacked.shape, dtype=np.int64)
    sizes = np.empty(cols, dtype=np.int64)
    for j in range(cols):  # one np.unique per column (per factor, not per pair)
        values, inverse = np.unique(stacked[:, j], return_inverse=True)
        out[:, j] = inverse.reshape(-1)
        sizes[j] = values.size
    return list(np.split(out, splits, axis=0)), sizes


def histogram_discretize(x: Any, num_bins: int = 20) -> np.ndarray:
    """Discretises every column into ``num_bins`` equal-width bins; labels ``1..num_bins`` (int64).

    The same labels as ``np.digitize(col, np.histogram(col, num_bins)[1][:-1])`` per column (the
    disentanglement_lib histogram discretiser), computed for all columns at once. A constant column has
    zero width; ``np.histogram`` widens it to ``[v - 0.5, v + 0.5]``, so all its values land in one bin
    (label ``num_bins // 2 + 1``) and any mutual information with it is 0.
    """
    arr = as_array(x, "x", min_rows=1)
    if not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive integer; got {num_bins!r}")
    return _discretize(arr, int(num_bins))


def _discretize(arr: np.ndarray, num_bins: int) -> np.ndarray:
    lo = arr.min(axis=0)
    hi = arr.max(axis=0)
    same = lo == hi
    lo = np.where(same, lo - 0.5, lo)
    hi = np.where(same, hi + 0.5, hi)
    # np.linspace with array endpoints does the same element-wise arithmetic as np.histogram's edges.
    edges = np.linspace(lo, hi, num_bins + 1, axis=0)  # [num_bins + 1, C]
    width = (hi - lo) / num_bins
    # First guess from the bin width, then exact correction against the true edges (at most one step
    # either way, as floating-point rounding moves a value by one bin at most).
    k = np.floor((arr - lo) / width).astype(np.int64)
    np.clip(k, 0, num_bins - 1, out=k)
    cols = np.arange(arr.shape[1])
    for _ in range(3):
        below = arr < edges[k, cols]
        k -= below
        above = (k < num_bins - 1) & (arr >= edges[np.minimum(k + 1, num_bins), cols])
        k += above
        if not (below.any() or above.any()):
            break
    return k + 1


def _joint_counts(
    a: np.ndarray, a_sizes: np.ndarray, b: np.ndarray, b_sizes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Joint counts of every column pair (i of ``a``, j of ``b``) from one bincount over combined indices.

    The table of pair (i, j) is a ``a_sizes[i] x b_sizes[j]`` block; blocks are laid out back to back.
    Returns the flat counts and the block offsets ``[Ca, Cb]``.
    """
    n, ca = a.shape
    cb = b.shape[1]
    block = np.outer(a_sizes, b_sizes).reshape(-1)  # [Ca * Cb]
    offsets = np.concatenate([[0], np.cumsum(block)[:-1]]).reshape(ca, cb)
    total = int(block.sum())
    counts = np.zeros(total, dtype=np.int64)
    step = max(1, _BINCOUNT_BLOCK // (ca * cb))
    for s in range(0, n, step):
        aa = a[s : s + step]
        bb = b[s : s + step]
        idx = offsets[None] + aa[:, :, None] * b_sizes[None, None, :] + bb[:, None, :]
        counts += np.bincount(idx.reshape(-1), minlength=total)
    return counts, offsets


def _mi_from_labels(a: np.ndarray, a_sizes: np.ndarray, b: np.ndarray, b_sizes: np.ndarray) -> np.ndarray:
    """Plug-in MI (nats) of every column pair ``[Ca, Cb]``, in sklearn's ``mutual_info_score`` arithmetic."""
    n, ca = a.shape
    cb = b.shape[1]
    counts, offsets = _joint_counts(a, a_sizes, b, b_sizes)
    nz = np.flatnonzero(counts)
    c = counts[nz].astype(np.float64)
    # Decode (pair, row-label, column-label) of every occupied cell.
    flat_off = offsets.reshape(-1)
    pair = np.searchsorted(flat_off, nz, side="right") - 1
    i, j = np.divmod(pair, cb)
    rem = nz - flat_off[pair]
    la, lb = np.divmod(rem, b_sizes[j])
    # Marginal counts of each column's labels.
    a_off = np.concatenate([[0], np.cumsum(a_sizes)[:-1]])
    b_off = np.concatenate([[0], np.cumsum(b_sizes)[:-1]])
    a_marg = np.bincount((a + a_off).reshape(-1), minlength=int(a_sizes.sum())).astype(np.float64)
    b_marg = np.bincount((b + b_off).reshape(-1), minlength=int(b_sizes.sum())).astype(np.float64)
    log_n = np.log(n)
    p = c / n
    outer = a_marg[a_off[i] + la] * b_marg[b_off[j] + lb]
    terms = p * (np.log(c) - log_n) + p * (-np.log(outer) + 2.0 * log_n)
    terms[np.abs(terms) < np.finfo(np.float64).eps] = 0.0  # as sklearn: drop round-off terms
    mi = np.bincount(pair, weights=terms, minlength=ca * cb).reshape(ca, cb)
    # A column with a single occupied label carries no information: exactly 0 (sklearn returns 0.0 too).
    a_used = (a_marg > 0).astype(np.int64)
    b_used = (b_marg > 0).astype(np.int64)
    a_single = np.add.reduceat(a_used, a_off) == 1
    b_single = np.add.reduceat(b_used, b_off) == 1
    mi[a_single, :] = 0.0
    mi[:, b_single] = 0.0
    return np.clip(mi, 0.0, None)


def mutual_info_matrix(codes: Any, factors: Any, *, num_bins: int = 20) -> np.ndarray:
    """Plug-in mutual information (nats) between every discretised code and every factor, ``[C, F]``.

    Codes are discretised with :func:`histogram_discretize`; factor values are used as discrete labels.
    Entry ``[i, j]`` equals ``sklearn.metrics.mutual_info_score(factors[:, j], discretized[:, i])``.
    """
    c = as_array(codes, "codes")
    f = as_array(factors, "factors")
    check_same_rows(c, "codes", f, "factors")
    return _mi_codes_factors(c, f, num_bins)


def _mi_codes_factors(c: np.ndarray, f: np.ndarray, num_bins: int) -> np.ndarray:
    d = _discretize(c, num_bins) - 1
    (fl,), f_sizes = encode_labels(f)
    return _mi_from_labels(d, np.full(c.shape[1], num_bins, dtype=np.int64), fl, f_sizes)


def discrete_entropy(factors: Any) -> np.ndarray:
    """Plug-in entropy (nats) of each column's values, ``[F]`` (``mutual_info_score(y, y)`` per column)."""
    f = as_array(factors, "factors")
    return _entropy(f)


def _entropy(f: np.ndarray) -> np.ndarray:
    (fl,), sizes = encode_labels(f)
    n = f.shape[0]
    off = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    counts = np.bincount((fl + off).reshape(-1), minlength=int(sizes.sum())).astype(np.float64)
    col = np.repeat(np.arange(f.shape[1]), sizes)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(counts > 0, counts / n * (np.log(n) - np.log(counts)), 0.0)
    terms[np.abs(terms) < np.finfo(np.float64).eps] = 0.0
    return np.bincount(col, weights=terms, minlength=f.shape[1])
