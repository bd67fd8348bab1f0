"""Accumulating metric objects for evaluation loops: ``update(codes, factors)`` per batch, ``compute()`` once.

When torchmetrics is importable the classes are ``torchmetrics.Metric`` subclasses (state lists concatenated
across processes, ``reset``/``forward`` semantics of torchmetrics); otherwise a plain base with the same
``update`` / ``compute`` / ``reset`` interface keeps the batches as numpy arrays. The metrics themselves are
the functions of :mod:`tangentlens.metrics.functional`; metrics that need a held-out split (SAP discrete,
DCI, explicitness) split the accumulated rows with a seeded permutation (``test_fraction``, default 1/3 =
the reference's 5 000 of 15 000).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from tangentlens.metrics import functional as F
from tangentlens.metrics._discretize import as_array, check_same_rows

__all__ = [
    "DCI",
    "IRS",
    "MIG",
    "SAP",
    "Explicitness",
    "Modularity",
    "UnsupervisedScores",
    "HAVE_TORCHMETRICS",
]

HAVE_TORCHMETRICS: bool = importlib.util.find_spec("torchmetrics") is not None


class _NumpyAccumulator:
    """Plain base: keeps the batches, concatenates them at ``compute``."""

    def __init__(self) -> None:
        self._codes: list[np.ndarray] = []
        self._factors: list[np.ndarray] = []

    def _store(self, codes: np.ndarray, factors: np.ndarray | None) -> None:
        self._codes.append(codes)
        if factors is not None:
            self._factors.append(factors)

    def _columns(self) -> tuple[int, int | None] | None:
        """(code columns, factor columns) of the first stored batch, None before any."""
        if not self._codes:
            return None
        return self._codes[0].shape[1], (self._factors[0].shape[1] if self._factors else None)

    def _gathered(self) -> tuple[np.ndarray, np.ndarray | None]:
        if not self._codes:
            raise RuntimeError(f"{type(self).__name__}.compute() called before any update()")
        codes = np.concatenate(self._codes, axis=0)
        factors = np.concatenate(self._factors, axis=0) if self._factors else None
        return codes, factors

    def reset(self) -> None:
        """Forgets every accumulated batch."""
        self._codes.clear()
        self._factors.clear()

    def __call__(self, codes: Any, factors: Any = None) -> None:
        self.update(codes, factors)


if HAVE_TORCHMETRICS:  # pragma: no cover - torchmetrics is not installed in CI
    import torch
    import torchmetrics
    from torchmetrics.utilities import dim_zero_cat

    class _Base(torchmetrics.Metric):
        full_state_update = False
        higher_is_better = None
        is_differentiable = False

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.add_state("codes", default=[], dist_reduce_fx="cat")
            self.add_state("factors", default=[], dist_reduce_fx="cat")

        def _store(self, codes: np.ndarray, factors: np.ndarray | None) -> None:
            self.codes.append(torch.from_numpy(codes))
            if factors is not None:
                self.factors.append(torch.from_numpy(factors))

        def _columns(self) -> tuple[int, int | None] | None:
            if len(self.codes) == 0:
                return None
            return self.codes[0].shape[1], (self.factors[0].shape[1] if len(self.factors) else None)

        def _gathered(self) -> tuple[np.ndarray, np.ndarray | None]:
            if len(self.codes) == 0:
                raise RuntimeError(f"{type(self).__name__}.compute() called before any update()")
            codes = dim_zero_cat(self.codes).double().cpu().numpy()
            factors = dim_zero_cat(self.factors).double().cpu().numpy() if len(self.factors) else None
            return codes, factors

else:

    class _Base(_NumpyAccumulator):  # type: ignore[no-redef]
        def __init__(self, **kwargs: Any) -> None:
            if kwargs:
                raise TypeError(f"unexpected arguments {sorted(kwargs)} (torchmetrics is not installed)")
            super().__init__()


class _Supervised(_Base):
    _needs_factors = True

    def update(self, codes: Any, factors: Any = None) -> None:  # type: ignore[override]
        """Adds a batch: ``codes [B, C]`` and (for the supervised metrics) ``factors [B, F]``."""
        c = as_array(codes, "codes", min_rows=1)
        f = None
        if self._needs_factors:
            if factors is None:
                raise ValueError(f"{type(self).__name__}.update needs factors [B, F]; got None")
            f = as_array(factors, "factors", min_rows=1)
            check_same_rows(c, "codes", f, "factors")
        first = self._columns()
        if first is not None:  # every batch has the columns of the first (found here, not at compute)
            for name, x, cols in (("codes", c, first[0]), ("factors", f, first[1])):
                if x is not None and cols is not None and x.shape[1] != cols:
                    raise ValueError(
                        f"{type(self).__name__}.update: {name} has {x.shape[1]} columns, the earlier batches "
                        f"{cols}; every batch needs the same {name} columns (reset() to start over)"
                    )
        self._store(c, f)

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        codes, factors = self._gathered()
        assert factors is not None
        return codes, factors

    def _split(self, test_fraction: float, random_state: int) -> tuple[np.ndarray, ...]:
        codes, factors = self._arrays()
        n = codes.shape[0]
        n_test = int(round(n * test_fraction))
        if n_test < 2 or n - n_test < 2:
            raise ValueError(
                f"{type(self).__name__}: {n} accumulated rows are too few for test_fraction={test_fraction}"
            )
        perm = np.random.RandomState(random_state).permutation(n)
        tr, te = perm[n_test:], perm[:n_test]
        return codes[tr], factors[tr], codes[te], factors[te]


def _check_fraction(test_fraction: float) -> float:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction!r}")
    return float(test_fraction)


class MIG(_Supervised):
    """Accumulating :func:`~tangentlens.metrics.mig`."""

    def __init__(self, num_bins: int = 20, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_bins = num_bins

    def compute(self) -> float:
        return F.mig(*self._arrays(), num_bins=self.num_bins)


class Modularity(_Supervised):
    """Accumulating :func:`~tangentlens.metrics.modularity`."""

    def __init__(self, num_bins: int = 20, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_bins = num_bins

    def compute(self) -> float:
        return F.modularity(*self._arrays(), num_bins=self.num_bins)


class IRS(_Supervised):
    """Accumulating :func:`~tangentlens.metrics.irs`."""

    def __init__(self, diff_quantile: float = 0.99, num_bins: int = 20, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.diff_quantile = diff_quantile
        self.num_bins = num_bins

    def compute(self) -> float:
        return F.irs(*self._arrays(), diff_quantile=self.diff_quantile, num_bins=self.num_bins)


class SAP(_Supervised):
    """Accumulating :func:`~tangentlens.metrics.sap`; the discrete variant holds out ``test_fraction``."""

    def __init__(
        self,
        continuous_factors: bool = False,
        test_fraction: float = 1 / 3,
        random_state: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.continuous_factors = continuous_factors
        self.test_fraction = _check_fraction(test_fraction)
        self.random_state = random_state

    def compute(self) -> float:
        if self.continuous_factors:
            return F.sap(*self._arrays(), continuous_factors=True)
        return F.sap(*self._split(self.test_fraction, self.random_state))


class DCI(_Supervised):
    """Accumulating :func:`~tangentlens.metrics.dci` (held-out ``test_fraction`` of the rows)."""

    def __init__(
        self, test_fraction: float = 1 / 3, random_state: int = 0, n_jobs: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.test_fraction = _check_fraction(test_fraction)
        self.random_state = random_state
        self.n_jobs = n_jobs

    def compute(self) -> F.DCIResult:
        return F.dci(
            *self._split(self.test_fraction, self.random_state),
            random_state=self.random_state,
            n_jobs=self.n_jobs,
        )


class Explicitness(_Supervised):
    """Accumulating :func:`~tangentlens.metrics.explicitness` (held-out ``test_fraction`` of the rows)."""

    def __init__(self, test_fraction: float = 1 / 3, random_state: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.test_fraction = _check_fraction(test_fraction)
        self.random_state = random_state

    def compute(self) -> F.ExplicitnessResult:
        return F.explicitness(*self._split(self.test_fraction, self.random_state))


class UnsupervisedScores(_Supervised):
    """Accumulating :func:`~tangentlens.metrics.unsupervised_scores`; ``update(codes)`` (factors ignored)."""

    _needs_factors = False

    def __init__(self, num_bins: int = 20, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_bins = num_bins

    def compute(self) -> dict[str, float]:
        codes, _ = self._gathered()
        return F.unsupervised_scores(codes, num_bins=self.num_bins)
