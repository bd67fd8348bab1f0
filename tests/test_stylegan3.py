"""StyleGAN3 generator: parity with NVIDIA's own code (golden fixtures), names, filters, the stacked JVP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import scipy.special
import torch

from tangentlens import forward_rules
from tangentlens.generators import stylegan3_convert
from tangentlens.lpips import LPIPS
from tangentlens.models import StyleGAN3Generator
from tangentlens.models.stylegan3 import design_lowpass_filter
from tangentlens.ppl import PRESETS, ppl, ppl_distances
from tangentlens.spectra import scan, spectrum

FIXTURES = Path(__file__).parent / "fixtures" / "stylegan3"
CASES = ("t16", "t32c", "r16c", "r32")


def fixture(name: str) -> dict:
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


def from_fixture(fx: dict, impl: str = "auto", seed: int = 0) -> StyleGAN3Generator:
    """Our generator from NVIDIA's constructor arguments (as the loader converts them) and its weights."""
    kwargs = stylegan3_convert.generator_kwargs((), fx["nvidia_kwargs"], {}, "fixture")
    G = StyleGAN3Generator(**kwargs, impl=impl, seed=seed)
    G.load_state_dict(fx["state_dict"])
    return G.eval().requires_grad_(False)


G_KW = dict(z_dim=8, w_dim=8, img_resolution=16, channel_base=128, channel_max=8)


def small(config: str = "stylegan3-t", res: int = 16, c_dim: int = 0, **kw) -> StyleGAN3Generator:
    return StyleGAN3Generator(**{**G_KW, "img_resolution": res}, c_dim=c_dim, config=config, **kw)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


# ---------------------------------------------------------------------------------------------------------
# NVIDIA's G_ema(z, c, truncation_psi=...) by NVIDIA's stylegan3 code (tests/fixtures/stylegan3/README.md)


@pytest.mark.parametrize("name,impl", [(n, "auto") for n in CASES] + [("t16", "reference")])
def test_images_match_nvidia_float64(name, impl):
    fx = fixture(name)
    G = from_fixture(fx, impl).double()
    with torch.no_grad():
        img = G(
            fx["z"], fx["c"], truncation_psi=fx["truncation_psi"], truncation_cutoff=fx["truncation_cutoff"]
        )
    assert img.dtype == torch.float64 and img.shape == fx["img64"].shape
    assert _rel(img, fx["img64"]) <= 1e-12


@pytest.mark.parametrize("name", CASES)
def test_images_match_nvidia_float32(name):
    fx = fixture(name)
    G = from_fixture(fx)
    z = fx["z"].float()
    c = None if fx["c"] is None else fx["c"].float()
    with torch.no_grad():
        img = G(z, c, truncation_psi=fx["truncation_psi"], truncation_cutoff=fx["truncation_cutoff"])
    assert img.dtype == torch.float32
    # float32 rounding: ours as far from NVIDIA's float64 images as NVIDIA's own float32 images are
    nvidia_error = _rel(fx["img32"], fx["img64"])
    assert 0 < nvidia_error < 1e-5
    assert _rel(img, fx["img64"]) <= 3 * nvidia_error
    assert _rel(img, fx["img32"]) <= 3 * nvidia_error


def test_fixtures_cover_both_configs_resolutions_labels_and_clamping():
    seen = {
        (fx["nvidia_kwargs"].get("conv_kernel", 3), fx["nvidia_kwargs"]["img_resolution"])
        for fx in map(fixture, CASES)
    }
    assert seen == {(3, 16), (3, 32), (1, 16), (1, 32)}
    fx = fixture("r16c")
    assert fx["c"] is not None and fx["truncation_psi"] != 1
    G = from_fixture(fx).double()
    active = []
    for layer in G.synthesis.layers():  # conv_clamp=2: the clamp must bind somewhere
        layer.register_forward_hook(lambda m, i, o: active.append(bool((o.abs() >= 2).any())))
    with torch.no_grad():
        G(fx["z"], fx["c"], truncation_psi=fx["truncation_psi"])
    assert any(active)


@pytest.mark.parametrize("name", CASES)
def test_names_shapes_and_designed_filters_are_nvidias(name):
    fx = fixture(name)
    kwargs = stylegan3_convert.generator_kwargs((), fx["nvidia_kwargs"], {}, "fixture")
    G = StyleGAN3Generator(**kwargs, seed=3)
    ours, theirs = G.state_dict(), fx["state_dict"]
    assert list(ours) == list(theirs)
    for key, t in theirs.items():
        assert ours[key].shape == t.shape and ours[key].dtype == t.dtype, key
        if key.endswith(("up_filter", "down_filter")):  # designed, not drawn: identical
            assert torch.equal(ours[key], t), key
    assert G.num_ws == 16 and G.synthesis.layer_names[-1].endswith("_3")
    assert G.synthesis.input.freqs.norm(dim=1).max() <= G.synthesis.input.bandwidth


def test_filter_design_matches_scipy():
    for numtaps, cutoff, width, fs in ((12, 2.0, 4.6, 16), (24, 10.3, 7.7, 64), (12, 100.0, 41.0, 512)):
        ours = design_lowpass_filter(numtaps, cutoff, width, fs)
        want = scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs)
        np.testing.assert_array_equal(ours.numpy(), torch.as_tensor(want, dtype=torch.float32).numpy())
        radial = design_lowpass_filter(numtaps, cutoff, width, fs, radial=True).double().numpy()
        x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
        r = np.hypot(*np.meshgrid(x, x))
        f = scipy.special.j1(2 * cutoff * np.pi * r) / (np.pi * r)
        beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
        f *= np.outer(np.kaiser(numtaps, beta), np.kaiser(numtaps, beta))
        np.testing.assert_allclose(radial, f / f.sum(), rtol=2e-7, atol=1e-9)
    assert design_lowpass_filter(1, 2.0, 1.0, 16) is None


# ---------------------------------------------------------------------------------------------------------
# Behaviour


def test_seeded_init_does_not_touch_the_global_rng():
    state = torch.random.get_rng_state()
    a, b = small(seed=4), small(seed=4)
    assert torch.equal(state, torch.random.get_rng_state())
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), k
    c = small(seed=5)
    assert not torch.equal(a.synthesis.input.freqs, c.synthesis.input.freqs)
    # NVIDIA's initial values: identity input transform, unit magnitude EMA, affine bias 1, zero biases
    assert torch.equal(a.synthesis.input.affine.bias, torch.tensor([1.0, 0, 0, 0]))
    assert not a.synthesis.input.affine.weight.any()
    layer = a.synthesis.layers()[3]
    assert layer.magnitude_ema == 1 and not layer.bias.any() and bool((layer.affine.bias == 1).all())


def test_configs_and_geometry():
    t, r = small("stylegan3-t"), small("stylegan3-r")
    assert t.synthesis.layers()[0].weight.shape[-1] == 3 and r.synthesis.layers()[0].weight.shape[-1] == 1
    assert r.synthesis.layers()[0].down_filter.ndim == 2  # radial, except the critically sampled layers
    assert r.synthesis.layers()[-2].down_filter.ndim == 1 and t.synthesis.layers()[0].down_filter.ndim == 1
    torgb = t.synthesis.layers()[-1]
    assert (
        torgb.is_torgb and torgb.up_filter is None and torgb.down_filter is None and torgb.padding == [0] * 4
    )
    img = t(torch.randn(2, 8))
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()
    G = small(res=64, synthesis_kwargs=dict(num_layers=6, num_critical=1))
    assert G.num_ws == 8 and G(torch.randn(1, 8)).shape == (1, 3, 64, 64)
    assert {layer.up_factor for layer in G.synthesis.layers()[:-1]} == {2, 4}


def test_update_emas_moves_the_magnitude_ema():
    G = small(seed=1)
    z = torch.randn(3, 8)
    before = {n: b.clone() for n, b in G.named_buffers() if n.endswith("magnitude_ema")}
    img = G(z)
    assert all(torch.equal(b, dict(G.named_buffers())[n]) for n, b in before.items())
    layer = G.synthesis.layers()[2]
    x_in = []
    layer.register_forward_pre_hook(lambda m, args: x_in.append(args[0].detach()))
    G(z, update_emas=True)
    want = (
        x_in[0].square().mean().lerp(before[f"synthesis.{G.synthesis.layer_names[2]}.magnitude_ema"], 0.999)
    )
    torch.testing.assert_close(layer.magnitude_ema, want)
    assert not torch.equal(G(z), img)


def test_errors():
    with pytest.raises(ValueError, match="img_resolution: expected a power of two >= 16"):
        small(res=8)
    with pytest.raises(ValueError, match="config: expected one of"):
        small("stylegan3-x")
    with pytest.raises(ValueError, match="mapping_kwargs: StyleGAN3's mapping takes"):
        small(mapping_kwargs=dict(embed_features=3))
    G = small()
    with pytest.raises(ValueError, match=r"ws: expected shape \[N, 16, 8\]"):
        G.synthesis(torch.randn(2, 15, 8))
    with pytest.raises(ValueError, match="noise_mode: expected one of"):
        G.synthesis(torch.randn(2, 16, 8), noise_mode="fixed")
    with pytest.raises(ValueError, match=r"z: expected shape \[N, 8\]"):
        G(torch.randn(2, 9))


# ---------------------------------------------------------------------------------------------------------
# Derivatives: torch.func through forward, and the stacked forward_jvp


def test_func_jvp_matches_finite_differences():
    fx = fixture("t16")
    G = from_fixture(fx).double()
    ws = G.mapping(fx["z"][:2], None).detach().clone()
    t = torch.randn(ws.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    _, jv = torch.func.jvp(G.synthesis, (ws,), (t,))
    h = 1e-6
    with torch.no_grad():
        fd = (G.synthesis(ws + h * t) - G.synthesis(ws - h * t)) / (2 * h)
    # a lrelu kink within h of a pre-activation makes a central difference average two slopes: compare norms
    assert float((jv - fd).norm() / jv.norm()) < 1e-4


def test_rms_normalize_stacked_is_the_jvp():
    g = torch.Generator().manual_seed(1)
    s, ts = (
        torch.randn(3, 5, dtype=torch.float64, generator=g),
        torch.randn(3, 4, 5, dtype=torch.float64, generator=g),
    )
    out = forward_rules.rms_normalize_stacked(forward_rules.stack(s, ts, 4))
    want = torch.stack(
        [torch.func.jvp(lambda v: v * v.square().mean().rsqrt(), (s,), (ts[:, k],))[1] for k in range(4)], 1
    )
    torch.testing.assert_close(out[:, 0], s * s.square().mean().rsqrt())
    torch.testing.assert_close(out[:, 1:], want, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("config", ["stylegan3-t", "stylegan3-r"])
def test_stacked_forward_jvp_matches_torch_func(config):
    layers = dict(num_layers=4, num_critical=1)  # 6 ws: a short network keeps torch.func's reference cheap
    G = small(config, c_dim=3, seed=7, conv_clamp=0.5, synthesis_kwargs=layers).double()  # the clamp binds
    for name, p in G.named_parameters():  # trained-like: rotated, translated Fourier features
        if name == "synthesis.input.affine.weight":
            p.data.normal_(generator=torch.Generator().manual_seed(8))
    g = torch.Generator().manual_seed(2)
    z = torch.randn(2, 8, dtype=torch.float64, generator=g)
    c = torch.eye(3, dtype=torch.float64)[:2]
    tz = torch.randn(2, 3, 8, dtype=torch.float64, generator=g)
    with torch.no_grad():
        img, timg = G.forward_jvp(z, tz, c, truncation_psi=0.8, truncation_cutoff=3)
    ref = StyleGAN3Generator(
        **G_KW, config=config, c_dim=3, seed=7, conv_clamp=0.5, synthesis_kwargs=layers, impl="reference"
    )
    ref.double().requires_grad_(False).load_state_dict(G.state_dict())

    def f(zz):
        return ref(zz, c, truncation_psi=0.8, truncation_cutoff=3)

    want = torch.stack([torch.func.jvp(f, (z,), (tz[:, i],))[1] for i in range(3)], dim=1)
    torch.testing.assert_close(img, f(z), rtol=0, atol=1e-13)
    assert timg.shape == (2, 3, 3, 16, 16)
    assert _rel(timg, want) <= 1e-11


# ---------------------------------------------------------------------------------------------------------
# PPL: the "stylegan3" preset vs NVIDIA's PPLSampler (fixtures), the exact mode, spectra, the CLI


@pytest.fixture(scope="module")
def lpips64() -> LPIPS:
    return LPIPS("vgg16", pretrained=False).double()  # the stand-in given to NVIDIA's sampler too


@pytest.mark.parametrize("name", ["t16", "r16c"])
def test_per_sample_ppl_matches_nvidias_sampler(name, lpips64):
    fx = fixture(name)
    nv = fx["ppl"]
    G = from_fixture(fx).double()
    d = ppl_distances(G, nv["z0"], nv["z1"], 0.0, preset="stylegan3", distance=lpips64, labels=nv["c"])
    assert d.dtype == torch.float64 and d.shape == nv["dist"].shape
    assert float(((d - nv["dist"]) / nv["dist"]).abs().max()) <= 1e-9
    assert (
        PRESETS["stylegan3"].batch_size == nv["batch_size"] == 2
    )  # NVIDIA's batches: the same images per call


def test_exact_mode_spectra_and_labels_through_the_stacked_rules(lpips64, monkeypatch):
    G = small("stylegan3-r", c_dim=3, seed=2).double()
    calls = []
    rules = G.synthesis.forward_jvp
    monkeypatch.setattr(G.synthesis, "forward_jvp", lambda *a, **k: calls.append(1) or rules(*a, **k))
    labels = torch.eye(3, dtype=torch.float64)[[0, 2]]
    r = ppl(G, num_samples=4, batch_size=2, distance=lpips64, labels=labels, progress=False, bootstrap=0)
    assert calls and r.config["generator"]["kind"] == "stylegan3 (tangentlens)"
    assert r.config["preset"] == "tangentlens (default)" and torch.isfinite(r.distances).all()
    # the exact limit is the eps -> 0 limit of NVIDIA's finite difference (float64: O(eps) apart)
    g = torch.Generator().manual_seed(0)
    z0, z1 = (
        torch.randn(2, 8, dtype=torch.float64, generator=g),
        torch.randn(2, 8, dtype=torch.float64, generator=g),
    )
    c = labels
    fd = ppl_distances(G, z0, z1, preset="stylegan3", distance=lpips64, labels=c)
    jvp = ppl_distances(G, z0, z1, preset="stylegan3", method="jvp", distance=lpips64, labels=c)
    torch.testing.assert_close(jvp, fd, rtol=1e-3, atol=0)
    calls.clear()
    sp = spectrum(G.float(), torch.randn(2, 8, generator=g), space="w", k=3, distance="l2")
    assert sp.eigenvalues.shape == (2, 3) and bool((sp.eigenvalues > 0).all()) and calls
    res = scan(small(seed=3), 2, k=2, space="w", batch_size=2, progress=False)  # (scan draws no labels)
    assert res.eigenvalues.shape == (2, 2) and bool(torch.isfinite(torch.as_tensor(res.eigenvalues)).all())


def test_cli_ppl_on_a_stylegan3_pickle(tmp_path, capsys):
    from tangentlens.cli import main
    from test_nvidia_pkl import FakeNvidia, sg3_nvidia_kwargs, small_sg3, write_sg3_pkl

    fake = FakeNvidia(tmp_path / "marker")
    path = write_sg3_pkl(
        tmp_path / "sg3.pkl", fake, small_sg3("stylegan3-t", c_dim=0), sg3_nvidia_kwargs(c_dim=0)
    )
    out = tmp_path / "r.json"
    args = [
        "ppl",
        "--generator",
        str(path),
        "--preset",
        "stylegan3",
        "--num-samples",
        "4",
        "--distance",
        "l2",
    ]
    assert main([*args, "--json", str(out), "--no-progress"]) == 0
    data = json.loads(out.read_text())
    assert (
        data["config"]["preset"] == "stylegan3"
        and data["config"]["generator"]["kind"] == "stylegan3 (tangentlens)"
    )
    assert len(data["distances"]) == 4 and not fake.marker.exists()
