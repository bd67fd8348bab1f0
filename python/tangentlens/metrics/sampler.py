"""Ground-truth data protocol for the sampler-based metrics, and a small synthetic implementation.

The protocol mirrors disentanglement_lib's ground-truth data interface so that a dataset wrapper written
for it works here: factors are integer indices ``0..factors_num_values[j]-1``; all randomness comes from the
``np.random.RandomState`` passed in, which makes every metric reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "GroundTruthSampler",
    "RandomStateLike",
    "SyntheticSampler",
    "as_random_state",
    "sample_codes_and_factors",
]

RandomStateLike = int | np.random.RandomState


def as_random_state(random_state: RandomStateLike) -> np.random.RandomState:
    """An int seeds a fresh ``np.random.RandomState``; a RandomState is used (and advanced) as is."""
    if isinstance(random_state, np.random.RandomState):
        return random_state
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        return np.random.RandomState(int(random_state))
    raise TypeError(
        f"random_state must be an int seed or np.random.RandomState; got {type(random_state).__name__}"
    )


@runtime_checkable
class GroundTruthSampler(Protocol):
    """What the sampler-based metrics need from a dataset with known factors of variation."""

    @property
    def num_factors(self) -> int:
        """Number of ground-truth factors F."""
        ...

    @property
    def factors_num_values(self) -> Sequence[int]:
        """Number of values of each factor."""
        ...

    def sample_factors(self, num: int, random_state: np.random.RandomState) -> np.ndarray:
        """``num`` factor draws, an int array ``[num, F]``."""
        ...

    def sample_observations_from_factors(
        self, factors: np.ndarray, random_state: np.random.RandomState
    ) -> Any:
        """Observations (whatever the representation function takes) for the given factors, one per row."""
        ...


class SyntheticSampler:
    """Factors on a grid, observations ``x = mix(normalised factors) + noise``.

    Factor ``j`` is uniform on ``0..factors_num_values[j]-1``; it is scaled to ``[-1, 1]`` before ``mix``
    (default: identity, so ``x`` has F columns). ``noise_std`` adds Gaussian observation noise drawn from the
    RandomState passed in. Used by the tests and the bench; handy as a template for real datasets.
    """

    def __init__(
        self,
        factors_num_values: Sequence[int],
        mix: Callable[[np.ndarray], np.ndarray] | np.ndarray | None = None,
        noise_std: float = 0.0,
    ) -> None:
        sizes = [int(v) for v in factors_num_values]
        if not sizes or min(sizes) < 1:
            raise ValueError(
                f"factors_num_values must be non-empty positive ints; got {factors_num_values!r}"
            )
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0; got {noise_std}")
        self._sizes = sizes
        self._mix = mix
        self.noise_std = float(noise_std)

    @property
    def num_factors(self) -> int:
        return len(self._sizes)

    @property
    def factors_num_values(self) -> list[int]:
        return list(self._sizes)

    def sample_factors(self, num: int, random_state: np.random.RandomState) -> np.ndarray:
        out = np.zeros((num, self.num_factors), dtype=np.int64)
        for j, n in enumerate(self._sizes):
            out[:, j] = random_state.randint(n, size=num)
        return out

    def normalised(self, factors: np.ndarray) -> np.ndarray:
        """Factors scaled to [-1, 1] (a single-valued factor maps to 0)."""
        scale = np.maximum(np.asarray(self._sizes, dtype=np.float64) - 1.0, 1.0)
        return 2.0 * np.asarray(factors, dtype=np.float64) / scale - 1.0 * (np.asarray(self._sizes) > 1)

    def sample_observations_from_factors(
        self, factors: np.ndarray, random_state: np.random.RandomState
    ) -> np.ndarray:
        z = self.normalised(factors)
        if self._mix is None:
            x = z
        elif callable(self._mix):
            x = np.asarray(self._mix(z), dtype=np.float64)
        else:
            x = z @ np.asarray(self._mix, dtype=np.float64).T
        if self.noise_std > 0:
            x = x + self.noise_std * random_state.randn(*x.shape)
        return x


def sample_codes_and_factors(
    sampler: GroundTruthSampler,
    representation_function: Callable[[Any], Any],
    num_points: int,
    random_state: RandomStateLike = 0,
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Draws ``num_points`` (codes ``[N, C]``, factors ``[N, F]``) in batches, in disentanglement_lib's order
    (sample factors, then observations, per batch of ``batch_size``), for the array metrics.

    For the train/test metrics draw the training set first and then the test set from the same RandomState,
    as the reference does::

        rs = np.random.RandomState(0)
        codes, factors = sample_codes_and_factors(sampler, rep, 10_000, rs)
        codes_test, factors_test = sample_codes_and_factors(sampler, rep, 5_000, rs)
    """
    from tangentlens.metrics._discretize import as_array

    if not isinstance(num_points, (int, np.integer)) or num_points < 1:
        raise ValueError(f"num_points must be a positive integer; got {num_points!r}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    rs = as_random_state(random_state)
    codes, factors = [], []
    for s in range(0, num_points, batch_size):
        f = sampler.sample_factors(min(batch_size, num_points - s), rs)
        obs = sampler.sample_observations_from_factors(f, rs)
        codes.append(as_array(representation_function(obs), "representation_function output", min_rows=1))
        factors.append(np.asarray(f))
    return np.concatenate(codes, axis=0), np.concatenate(factors, axis=0)
