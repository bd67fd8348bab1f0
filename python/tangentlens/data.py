"""Procedural dSprites: 64×64 single-channel sprites from five ground-truth factors, rendered in numpy.

The factor grid is the one of the original dSprites dataset (Matthey et al. 2017), without its constant
colour factor: ``shape`` (square, ellipse, heart), ``scale`` (6 values, linspace(0.5, 1)), ``orientation``
(40 values ``2πk/40``, i.e. over [0, 2π) — the original includes both 0 and 2π), ``posX`` and ``posY``
(32 values each, linspace(0, 1)): 3·6·40·32·32 = 737 280 combinations. Flat indices enumerate the grid in
C order over that factor order, as the original file does.

Images are anti-aliased: every shape is a signed-distance function (in pixels) and a pixel's intensity is
``clip(0.5 - d, 0, 1)``, the exact box-filter coverage of a straight edge, so edge pixels take intermediate
grey levels. Values are in [0, 1] (ink = 1), float32, NCHW ``[N, 1, 64, 64]``. Rendering is vectorised
over the batch and evaluates only a 28×28 window around each sprite (10 000 images in ~0.35 s on one core,
once the process's memory is warm), and it is deterministic: the same factors give the same bytes.

Geometry (pixel units, rows downwards): a sprite fits in a disc of radius ``12 * scale`` around its centre;
the centre is at column ``13 + 38 posX`` and row ``13 + 38 posY`` (``posY`` moves the sprite down), so every
sprite stays inside the frame. Orientation turns the sprite counter-clockwise as displayed; at orientation 0
the heart points down and the ellipse's long axis is horizontal.

``DSpritesSampler`` implements :class:`tangentlens.metrics.GroundTruthSampler` (it draws factors exactly as
disentanglement_lib's dSprites does, so the sampler-based metrics consume the RandomState the same way);
``DSpritesBatches`` is a seeded, re-iterable stream of training batches and ``DSpritesDataset`` a map-style
dataset over the whole grid.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = [
    "FACTOR_NAMES",
    "IMAGE_SIZE",
    "NUM_COMBINATIONS",
    "NUM_VALUES",
    "SHAPES",
    "DSpritesBatches",
    "DSpritesDataset",
    "DSpritesSampler",
    "dsprites",
    "factor_values",
    "factors_to_index",
    "factors_to_values",
    "index_to_factors",
    "render",
]

FACTOR_NAMES: tuple[str, ...] = ("shape", "scale", "orientation", "posX", "posY")
NUM_VALUES: tuple[int, ...] = (3, 6, 40, 32, 32)
SHAPES: tuple[str, ...] = ("square", "ellipse", "heart")
IMAGE_SIZE = 64
NUM_COMBINATIONS = int(np.prod(NUM_VALUES))

_RADIUS = 12.0  # sprite radius in pixels at scale 1
_CENTRE_MIN, _CENTRE_SPAN = 13.0, 38.0  # centres in [13, 51]: radius 12 + 0.5 px of anti-aliasing fits
_WIN = 28  # window side: covers centre ± 12.5 px for any sub-pixel centre
_ELLIPSE_AXES = (1.0, 0.5)
_HEART_FIT = 0.631  # iq's heart (tip at the origin, height 1.10) scaled and shifted into the unit disc
_HEART_SHIFT = 0.63
_CHUNK = 2048  # images per vectorised block: bounds the temporaries to a few tens of MB


def factor_values() -> dict[str, np.ndarray]:
    """The grid values of each factor (shape as 0, 1, 2; orientation in radians; positions in [0, 1])."""
    return {
        "shape": np.arange(3, dtype=np.float64),
        "scale": np.linspace(0.5, 1.0, 6),
        "orientation": np.arange(40, dtype=np.float64) * (2.0 * math.pi / 40.0),
        "posX": np.linspace(0.0, 1.0, 32),
        "posY": np.linspace(0.0, 1.0, 32),
    }


_VALUES = factor_values()


def _check_factors(factors: Any, name: str = "factors") -> np.ndarray:
    if isinstance(factors, torch.Tensor):
        factors = factors.detach().cpu().numpy()
    f = np.asarray(factors)
    if f.ndim == 1 and f.shape[0] == len(NUM_VALUES):
        f = f[None]
    if f.ndim != 2 or f.shape[1] != len(NUM_VALUES):
        raise ValueError(f"{name}: expected an integer array [N, {len(NUM_VALUES)}], got shape {f.shape}")
    if not np.issubdtype(f.dtype, np.integer):
        if not (np.issubdtype(f.dtype, np.floating) and np.all(f == np.round(f))):
            raise ValueError(f"{name}: expected integer factor indices, got dtype {f.dtype} with fractions")
    f = f.astype(np.int64)
    bad = (f < 0) | (f >= np.asarray(NUM_VALUES))
    if bad.any():
        n, j = map(int, np.argwhere(bad)[0])
        raise ValueError(
            f"{name}[{n}, {j}] ({FACTOR_NAMES[j]}): expected an index in 0..{NUM_VALUES[j] - 1}, "
            f"got {int(f[n, j])}"
        )
    return f


def factors_to_values(factors: Any) -> np.ndarray:
    """Factor indices ``[N, 5]`` -> factor values ``[N, 5]`` float64 (see :func:`factor_values`)."""
    f = _check_factors(factors)
    return np.stack([_VALUES[name][f[:, j]] for j, name in enumerate(FACTOR_NAMES)], axis=1)


def factors_to_index(factors: Any) -> np.ndarray:
    """Factor indices ``[N, 5]`` -> flat grid indices ``[N]`` (C order over FACTOR_NAMES)."""
    f = _check_factors(factors)
    return np.ravel_multi_index(tuple(f.T), NUM_VALUES).astype(np.int64)


def index_to_factors(index: Any) -> np.ndarray:
    """Flat grid indices ``[N]`` (or a scalar) -> factor indices ``[N, 5]`` int64."""
    idx = np.atleast_1d(np.asarray(index))
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"index: expected integers of rank <= 1, got dtype {idx.dtype}, shape {idx.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= NUM_COMBINATIONS):
        raise ValueError(f"index: expected values in 0..{NUM_COMBINATIONS - 1}, got {idx.min()}..{idx.max()}")
    return np.stack(np.unravel_index(idx, NUM_VALUES), axis=1).astype(np.int64)


# ------------------------------------------------------------------------------------------ signed distances
# Each takes the sample points in the sprite's unit frame (y up, sprite inside the unit disc) and returns the
# signed distance in the same units (negative inside).
def _sd_square(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    b = np.float32(1.0 / math.sqrt(2.0))  # corners on the unit circle
    qx, qy = np.abs(x) - b, np.abs(y) - b
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0)


def _sd_ellipse(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # First-order distance f/|∇f| (exact on the boundary, which is all the anti-aliasing needs).
    a, b = _ELLIPSE_AXES
    k0 = np.hypot(x / a, y / b)
    k1 = np.hypot(x / (a * a), y / (b * b))
    safe = np.maximum(k1, np.float32(1e-6))
    # At the exact centre k0 = k1 = 0 and the formula is 0/0; the centre is deep inside.
    return np.where(k1 > 1e-6, k0 * (k0 - 1) / safe, np.float32(-min(a, b)))


def _sd_heart(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # Inigo Quilez's exact heart SDF (tip at the origin, pointing down), fitted into the unit disc.
    s = np.float32(_HEART_FIT)
    px = np.abs(x) * s
    py = y * s + np.float32(_HEART_SHIFT)
    lobe = np.hypot(px - 0.25, py - 0.75) - np.float32(math.sqrt(2.0) / 4.0)
    t = 0.5 * np.maximum(px + py, 0)
    body = np.sqrt(np.minimum(px**2 + (py - 1) ** 2, (px - t) ** 2 + (py - t) ** 2)) * np.sign(px - py)
    return np.where(px + py > 1, lobe, body) / s


_SDF = (_sd_square, _sd_ellipse, _sd_heart)


def _render_block(
    shape: np.ndarray, scale: np.ndarray, orientation: np.ndarray, pos_x: np.ndarray, pos_y: np.ndarray
) -> np.ndarray:
    n = shape.shape[0]
    f32 = np.float32
    cx = _CENTRE_MIN + _CENTRE_SPAN * pos_x  # float64 for the window arithmetic
    cy = _CENTRE_MIN + _CENTRE_SPAN * pos_y
    x0 = np.clip(np.floor(cx).astype(np.int64) - 13, 0, IMAGE_SIZE - _WIN)
    y0 = np.clip(np.floor(cy).astype(np.int64) - 13, 0, IMAGE_SIZE - _WIN)
    offs = np.arange(_WIN, dtype=np.float64) + 0.5  # pixel centres
    dx = (x0[:, None] + offs - cx[:, None]).astype(f32)[:, None, :]  # [n, 1, WIN]
    dy = (cy[:, None] - (y0[:, None] + offs)).astype(f32)[:, :, None]  # [n, WIN, 1], y up
    r = (_RADIUS * scale).astype(f32)[:, None, None]
    c = np.cos(orientation).astype(f32)[:, None, None]
    s = np.sin(orientation).astype(f32)[:, None, None]
    # Rotating the sprite by +θ = sampling it at the points rotated by -θ.
    u = (c * dx + s * dy) / r
    v = (c * dy - s * dx) / r
    d = np.empty((n, _WIN, _WIN), dtype=f32)
    for k, sdf in enumerate(_SDF):
        sel = np.flatnonzero(shape == k)
        if sel.size:
            d[sel] = sdf(u[sel], v[sel]) * r[sel]  # back to pixels
    cov = np.clip(f32(0.5) - d, 0, 1)
    out = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), dtype=f32)
    rows = (y0[:, None] + np.arange(_WIN))[:, :, None]
    cols = (x0[:, None] + np.arange(_WIN))[:, None, :]
    out[np.arange(n)[:, None, None], rows, cols] = cov
    return out


def _as_1d(value: Any, name: str) -> np.ndarray:
    a = np.asarray(value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value)
    if a.ndim > 1:
        raise ValueError(f"{name}: expected a scalar or a 1-D array, got shape {a.shape}")
    return np.atleast_1d(a)


def render(shape: Any, scale: Any, orientation: Any, pos_x: Any, pos_y: Any) -> np.ndarray:
    """Sprites for factor *values* (not restricted to the grid), broadcast against each other.

    ``shape``: 0 square, 1 ellipse, 2 heart; ``scale`` in (0, 1]; ``orientation`` in radians; ``pos_x``,
    ``pos_y`` in [0, 1]. Each is a scalar or a 1-D array (all of the same length N, or scalars).
    Returns float32 ``[N, 1, 64, 64]`` in [0, 1].
    """
    arrays = {
        "shape": _as_1d(shape, "shape"),
        "scale": _as_1d(scale, "scale"),
        "orientation": _as_1d(orientation, "orientation"),
        "pos_x": _as_1d(pos_x, "pos_x"),
        "pos_y": _as_1d(pos_y, "pos_y"),
    }
    lengths = {k: v.shape[0] for k, v in arrays.items() if v.shape[0] != 1}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"render: factor arrays must have one length (or be scalars); got lengths {lengths}")
    n = next(iter(lengths.values()), 1)
    a = {k: np.broadcast_to(v, (n,)) for k, v in arrays.items()}
    sh = a["shape"]
    if not np.all(np.isin(sh, (0, 1, 2))):
        raise ValueError(f"shape: expected values in {{0, 1, 2}} ({', '.join(SHAPES)}), got {np.unique(sh)}")
    sh = sh.astype(np.int64)
    sc = a["scale"].astype(np.float64)
    if not np.all((sc > 0) & (sc <= 1)):
        raise ValueError(f"scale: expected values in (0, 1], got range [{sc.min()}, {sc.max()}]")
    ori = a["orientation"].astype(np.float64)
    if not np.all(np.isfinite(ori)):
        raise ValueError("orientation: expected finite values (radians)")
    px, py = a["pos_x"].astype(np.float64), a["pos_y"].astype(np.float64)
    for name, p in (("pos_x", px), ("pos_y", py)):
        if not np.all((p >= 0) & (p <= 1)):
            raise ValueError(f"{name}: expected values in [0, 1], got range [{p.min()}, {p.max()}]")
    out = np.empty((n, 1, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for s in range(0, n, _CHUNK):
        e = min(n, s + _CHUNK)
        out[s:e, 0] = _render_block(sh[s:e], sc[s:e], ori[s:e], px[s:e], py[s:e])
    return out


def dsprites(factors: Any) -> np.ndarray:
    """Sprites for factor *indices* ``[N, 5]`` (or one row ``[5]``) on the dSprites grid.

    Returns float32 ``[N, 1, 64, 64]`` in [0, 1]; deterministic.
    """
    v = factors_to_values(factors)
    return render(v[:, 0].astype(np.int64), v[:, 1], v[:, 2], v[:, 3], v[:, 4])


# ----------------------------------------------------------------------------------------------- sampler
class DSpritesSampler:
    """:class:`tangentlens.metrics.GroundTruthSampler` for procedural dSprites.

    ``sample_factors`` draws each factor uniformly with ``random_state.randint``, factor by factor, as
    disentanglement_lib's ``SplitDiscreteStateSpace`` does; observations are rendered deterministically (they
    consume no randomness). ``as_tensor=True`` returns torch float32 tensors (for a torch encoder) instead of
    numpy arrays; both are ``[N, 1, 64, 64]`` in [0, 1].
    """

    def __init__(self, as_tensor: bool = False) -> None:
        self.as_tensor = bool(as_tensor)

    @property
    def num_factors(self) -> int:
        return len(NUM_VALUES)

    @property
    def factors_num_values(self) -> list[int]:
        return list(NUM_VALUES)

    @property
    def factor_names(self) -> list[str]:
        return list(FACTOR_NAMES)

    def sample_factors(self, num: int, random_state: np.random.RandomState) -> np.ndarray:
        if not isinstance(num, (int, np.integer)) or isinstance(num, bool) or num < 0:
            raise ValueError(f"num: expected a non-negative integer, got {num!r}")
        out = np.zeros((int(num), self.num_factors), dtype=np.int64)
        for j, n in enumerate(NUM_VALUES):
            out[:, j] = random_state.randint(n, size=int(num))
        return out

    def sample_observations_from_factors(
        self, factors: np.ndarray, random_state: np.random.RandomState | None = None
    ) -> np.ndarray | torch.Tensor:
        x = dsprites(factors)
        return torch.from_numpy(x) if self.as_tensor else x

    def sample(self, num: int, random_state: np.random.RandomState) -> tuple[np.ndarray, Any]:
        """``(factors, observations)`` for ``num`` random draws."""
        f = self.sample_factors(num, random_state)
        return f, self.sample_observations_from_factors(f, random_state)


# ----------------------------------------------------------------------------------------------- datasets
class DSpritesDataset(torch.utils.data.Dataset):
    """Map-style dataset over the full grid: item ``i`` is ``(image [1, 64, 64] float32, factors [5] int64)``
    for flat index ``i``. ``__getitems__`` renders a whole DataLoader batch in one vectorised call."""

    def __len__(self) -> int:
        return NUM_COMBINATIONS

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"index: expected an int, got {type(index).__name__}")
        i = int(index) + (NUM_COMBINATIONS if index < 0 else 0)
        f = index_to_factors(i)
        return torch.from_numpy(dsprites(f)[0]), torch.from_numpy(f[0])

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        f = index_to_factors(np.asarray(indices, dtype=np.int64))
        x = torch.from_numpy(dsprites(f))
        ft = torch.from_numpy(f)
        return [(x[k], ft[k]) for k in range(len(indices))]


class DSpritesBatches:
    """Seeded stream of training batches ``(images [B, 1, 64, 64] float32, factors [B, 5] int64)``.

    Each batch draws ``batch_size`` grid points uniformly (with replacement) from a
    ``np.random.default_rng(seed)`` created afresh by every ``iter()``, so iterating twice gives the same
    batches bit for bit. ``num_batches=None`` streams forever.
    """

    def __init__(self, batch_size: int = 64, num_batches: int | None = None, seed: int = 0) -> None:
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
        if num_batches is not None and (
            not isinstance(num_batches, (int, np.integer)) or isinstance(num_batches, bool) or num_batches < 0
        ):
            raise ValueError(f"num_batches: expected a non-negative integer or None, got {num_batches!r}")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
        self.batch_size = int(batch_size)
        self.num_batches = None if num_batches is None else int(num_batches)
        self.seed = int(seed)

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("DSpritesBatches with num_batches=None is an infinite stream and has no len()")
        return self.num_batches

    def iter_indices(self) -> Iterator[np.ndarray]:
        """The flat grid indices of each batch (``[batch_size]`` int64), without rendering: e.g. to hold
        out images that a training run never saw."""
        rng = np.random.default_rng(self.seed)
        k = 0
        while self.num_batches is None or k < self.num_batches:
            yield rng.integers(0, NUM_COMBINATIONS, size=self.batch_size, dtype=np.int64)
            k += 1

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in self.iter_indices():
            f = index_to_factors(idx)
            yield torch.from_numpy(dsprites(f)), torch.from_numpy(f)
