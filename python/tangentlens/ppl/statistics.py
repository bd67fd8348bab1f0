"""PPL statistics: the peers' percentile trimming, the trimmed mean with its winsorised standard
error, and the bootstrap CI with the trimming re-applied in every replicate."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

Percentile = tuple[float, Literal["lower", "higher", "linear", "nearest", "midpoint"]]

# ---- statistics -----------------------------------------------------------------------------------------


def _check_percentile(p: object, name: str) -> Percentile:
    methods = ("lower", "higher", "linear", "nearest", "midpoint")
    if (
        not isinstance(p, (tuple, list))
        or len(p) != 2
        or not isinstance(p[0], (int, float))
        or not 0 <= float(p[0]) <= 100
        or p[1] not in methods
    ):
        raise ValueError(f"{name}: expected (percent in [0, 100], one of {methods}), got {p!r}")
    return (float(p[0]), p[1])  # type: ignore[return-value]


def trim(
    distances: np.ndarray | torch.Tensor,
    lower: Percentile | None = (1.0, "lower"),
    upper: Percentile | None = (99.0, "higher"),
) -> tuple[np.ndarray, float, float]:
    """``(kept mask, lo, hi)``: samples with ``lo <= d <= hi`` (inclusive), lo/hi the percentiles computed
    with the given numpy method (NumPy >= 2.4 removed the ``interpolation=`` spelling the peers use)."""
    d = np.asarray(distances.cpu() if isinstance(distances, torch.Tensor) else distances, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"distances: expected a non-empty 1-d array, got shape {d.shape}")
    lo = float(np.percentile(d, lower[0], method=lower[1])) if lower is not None else -math.inf
    hi = float(np.percentile(d, upper[0], method=upper[1])) if upper is not None else math.inf
    return (d >= lo) & (d <= hi), lo, hi


def trimmed_stats(
    distances: np.ndarray | torch.Tensor,
    lower: Percentile | None = (1.0, "lower"),
    upper: Percentile | None = (99.0, "higher"),
) -> dict[str, float]:
    """Trimmed mean, std of the kept samples (ddof = 1) and the trimmed mean's standard error from the
    winsorised variance (Tukey-McLaughlin: ``s_w / ((1 - g) sqrt(n))``, g = the trimmed fraction)."""
    d = np.asarray(distances.cpu() if isinstance(distances, torch.Tensor) else distances, dtype=np.float64)
    kept, lo, hi = trim(d, lower, upper)
    x = d[kept]
    n = d.size
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else math.nan
    if n > 1:
        w = np.clip(d, x.min(), x.max())
        frac = x.size / n
        sem = float(w.std(ddof=1) / (frac * math.sqrt(n)))
    else:
        sem = math.nan
    return {"mean": mean, "std": std, "sem": sem, "lo": lo, "hi": hi, "num_kept": int(x.size)}


def bootstrap_ci(
    distances: np.ndarray | torch.Tensor,
    lower: Percentile | None = (1.0, "lower"),
    upper: Percentile | None = (99.0, "higher"),
    *,
    replicates: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the trimmed mean, the trimming re-applied in every replicate.

    Works on the sorted sample with multinomial counts (each replicate O(n), no re-sort): the replicate's
    order statistics come from the cumulative counts, its kept range is contiguous in the sorted order."""
    d = np.sort(np.asarray(distances.cpu() if isinstance(distances, torch.Tensor) else distances, np.float64))
    n = d.size
    if n < 2:
        return (math.nan, math.nan)
    if not 0 < level < 1:
        raise ValueError(f"level: expected a value in (0, 1), got {level!r}")
    rng = np.random.default_rng(seed)
    means = np.empty(replicates)

    def order_stat(cum: np.ndarray, q: float, method: str) -> float:
        pos = q / 100.0 * (n - 1)
        lo_i, hi_i = math.floor(pos), math.ceil(pos)
        v_lo = d[np.searchsorted(cum, lo_i, side="right")]
        v_hi = d[np.searchsorted(cum, hi_i, side="right")]
        if method == "lower":
            return v_lo
        if method == "higher":
            return v_hi
        if method == "nearest":
            return v_lo if pos - lo_i < 0.5 or (pos - lo_i == 0.5 and lo_i % 2 == 0) else v_hi
        if method == "midpoint":
            return 0.5 * (v_lo + v_hi)
        return v_lo + (pos - lo_i) * (v_hi - v_lo)

    for r in range(replicates):
        counts = np.bincount(rng.integers(0, n, n), minlength=n)
        cum = np.cumsum(counts)
        lo = order_stat(cum, lower[0], lower[1]) if lower is not None else -math.inf
        hi = order_stat(cum, upper[0], upper[1]) if upper is not None else math.inf
        a, b = np.searchsorted(d, lo, side="left"), np.searchsorted(d, hi, side="right")
        c = counts[a:b]
        means[r] = float(np.dot(c, d[a:b]) / c.sum())
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))
