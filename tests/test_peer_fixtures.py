"""The presets against the peers' own outputs (golden fixtures made by running their code, see the READMEs
under tests/fixtures/): torch-fidelity's LPIPS resize rule and distances at 32-512 px, and the path points
of torch-fidelity, torchmetrics and NVIDIA bit for bit."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from tangentlens.lpips import LPIPS
from tangentlens.ppl import PRESETS, FiniteDifferenceWarning, ppl_distances
from tangentlens.ppl.engine import _Pipeline

FIXTURES = Path(__file__).parent / "fixtures"
EPS = 1e-4
SIZES = (32, 64, 128, 256, 512)


def _images(res: int, n: int, seed: int) -> torch.Tensor:
    """The fixture's images (README step 3)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, max(res // 8, 2), max(res // 8, 2), generator=g, dtype=torch.float64)
    x = torch.nn.functional.interpolate(coarse, size=(res, res), mode="bilinear", align_corners=False)
    x = x + 0.15 * torch.rand(n, 3, res, res, generator=g, dtype=torch.float64)
    return (x / 1.15 * 255).round().clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="module")
def tf_data() -> tuple[dict[str, np.ndarray], dict]:
    d = FIXTURES / "torch_fidelity"
    return dict(np.load(d / "torch_fidelity_lpips.npz")), json.loads((d / "meta.json").read_text())


@pytest.fixture(scope="module")
def lpips64() -> LPIPS:
    return LPIPS("vgg16", pretrained=False).double()


def _pairs(res: int, meta: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    a, b = _images(res, meta["N"], 1000 + res), _images(res, meta["N"], 2000 + res)
    g = torch.Generator().manual_seed(3000 + res)
    near = (
        (a.int() + torch.randint(-2, 3, a.shape, generator=g, dtype=torch.int32))
        .clamp(0, 255)
        .to(torch.uint8)
    )
    digest = hashlib.sha256(a.numpy().tobytes() + b.numpy().tobytes() + near.numpy().tobytes()).hexdigest()
    assert digest == meta[f"sha256_{res}"], "the fixture's images were not regenerated identically"
    return a, b, near


class _Lookup(torch.nn.Module):
    """A torch-fidelity GenerativeModelBase (uint8 images) whose image i is ``first[i]`` at z = i and
    ``second[i]`` at z = i + 1/2: ``ppl_distances`` with z0 = i, z1 = i + 0.5 / eps evaluates exactly the
    fixture's pairs."""

    z_size, z_type, num_classes = 1, "normal", 0

    def __init__(self, first: torch.Tensor, second: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("first", first)
        self.register_buffer("second", second)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        i = z[:, 0].floor().long()
        later = (z[:, 0] - i) > 0.25
        return torch.where(later[:, None, None, None], self.second[i], self.first[i])


def _preset_distances(first: torch.Tensor, second: torch.Tensor, lp: LPIPS, **kw) -> torch.Tensor:
    n = first.shape[0]
    z0 = torch.arange(n, dtype=torch.float64)[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FiniteDifferenceWarning)  # the protocol's uint8 warning
        d = ppl_distances(
            _Lookup(first, second), z0, z0 + 0.5 / EPS, preset="torch_fidelity", distance=lp, **kw
        )
    return d * EPS**2


@pytest.mark.parametrize("res", SIZES)
def test_torch_fidelity_resize_rule_matches_their_code(res, tf_data) -> None:
    data, meta = tf_data
    a, _, _ = _pairs(res, meta)
    pipe = _Pipeline(PRESETS["torch_fidelity"], "0_255", None, rgb=True, float_dtype=torch.float64)
    ours = pipe.linear(a[:1].double() / 127.5 - 1)
    torch.testing.assert_close(ours, torch.from_numpy(data[f"resized_{res}"]), rtol=0, atol=1e-15)


@pytest.mark.parametrize("res", SIZES)
def test_torch_fidelity_preset_distances_match_their_code(res, tf_data, lpips64) -> None:
    data, meta = tf_data
    a, b, near = _pairs(res, meta)
    for second, key in ((b, "distances"), (near, "distances_near")):
        theirs = torch.from_numpy(data[f"{key}_{res}"]).double()
        ours = _preset_distances(a, second, lpips64)
        # their code runs in float32 (its normalize casts), ours in float64
        torch.testing.assert_close(ours, theirs, rtol=2e-5, atol=0, msg=f"{key} at {res} px")


def test_the_old_bilinear_rule_differs_where_the_rules_differ(tf_data, lpips64) -> None:
    """Why the preset changed: bilinear at every size equals torch-fidelity's rule at 32, 64 and 128 px
    (upsampling, identity, and a 2x2 average either way) and not at 256 and 512 px."""
    data, meta = tf_data
    for res in SIZES:
        a, _, near = _pairs(res, meta)
        old = _preset_distances(a, near, lpips64, resize="bilinear:64")
        theirs = torch.from_numpy(data[f"distances_near_{res}"]).double()
        rel = ((old - theirs).abs() / theirs).max().item()
        if res <= 128:
            assert rel < 2e-5, res
        else:
            assert rel > 0.1, (res, rel)


# ---- the path points: each peer's own interpolation, bit for bit -----------------------------------------


@pytest.fixture(scope="module")
def paths_data() -> dict[str, torch.Tensor]:
    data = np.load(FIXTURES / "peer_interpolation" / "peer_interpolation.npz")
    return {k: torch.from_numpy(v) for k, v in data.items()}


class _Recorder:
    """A plain callable generator that records the latents it is called with (the first call: the fd
    batch [p(t); p(t + eps)]; the determinism probe repeats it)."""

    def __init__(self) -> None:
        self.calls: list[torch.Tensor] = []
        self.A = torch.randn(32, 3 * 16 * 16, generator=torch.Generator().manual_seed(0)) / 8

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self.calls.append(z.detach().clone())
        return torch.tanh(z.float() @ self.A).reshape(-1, 3, 16, 16)


def _points(preset: str, a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | float = 0.0, **kw):
    rec = _Recorder()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ppl_distances(rec, a, b, t, preset=preset, space="z", distance="l2", batch_size=a.shape[0], **kw)
    return rec.calls[0].chunk(2)


def test_torch_fidelity_replay_uses_its_lerp(paths_data) -> None:
    a, b = paths_data["a"], paths_data["b"]
    p0, p1 = _points("torch_fidelity", a, b)
    assert torch.equal(p0, a) and torch.equal(p1, paths_data["tf_lerp"])
    # why it matters: torch.lerp (fused) differs from a + (b - a) * t in the last bit of a few coordinates
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2000, 512, generator=g), torch.randn(2000, 512, generator=g)
    assert not torch.equal(x.lerp(y, EPS), x + (y - x) * EPS)


@pytest.mark.parametrize("interp, key", [("lerp", "tm_lerp"), ("slerp_any", "tm_slerp_any")])
def test_torchmetrics_replay_uses_its_interpolation(paths_data, interp, key) -> None:
    a, b = paths_data["a"], paths_data["b"]
    p0, p1 = _points("torchmetrics", a, b, z_interp=interp)
    assert torch.equal(p0, a) and torch.equal(p1, paths_data[key])


def test_torchmetrics_slerp_unit_second_point(paths_data) -> None:
    # the second point is torchmetrics' own; the first is the normalised path point (the drop-in's
    # documented difference: torchmetrics starts from the raw z0)
    a, b = paths_data["a"], paths_data["b"]
    p0, p1 = _points("torchmetrics", a, b, z_interp="slerp_any_unit")
    assert torch.equal(p1, paths_data["tm_slerp_unit"])
    torch.testing.assert_close(p0, a / a.norm(dim=1, keepdim=True))


@pytest.mark.parametrize("sampling", ["end", "full"])
def test_nvidia_replay_uses_its_slerp(paths_data, sampling) -> None:
    a, b = paths_data["a"], paths_data["b"]
    if sampling == "end":
        t, k0, k1 = 0.0, "nv_slerp_t", "nv_slerp_t_eps"
    else:
        t, k0, k1 = paths_data["t_full"].double(), "nv_slerp_full", "nv_slerp_full_eps"
    p0, p1 = _points("stylegan2_crop", a, b, t)
    assert torch.equal(p0, paths_data[k0]) and torch.equal(p1, paths_data[k1])
