"""Procedural dSprites (tangentlens.data): grid, rendering, factor effects, sampler, batch streams."""

from __future__ import annotations

import hashlib
import math
from collections import deque

import numpy as np
import pytest
import torch

import tangentlens.metrics as tm
from tangentlens.data import (
    FACTOR_NAMES,
    NUM_COMBINATIONS,
    NUM_VALUES,
    DSpritesBatches,
    DSpritesDataset,
    DSpritesSampler,
    dsprites,
    factor_values,
    factors_to_index,
    factors_to_values,
    index_to_factors,
    render,
)


def _centroid(img: np.ndarray) -> tuple[float, float]:
    """(column, row) centre of mass of a [64, 64] image."""
    m = img.sum()
    rows, cols = np.mgrid[0:64, 0:64] + 0.5
    return float((img * cols).sum() / m), float((img * rows).sum() / m)


def _principal_angle(img: np.ndarray) -> float:
    """Angle (radians, counter-clockwise as displayed, mod π) of the long axis of the ink's second moments."""
    cx, cy = _centroid(img)
    rows, cols = np.mgrid[0:64, 0:64] + 0.5
    dx, dy = cols - cx, -(rows - cy)  # y up
    m = img.sum()
    cxx, cyy, cxy = (img * dx * dx).sum() / m, (img * dy * dy).sum() / m, (img * dx * dy).sum() / m
    return 0.5 * math.atan2(2 * cxy, cxx - cyy) % math.pi


def test_grid_constants():
    assert FACTOR_NAMES == ("shape", "scale", "orientation", "posX", "posY")
    assert NUM_VALUES == (3, 6, 40, 32, 32)
    assert NUM_COMBINATIONS == 737_280
    v = factor_values()
    assert [len(v[n]) for n in FACTOR_NAMES] == list(NUM_VALUES)
    np.testing.assert_allclose(v["scale"], np.linspace(0.5, 1, 6))
    assert v["orientation"][0] == 0 and v["orientation"][-1] < 2 * math.pi
    np.testing.assert_allclose(np.diff(v["orientation"]), 2 * math.pi / 40)
    assert v["posX"][0] == 0 and v["posX"][-1] == 1


def test_index_round_trip():
    idx = np.array([0, 1, 31, 32, 12345, NUM_COMBINATIONS - 1])
    f = index_to_factors(idx)
    assert f.shape == (6, 5) and f.dtype == np.int64
    np.testing.assert_array_equal(f[-1], np.array(NUM_VALUES) - 1)
    np.testing.assert_array_equal(f[2], [0, 0, 0, 0, 31])  # posY varies fastest (C order)
    np.testing.assert_array_equal(factors_to_index(f), idx)
    np.testing.assert_allclose(factors_to_values(f[-1:]), [[2, 1.0, 39 * 2 * math.pi / 40, 1.0, 1.0]])


def test_shapes_dtype_range_and_speed():
    rs = np.random.RandomState(0)
    f = DSpritesSampler().sample_factors(2000, rs)
    x = dsprites(f)
    assert x.shape == (2000, 1, 64, 64) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0
    # Every sprite is inside the frame: the border is empty.
    assert x[:, :, [0, -1], :].max() == 0 and x[:, :, :, [0, -1]].max() == 0
    assert (x.reshape(2000, -1).sum(1) > 20).all()  # and none is empty (smallest ≈ 32 px of ink)


def test_deterministic():
    f = DSpritesSampler().sample_factors(300, np.random.RandomState(1))
    a, b = dsprites(f), dsprites(f.copy())
    assert hashlib.sha256(a.tobytes()).digest() == hashlib.sha256(b.tobytes()).digest()
    # A batch renders each image as it would alone (no cross-talk through the vectorisation).
    np.testing.assert_array_equal(dsprites(f[7]), a[7:8])


def test_anti_aliasing_grey_levels():
    x = dsprites(np.array([[0, 5, 3, 10, 20], [1, 2, 7, 3, 4], [2, 0, 11, 30, 0]]))
    for img in x[:, 0]:
        grey = (img > 0.02) & (img < 0.98)
        assert grey.sum() >= 10  # edge pixels partly covered
        assert len(np.unique(np.round(img[grey], 3))) >= 8  # many levels, not a few supersampling steps
        # Grey pixels lie on the boundary: each touches both ink and background.
        ink = img >= 0.98
        assert ink.sum() > grey.sum() / 4


def test_area_matches_geometry():
    # Ink mass (sum of coverage) ≈ the analytic area: square side √2·12·scale, ellipse π·12·6·scale².
    for scale_i in (0, 5):
        s = 0.5 + 0.1 * scale_i
        sq = dsprites([0, scale_i, 5, 16, 16])[0, 0].sum()
        el = dsprites([1, scale_i, 5, 16, 16])[0, 0].sum()
        assert sq == pytest.approx(2 * (12 * s) ** 2, rel=0.02)
        assert el == pytest.approx(math.pi * 12 * 6 * s**2, rel=0.03)


def test_position_moves_centroid():
    base = np.array([2, 3, 0, 0, 0])
    f = np.repeat(base[None], 32, 0)
    f[:, 3] = np.arange(32)
    cols = np.array([_centroid(img[0])[0] for img in dsprites(f)])
    rows = np.array([_centroid(img[0])[1] for img in dsprites(f)])
    step = 38 / 31  # centre at 13 + 38 posX pixels; sub-pixel jitter from the edge approximation < 0.08 px
    np.testing.assert_allclose(np.diff(cols), step, atol=0.08)
    assert cols[-1] - cols[0] == pytest.approx(38, abs=0.05)
    np.testing.assert_allclose(rows, rows[0], atol=0.05)
    f = np.repeat(base[None], 32, 0)
    f[:, 4] = np.arange(32)
    rows = np.array([_centroid(img[0])[1] for img in dsprites(f)])
    np.testing.assert_allclose(np.diff(rows), step, atol=0.08)  # posY moves the sprite down


def test_scale_grows_area():
    for shape in range(3):
        f = np.array([[shape, k, 4, 10, 20] for k in range(6)])
        area = dsprites(f).reshape(6, -1).sum(1)
        scale = factor_values()["scale"]
        assert np.all(np.diff(area) > 0)
        np.testing.assert_allclose(area / area[-1], scale**2, rtol=0.03)  # area ∝ scale²
        if shape < 2:  # point-symmetric sprites keep their centroid at the centre at every scale
            centre = 13 + 38 * np.array([10, 20]) / 31
            for img in dsprites(f):
                np.testing.assert_allclose(_centroid(img[0]), centre, atol=0.05)


def test_orientation_rotates():
    # The ellipse's long axis follows the orientation (mod π); area is unchanged.
    for k in (0, 3, 10, 17, 25, 38):
        theta = 2 * math.pi * k / 40
        img = dsprites([1, 5, k, 16, 16])[0, 0]
        d = (_principal_angle(img) - theta) % math.pi
        assert min(d, math.pi - d) < 0.02, (k, _principal_angle(img), theta)
    areas = dsprites(np.array([[2, 5, k, 16, 16] for k in range(40)])).reshape(40, -1).sum(1)
    assert np.ptp(areas) / areas.mean() < 0.01
    # The heart's centroid turns around the centre with the orientation (its tip points down at 0).
    c0 = _centroid(dsprites([2, 5, 0, 16, 16])[0, 0])
    c10 = _centroid(dsprites([2, 5, 10, 16, 16])[0, 0])  # +90° counter-clockwise
    centre = 13 + 38 * 16 / 31
    assert c0[1] < centre - 0.5  # mass above the centre at 0 (lobes up, tip down)
    assert c10[0] < centre - 0.5  # lobes to the left after a quarter turn counter-clockwise
    # Symmetries: the square repeats after 90°, the ellipse after 180°, the heart only after 360°.
    x = dsprites(np.array([[0, 5, 0, 16, 16], [0, 5, 10, 16, 16], [1, 5, 20, 16, 16], [2, 5, 20, 16, 16]]))
    np.testing.assert_allclose(x[0], x[1], atol=1e-4)
    np.testing.assert_allclose(x[2], dsprites([1, 5, 0, 16, 16])[0], atol=1e-4)
    assert np.abs(x[3] - dsprites([2, 5, 0, 16, 16])[0]).max() > 0.9


def test_shapes_differ():
    x = dsprites(np.array([[s, 5, 0, 16, 16] for s in range(3)]))[:, 0]
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(x[i] - x[j]).sum() > 50


def test_render_continuous_values_and_broadcast():
    x = render(np.array([0, 1, 2]), 0.75, 0.0, 0.5, np.array([0.0, 0.5, 1.0]))
    assert x.shape == (3, 1, 64, 64)
    np.testing.assert_array_equal(x[1:2], render(1, 0.75, 0.0, 0.5, 0.5))
    # Continuous positions interpolate the centroid.
    a, b, c = (_centroid(render(1, 0.75, 0.0, p, 0.5)[0, 0])[0] for p in (0.2, 0.25, 0.3))
    assert b - a == pytest.approx(c - b, abs=0.02) and b - a == pytest.approx(0.05 * 38, abs=0.03)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: dsprites(np.zeros((2, 4), dtype=int)), r"factors: expected an integer array \[N, 5\]"),
        (lambda: dsprites([[3, 0, 0, 0, 0]]), r"factors\[0, 0\] \(shape\): expected an index in 0..2, got 3"),
        (lambda: dsprites([[0, 0, 0, 0, 32]]), r"\(posY\): expected an index in 0..31, got 32"),
        (lambda: dsprites(np.full((1, 5), 0.5)), "expected integer factor indices"),
        (lambda: render(0, 1.5, 0, 0, 0), r"scale: expected values in \(0, 1\]"),
        (lambda: render(0, 1, 0, -0.1, 0), r"pos_x: expected values in \[0, 1\]"),
        (lambda: render(3, 1, 0, 0, 0), "shape: expected values in"),
        (lambda: render([0, 1], 1, 0, [0, 0.5, 1], 0), "must have one length"),
        (lambda: index_to_factors(NUM_COMBINATIONS), "index: expected values in"),
        (lambda: DSpritesBatches(0), "batch_size: expected a positive integer, got 0"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_sampler_protocol():
    s = DSpritesSampler()
    assert isinstance(s, tm.GroundTruthSampler)
    assert s.num_factors == 5 and list(s.factors_num_values) == list(NUM_VALUES)
    f = s.sample_factors(1000, np.random.RandomState(0))
    assert f.shape == (1000, 5) and f.dtype == np.int64
    assert (f.min(0) == 0).all() and (f.max(0) == np.array(NUM_VALUES) - 1).all()
    # Draws factor by factor with randint, as disentanglement_lib's dSprites (and SyntheticSampler) do.
    np.testing.assert_array_equal(
        f, tm.SyntheticSampler(NUM_VALUES).sample_factors(1000, np.random.RandomState(0))
    )
    obs = s.sample_observations_from_factors(f[:4], np.random.RandomState(0))
    assert isinstance(obs, np.ndarray) and obs.shape == (4, 1, 64, 64)
    t = DSpritesSampler(as_tensor=True).sample_observations_from_factors(f[:4], np.random.RandomState(0))
    assert isinstance(t, torch.Tensor) and torch.equal(t, torch.from_numpy(obs))


class _OracleSampler(DSpritesSampler):
    """DSpritesSampler whose "encoder" returns the ground-truth factors of each image it is given.

    Observations are passed to the representation function in the order they were rendered (the metrics
    batch the calls but keep the order); the oracle checks each image is the one rendered for its factors."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: deque[tuple[np.ndarray, np.ndarray]] = deque()

    def sample_observations_from_factors(self, factors, random_state=None):
        x = super().sample_observations_from_factors(factors, random_state)
        self.queue.extend(zip(np.asarray(factors), x, strict=True))
        return x

    def encode(self, x: np.ndarray) -> np.ndarray:
        codes = []
        for img in np.asarray(x):
            f, ref = self.queue.popleft()
            assert np.array_equal(img, ref)
            codes.append(f / (np.array(NUM_VALUES) - 1))
        return np.array(codes)


def test_sampler_end_to_end_with_metrics():
    oracle = _OracleSampler()
    # BetaVAE: the fixed factor's feature is exactly 0 for the ground truth: linearly separable.
    score = tm.beta_vae_score(oracle, oracle.encode, num_train=200, num_eval=100, batch_size=8)
    assert score.train_accuracy == 1.0 and score.eval_accuracy >= 0.98  # (regularised LogisticRegression)
    assert not oracle.queue
    # MIG of the factors themselves, one bin per factor value: 1 up to the plug-in bias of the MI estimate.
    rs = np.random.RandomState(0)
    codes, factors = tm.sample_codes_and_factors(oracle, oracle.encode, 3000, rs, batch_size=500)
    assert tm.mig(codes, factors, num_bins=40) > 0.95
    # A representation that misses shape and orientation scores at most 3/5.
    assert tm.mig(codes[:, [1, 3, 4]], factors, num_bins=40) < 0.61


def test_image_moments_carry_position_and_scale():
    # Read off the images themselves (no oracle): centroid and sqrt(ink mass) track posX, posY and scale.
    rs = np.random.RandomState(0)
    codes, factors = tm.sample_codes_and_factors(DSpritesSampler(), _image_moments, 3000, rs, batch_size=500)
    m = tm.mutual_info_matrix(codes, factors)
    assert np.argmax(m[:, 3]) == 0 and np.argmax(m[:, 4]) == 1 and np.argmax(m[:, 1]) == 2
    assert np.corrcoef(codes[:, 0], factors[:, 3])[0, 1] > 0.99
    assert np.corrcoef(codes[:, 1], factors[:, 4])[0, 1] > 0.99
    assert np.corrcoef(codes[:, 2], factors[:, 1])[0, 1] > 0.9


def _image_moments(x: np.ndarray) -> np.ndarray:
    """A hand-made "encoder": (posX, posY, scale) read off the image as centroid and √area."""
    img = np.asarray(x)[:, 0]
    rows, cols = np.mgrid[0:64, 0:64] + 0.5
    m = img.sum((1, 2))
    return np.stack([(img * cols).sum((1, 2)) / m, (img * rows).sum((1, 2)) / m, np.sqrt(m)], axis=1)


def test_batches_deterministic_and_reiterable():
    b = DSpritesBatches(batch_size=8, num_batches=3, seed=5)
    assert len(b) == 3
    first = list(b)
    second = list(b)
    assert len(first) == 3
    for (x1, f1), (x2, f2) in zip(first, second, strict=True):
        assert x1.shape == (8, 1, 64, 64) and x1.dtype == torch.float32 and f1.dtype == torch.int64
        assert torch.equal(x1, x2) and torch.equal(f1, f2)
        assert torch.equal(x1, torch.from_numpy(dsprites(f1.numpy())))
    assert not torch.equal(first[0][1], next(iter(DSpritesBatches(8, 1, seed=6)))[1])
    idx = np.concatenate(list(b.iter_indices()))
    np.testing.assert_array_equal(idx, factors_to_index(torch.cat([f for _, f in first]).numpy()))
    with pytest.raises(TypeError, match="infinite"):
        len(DSpritesBatches(8))


def test_dataset_map_style():
    ds = DSpritesDataset()
    assert len(ds) == NUM_COMBINATIONS
    x, f = ds[12345]
    assert x.shape == (1, 64, 64) and torch.equal(f, torch.from_numpy(index_to_factors(12345)[0]))
    items = ds.__getitems__([12345, 0])
    assert torch.equal(items[0][0], x)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False)
    xb, fb = next(iter(loader))
    assert xb.shape == (4, 1, 64, 64) and torch.equal(fb[1], torch.tensor([0, 0, 0, 0, 1]))
