"""bf16: the emulation against torch's native bf16 kernels and a float64 model of their rounding, the
native/fast detection behind precision="auto", the LPIPS trunk's cached bf16 weights, and ppl's
precision="auto" (the decision, its probe of the model's error, what the result records)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import jvp, vmap
from torch.utils._python_dispatch import _get_current_dispatch_mode

import tangentlens.bf16 as bf16
from tangentlens.jvp import _precision
from tangentlens.lpips import LPIPS
from tangentlens.models import StyleGAN2Generator
from tangentlens.ppl import ppl, ppl_distances

# the modules (tangentlens.ppl and tangentlens.jvp are the functions)
ppl_module = importlib.import_module("tangentlens.ppl.run")  # where the auto decision is made
jvp_module = importlib.import_module("tangentlens.jvp")
BF16_ULP = 2.0**-7  # relative spacing of bf16 values (8-bit significand)


def _ulps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| in units of the bf16 spacing at max(|a|, |b|)."""
    a, b = a.double(), b.double()
    scale = torch.maximum(a.abs(), b.abs()).clamp_min(1e-30)
    spacing = 2.0 ** torch.floor(torch.log2(scale)) * BF16_ULP
    return (a - b).abs() / spacing


def _autocast_bf16(fn, *args, emulate: bool):  # noqa: ANN001, ANN202
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if emulate:
            with bf16.emulate_bf16():
                return fn(*args)
        return fn(*args)


def _conv_nhwc(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x.contiguous(memory_format=torch.channels_last), w, stride=2)


def _addmm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.addmm(w[:, 0, 0, 0], x.flatten(1)[:, :72], w.flatten(1).t())


def _bmm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.bmm(x.flatten(2)[:, :8], x.flatten(2)[:, :8].transpose(1, 2))


@pytest.mark.parametrize(
    "op",
    [
        pytest.param(lambda x, w: F.conv2d(x, w, padding=1), id="conv"),
        pytest.param(_conv_nhwc, id="conv_nhwc"),
        pytest.param(lambda x, w: x.flatten(1)[:, :72] @ w.flatten(1).t(), id="mm"),
        pytest.param(_addmm, id="addmm"),
        pytest.param(_bmm, id="bmm"),
    ],
)
def test_emulation_equals_native_bf16(op) -> None:
    """Emulated products equal torch's native bf16 kernels (float32 accumulation, bf16 result) to one bf16
    ulp on the rare element where the accumulation order flips a rounding, and equal the float64 product
    of the bf16-rounded operands rounded once to bf16."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 8, 9, 7, generator=g)
    w = torch.randn(16, 8, 3, 3, generator=g)
    native = _autocast_bf16(op, x, w, emulate=False)
    emulated = _autocast_bf16(op, x, w, emulate=True)
    assert native.dtype == emulated.dtype == torch.bfloat16
    assert native.shape == emulated.shape
    ulps = _ulps(native, emulated)
    assert ulps.max() <= 1 and (ulps > 0).float().mean() < 0.02
    exact = op(x.bfloat16().double(), w.bfloat16().double())  # bf16 operands, exact products and sums
    assert _ulps(emulated, exact).max() <= 0.5 + 1e-3  # one rounding (float32 accumulation error is tiny)


def test_emulation_under_vmap_jvp_and_autograd() -> None:
    """The mode sits below torch.func: vmapped forward-mode tangents of a bf16 convolution match native."""
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(2, 4, 6, 6, generator=g), torch.randn(5, 4, 3, 3, generator=g)
    t = torch.randn(3, 2, 4, 6, 6, generator=g)

    def f(inp: torch.Tensor) -> torch.Tensor:
        return F.conv2d(inp, w, padding=1)

    def tangents(emulate: bool) -> torch.Tensor:
        return _autocast_bf16(lambda: vmap(lambda v: jvp(f, (x,), (v,))[1])(t), emulate=emulate)

    native, emulated = tangents(False), tangents(True)
    assert emulated.dtype == torch.bfloat16 and _ulps(native, emulated).max() <= 1


def test_precision_bf16_emulates_only_without_native_kernels(monkeypatch) -> None:
    cpu = torch.device("cpu")
    for native in (False, True):
        monkeypatch.setattr(jvp_module, "native_bf16", lambda device, native=native: native)
        with _precision("bf16", cpu):
            mode = _get_current_dispatch_mode()
            assert isinstance(mode, bf16._BF16Mode) is (not native)
            assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_auto_precision_decision(monkeypatch) -> None:
    # this machine: the decision follows the capability (and, where native, the probe)
    choice, reason = bf16.auto_precision("cpu")
    assert choice in ("fp32", "bf16") and reason.startswith("cpu (")
    if not bf16.native_bf16("cpu"):
        assert choice == "fp32" and "no native bf16" in reason
    monkeypatch.setattr(bf16, "native_bf16", lambda device: True)
    for speedup, want in ((2.2, "bf16"), (1.1, "fp32")):
        monkeypatch.setattr(bf16, "bf16_speedup", lambda device, s=speedup: s)
        choice, reason = bf16.auto_precision("cpu")
        assert choice == want and f"x{speedup:.2f}" in reason
    monkeypatch.setattr(bf16, "native_bf16", lambda device: False)
    assert bf16.auto_precision("cuda")[0] == "fp32"


def test_cpu_flags_are_read() -> None:
    flags = bf16.cpu_bf16_flags()
    assert isinstance(flags, tuple) and set(flags) <= {"avx512_bf16", "amx_bf16", "bf16"}


def test_trunk_caches_bf16_weights_under_autocast() -> None:
    """Under bf16 autocast the trunk convolves with cached bf16 copies of its weights (autocast would cast
    every weight on every call): the same taps as autocast's own casts, refreshed when a weight changes."""
    lp = LPIPS("vgg16", pretrained=False)
    trunk = lp.trunk
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))

    def taps(emulate: bool = True) -> list[torch.Tensor]:
        with torch.no_grad():
            return _autocast_bf16(trunk, x, emulate=emulate)

    cached = taps()
    assert {k[1] for k in trunk._weight_copies} == {torch.bfloat16} and len(trunk._weight_copies) == 13
    trunk.requires_grad_(True)  # with autograd on, the Parameters themselves: autocast casts them
    with torch.enable_grad(), torch.autocast("cpu", dtype=torch.bfloat16), bf16.emulate_bf16():
        direct = trunk(x)
    trunk.requires_grad_(False)
    for a, b in zip(cached, direct, strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=0)
    with torch.no_grad():
        trunk.features[0].weight.mul_(-2.0)
    changed = taps()
    assert not torch.equal(changed[0], cached[0])
    trunk.clear_weight_cache()
    torch.testing.assert_close(taps()[0], changed[0], rtol=0, atol=0)


# ---- ppl(precision="auto") ---------------------------------------------------------------------------------


def _small_stylegan() -> StyleGAN2Generator:
    G = StyleGAN2Generator(z_dim=12, w_dim=12, img_resolution=16, channel_base=256, channel_max=16, seed=3)
    for name, p in G.named_parameters():
        if name.endswith("noise_strength"):
            p.data.fill_(0.2)
    return G.eval().requires_grad_(False)


@pytest.fixture(autouse=True)
def _fresh_auto_decisions():
    ppl_module._AUTO_DECISIONS.clear()
    yield
    ppl_module._AUTO_DECISIONS.clear()


def _run(G, **kw):  # noqa: ANN001, ANN202
    args = dict(num_samples=8, batch_size=4, progress=False, bootstrap=0, seed=5)
    args.update(kw)
    return ppl(G, **args)


def test_ppl_auto_on_this_machine_records_what_ran() -> None:
    G, lp = _small_stylegan(), LPIPS("vgg16", pretrained=False)
    r = _run(G, precision="auto", distance=lp)
    want, _ = bf16.auto_precision("cpu")
    assert r.config["precision_requested"] == "auto" and r.config["precision"] == want
    assert any(n.startswith(f"precision='auto': {want}") for n in r.config["notes"])
    same = _run(G, precision=want, distance=lp)
    torch.testing.assert_close(r.distances, same.distances, rtol=0, atol=0)
    fd = _run(G, precision="auto", method="fd", distance="l2")
    assert fd.config["precision"] == "fp32" and "finite differences" in " ".join(fd.config["notes"])


def test_ppl_auto_probes_the_model_where_bf16_is_native_and_fast(monkeypatch) -> None:
    """Where bf16 is native and fast, auto computes probe samples in both precisions and takes bf16 only
    within AUTO_BF16_MAX_ERROR; the decision is kept per model, distance and protocol."""
    monkeypatch.setattr(ppl_module, "auto_precision", lambda device: ("bf16", "cpu: native (test)"))
    G, lp = _small_stylegan(), LPIPS("vgg16", pretrained=False)
    r = _run(G, precision="auto", distance=lp)
    assert r.config["precision"] == "bf16"
    note = next(n for n in r.config["notes"] if n.startswith("precision='auto'"))
    assert "probe samples" in note and "within" in note
    torch.testing.assert_close(r.distances, _run(G, precision="bf16", distance=lp).distances, rtol=0, atol=0)
    again = _run(G, precision="auto", distance=lp, num_samples=4)
    assert again.config["precision"] == "bf16" and "decided earlier" in " ".join(again.config["notes"])
    ppl_module._AUTO_DECISIONS.clear()
    monkeypatch.setattr(ppl_module, "AUTO_BF16_MAX_ERROR", 0.0)
    strict = _run(G, precision="auto", distance=lp)
    assert strict.config["precision"] == "fp32" and "beyond" in " ".join(strict.config["notes"])


def test_ppl_bf16_notes_the_emulation(monkeypatch) -> None:
    monkeypatch.setattr(ppl_module, "native_bf16", lambda device: False)
    r = _run(_small_stylegan(), precision="bf16", distance="l2")
    assert any("emulated" in n for n in r.config["notes"])


def test_exact_mode_bf16_within_the_documented_bound() -> None:
    """docs/ppl.md's bound on a small model (fast): per-sample median <= 1.5 %, the mean <= 0.5 % of
    float64 (measured here: see the printout; the bench model's numbers are in docs/ppl.md)."""
    G, lp = _small_stylegan(), LPIPS("vgg16", pretrained=False)
    g = torch.Generator().manual_seed(9)
    z0, z1 = torch.randn(32, 12, generator=g), torch.randn(32, 12, generator=g)
    ref = ppl_distances(G.double(), z0.double(), z1.double(), method="jvp", distance=lp.double())
    G, lp = G.float(), lp.float()
    got = ppl_distances(G, z0, z1, method="jvp", distance=lp, precision="bf16")
    rel = ((got - ref) / ref).numpy()
    mean_err = float(got.mean() / ref.mean() - 1)
    print(
        f"bf16 vs float64: per-sample median {np.median(np.abs(rel)):.2e}, max {np.abs(rel).max():.2e}, "
        f"mean {mean_err:+.2e}"
    )
    assert np.median(np.abs(rel)) <= 0.015 and abs(mean_err) <= 0.005
