"""StyleGAN2 generator (NVIDIA names and interface) and its resampling ops."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.signal import convolve2d

from tangentlens.models import StyleGAN2Generator
from tangentlens.resample import (
    conv2d_resample,
    downsample2d,
    filter2d,
    modulated_conv2d,
    setup_filter,
    upfirdn2d,
    upsample2d,
)

SMALL = dict(z_dim=16, w_dim=16, channel_base=512, channel_max=64)


def small_generator(res: int = 32, seed: int = 0, **kw) -> StyleGAN2Generator:
    return StyleGAN2Generator(img_resolution=res, seed=seed, **{**SMALL, **kw})


# ---------------------------------------------------------------------------------------------------------
# upfirdn2d against an independent direct implementation (numpy index arithmetic + scipy's convolution)


def direct_upfirdn2d(x, f, up=(1, 1), down=(1, 1), pad=(0, 0, 0, 0), flip=False, gain=1.0):
    """Upsample by zero insertion, pad/crop, true 2-D convolution with f (or correlation when flip)."""
    x = np.asarray(x, dtype=np.float64)
    f = np.asarray(f, dtype=np.float64)
    upx, upy = up
    downx, downy = down
    px0, px1, py0, py1 = pad
    n, c, h, w = x.shape
    xu = np.zeros((n, c, h * upy, w * upx))
    xu[:, :, ::upy, ::upx] = x
    hp, wp = h * upy + py0 + py1, w * upx + px0 + px1
    xp = np.zeros((n, c, hp, wp))
    for i in range(hp):
        for j in range(wp):
            si, sj = i - py0, j - px0
            if 0 <= si < h * upy and 0 <= sj < w * upx:
                xp[:, :, i, j] = xu[:, :, si, sj]
    k = f[::-1, ::-1] if flip else f  # flip_filter=True means cross-correlation with f
    out = np.stack([np.stack([convolve2d(xp[a, b], k, mode="valid") for b in range(c)]) for a in range(n)])
    return gain * out[:, :, ::downy, ::downx]


UPFIRDN_CASES = [
    # up, down, padding, flip, gain, filter
    (1, 1, 0, False, 1.0, "box3"),
    (2, 1, [2, 1, 2, 1], False, 4.0, "aa"),
    (1, 2, [1, 1, 1, 1], False, 1.0, "aa"),
    (3, 2, [3, 0, 1, 2], True, 2.5, "rect"),
    (1, 1, [-1, 2, 0, -2], False, 1.0, "rect"),
    (2, 2, [-2, -1, 1, -1], True, 0.5, "rect"),
    ([2, 1], [1, 2], [1, 2, 0, 1], False, 1.0, "rect"),
    (1, 3, [2, 3], False, 1.0, "aa"),
]


def make_filter(name):
    if name == "box3":
        return np.ones((3, 3)) / 9
    if name == "aa":
        return np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0
    return np.random.default_rng(5).standard_normal((3, 2))  # non-square, non-symmetric: fh=3, fw=2


@pytest.mark.parametrize("up,down,padding,flip,gain,fname", UPFIRDN_CASES)
def test_upfirdn2d_matches_direct(up, down, padding, flip, gain, fname):
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    f = make_filter(fname)
    y = upfirdn2d(x, torch.tensor(f), up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
    sc = lambda s: (s, s) if isinstance(s, int) else tuple(s)  # noqa: E731
    p = padding if isinstance(padding, list) and len(padding) == 4 else None
    if p is None:
        p = [padding] * 4 if isinstance(padding, int) else [padding[0], padding[0], padding[1], padding[1]]
    ref = direct_upfirdn2d(x.numpy(), f, sc(up), sc(down), p, flip, gain)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_setup_filter_and_separable_equals_2d():
    f2 = setup_filter([1, 3, 3, 1])
    assert f2.shape == (4, 4) and f2.dtype == torch.float32
    torch.testing.assert_close(
        f2, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64
    )
    f1 = setup_filter([1, 3, 3, 1], separable=True)
    assert f1.shape == (4,)
    assert setup_filter([1, 2, 3, 4, 4, 3, 2, 1]).ndim == 1  # NVIDIA: >= 8 taps default to separable
    torch.testing.assert_close(setup_filter([1, 3, 3, 1], gain=4).sum(), torch.tensor(4.0))
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    for kw in (
        dict(up=2, padding=[2, 1, 2, 1], gain=4),
        dict(down=2, padding=1),
        dict(up=3, down=2, padding=2),
    ):
        a = upfirdn2d(x, f2.double(), **kw)
        b = upfirdn2d(x, f1.double(), **kw)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(upsample2d(x, f1.double()), upsample2d(x, f2.double()), rtol=1e-12, atol=1e-12)


def test_resample_shapes_and_constant_images():
    f = setup_filter([1, 3, 3, 1]).double()
    x = torch.full((1, 2, 8, 8), 3.0, dtype=torch.float64)
    up = upsample2d(x, f)
    assert up.shape == (1, 2, 16, 16)
    torch.testing.assert_close(up[:, :, 2:-2, 2:-2], torch.full_like(up[:, :, 2:-2, 2:-2], 3.0))
    down = downsample2d(x, f)
    assert down.shape == (1, 2, 4, 4)
    torch.testing.assert_close(down[:, :, 1:-1, 1:-1], torch.full((1, 2, 2, 2), 3.0, dtype=torch.float64))
    filt = filter2d(x, f)
    assert filt.shape == x.shape
    torch.testing.assert_close(filt[:, :, 2:-2, 2:-2], x[:, :, 2:-2, 2:-2])
    assert upsample2d(x, f, up=4).shape == (1, 2, 32, 32)


def test_resample_errors():
    f = setup_filter([1, 3, 3, 1])
    with pytest.raises(ValueError, match="x: expected a 4-D"):
        upfirdn2d(torch.zeros(3, 8, 8), f)
    with pytest.raises(ValueError, match="up: expected"):
        upfirdn2d(torch.zeros(1, 1, 8, 8), f, up=0)
    with pytest.raises(ValueError, match="padding: expected"):
        upfirdn2d(torch.zeros(1, 1, 8, 8), f, padding=[1, 2, 3])
    with pytest.raises(ValueError, match="f: expected"):
        upfirdn2d(torch.zeros(1, 1, 8, 8), torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="padding:.*smaller than the filter"):
        upfirdn2d(torch.zeros(1, 1, 4, 4), f, padding=-2)
    with pytest.raises(ValueError, match="styles: expected shape"):
        modulated_conv2d(torch.zeros(2, 4, 8, 8), torch.zeros(5, 4, 3, 3), torch.zeros(2, 5))


# ---------------------------------------------------------------------------------------------------------
# conv2d_resample and modulated_conv2d


def test_conv2d_resample_equals_resample_then_conv():
    g = torch.Generator().manual_seed(2)
    f = setup_filter([1, 3, 3, 1]).double()
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64, generator=g)
    w = torch.randn(5, 4, 3, 3, dtype=torch.float64, generator=g)
    # up=2: upsample, then a true convolution (flip_weight=False) at the new resolution. NVIDIA pads before
    # filtering (one full convolution x_up * f * w), so the border ring differs from resample-then-conv.
    y = conv2d_resample(x, w, f=f, up=2, padding=1, flip_weight=False)
    assert y.shape == (2, 5, 16, 16)
    ref = F.conv2d(upsample2d(x, f), w.flip([2, 3]), padding=1)
    torch.testing.assert_close(y[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], rtol=1e-12, atol=1e-12)
    full = F.conv2d(upsample2d(x, f, padding=1), w.flip([2, 3]))  # the same with the ring kept
    torch.testing.assert_close(y, full, rtol=1e-12, atol=1e-12)
    # flip_weight=True is F.conv2d's cross-correlation.
    y = conv2d_resample(x, w, f=f, up=2, padding=1, flip_weight=True)
    torch.testing.assert_close(y, F.conv2d(upsample2d(x, f, padding=1), w), rtol=1e-12, atol=1e-12)
    # down=2: convolve, then downsample.
    y = conv2d_resample(x, w, f=f, down=2, padding=1)
    assert y.shape == (2, 5, 4, 4)
    ref = downsample2d(F.conv2d(x, w, padding=1), f)
    torch.testing.assert_close(y[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], rtol=1e-12, atol=1e-12)
    full = downsample2d(F.conv2d(F.pad(x, [1, 1, 1, 1]), w, padding=1), f, padding=-1)
    torch.testing.assert_close(y, full, rtol=1e-12, atol=1e-12)
    # plain: conv2d.
    torch.testing.assert_close(conv2d_resample(x, w, padding=1), F.conv2d(x, w, padding=1))
    # NVIDIA's transposed fast path for up=2 computes the same as the generic path.
    wt = w.transpose(0, 1)
    t = F.conv_transpose2d(x, wt, stride=2)
    t = upfirdn2d(t, f, padding=[1, 1, 1, 1], gain=4)
    torch.testing.assert_close(conv2d_resample(x, w, f=f, up=2, padding=1, flip_weight=False), t)


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv2d_fused_equals_unfused(up, demodulate):
    g = torch.Generator().manual_seed(3)
    f = setup_filter([1, 3, 3, 1]).double()
    x = torch.randn(3, 4, 8, 8, dtype=torch.float64, generator=g)
    weight = torch.randn(6, 4, 3, 3, dtype=torch.float64, generator=g)
    styles = torch.randn(3, 4, dtype=torch.float64, generator=g)
    noise = torch.randn(3, 1, 8 * up, 8 * up, dtype=torch.float64, generator=g)
    kw = dict(noise=noise, up=up, padding=1, resample_filter=f, demodulate=demodulate, flip_weight=(up == 1))
    a = modulated_conv2d(x, weight, styles, fused_modconv=True, **kw)
    b = modulated_conv2d(x, weight, styles, fused_modconv=False, **kw)
    assert a.shape == (3, 6, 8 * up, 8 * up)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # Per sample, the fused op is a conv with weight * styles[n] (input channels), then noise.
    n = 1
    wn = weight * styles[n].reshape(1, -1, 1, 1)
    if demodulate:
        wn = wn / wn.square().sum(dim=[1, 2, 3], keepdim=True).add(1e-8).sqrt()
    ref = conv2d_resample(x[n : n + 1], wn, f=f, up=up, padding=1, flip_weight=(up == 1)) + noise[n]
    torch.testing.assert_close(a[n : n + 1], ref, rtol=1e-10, atol=1e-10)


def test_demodulated_filters_have_unit_norm():
    # The op is linear in x: one-hot inputs the size of the kernel (padding 0) read out each effective filter.
    g = torch.Generator().manual_seed(4)
    o, i, k = 5, 3, 3
    weight = torch.randn(o, i, k, k, dtype=torch.float64, generator=g) * 7
    style = torch.randn(1, i, dtype=torch.float64, generator=g) * 3
    eye = torch.eye(i * k * k, dtype=torch.float64).reshape(-1, i, k, k)
    for fused in (True, False):
        out = modulated_conv2d(eye, weight, style.expand(len(eye), -1), fused_modconv=fused)
        filters = out.reshape(i * k * k, o).t()  # [O, I*k*k]: the effective (modulated, demodulated) filters
        torch.testing.assert_close(filters.square().sum(1), torch.ones(o, dtype=torch.float64))
    out = modulated_conv2d(eye, weight, style.expand(len(eye), -1), demodulate=False)
    torch.testing.assert_close(out.reshape(-1, o).t(), (weight * style.reshape(1, i, 1, 1)).reshape(o, -1))


def test_modulated_conv2d_fp16_prenormalisation():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 4, 6, 6, generator=g)
    weight = torch.randn(5, 4, 3, 3, generator=g) * 300  # w² sums would overflow float16 without it
    styles = torch.randn(2, 4, generator=g) * 300
    ref = modulated_conv2d(x.double(), weight.double(), styles.double(), padding=1)
    try:
        half = modulated_conv2d(x.half(), weight, styles, padding=1)
    except RuntimeError as exc:  # a CPU build without float16 convolution
        pytest.skip(f"float16 conv2d unavailable: {exc}")
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    torch.testing.assert_close(half.double(), ref, rtol=2e-2, atol=2e-2)


# ---------------------------------------------------------------------------------------------------------
# Generator: names, shapes, num_ws


def expected_keys(res: int, mapping_layers: int = 8, c_dim: int = 0) -> set[str]:
    keys = {"mapping.w_avg"}
    keys |= {f"mapping.fc{i}.{p}" for i in range(mapping_layers) for p in ("weight", "bias")}
    if c_dim:
        keys |= {"mapping.embed.weight", "mapping.embed.bias"}
    layer = (
        "weight",
        "bias",
        "noise_strength",
        "noise_const",
        "resample_filter",
        "affine.weight",
        "affine.bias",
    )
    torgb = ("weight", "bias", "affine.weight", "affine.bias")
    for r in [2**i for i in range(2, int(math.log2(res)) + 1)]:
        b = f"synthesis.b{r}"
        keys.add(f"{b}.resample_filter")
        convs = ["conv1"] if r == 4 else ["conv0", "conv1"]
        if r == 4:
            keys.add(f"{b}.const")
        keys |= {f"{b}.{cv}.{p}" for cv in convs for p in layer}
        keys |= {f"{b}.torgb.{p}" for p in torgb}
    return keys


def test_state_dict_keys_and_shapes_match_nvidia():
    G = StyleGAN2Generator(z_dim=24, w_dim=16, img_resolution=64, channel_base=512, channel_max=64, seed=0)
    sd = G.state_dict()
    assert set(sd) == expected_keys(64)
    ch = {r: min(512 // r, 64) for r in (4, 8, 16, 32, 64)}
    assert sd["mapping.fc0.weight"].shape == (16, 24)
    assert sd["mapping.fc7.weight"].shape == (16, 16)
    assert sd["mapping.w_avg"].shape == (16,)
    assert sd["synthesis.b4.const"].shape == (ch[4], 4, 4)
    assert sd["synthesis.b4.resample_filter"].shape == (4, 4)
    assert sd["synthesis.b8.conv0.weight"].shape == (ch[8], ch[4], 3, 3)
    assert sd["synthesis.b16.conv0.weight"].shape == (ch[16], ch[8], 3, 3)
    assert sd["synthesis.b16.conv0.affine.weight"].shape == (ch[8], 16)
    assert sd["synthesis.b16.conv1.affine.weight"].shape == (ch[16], 16)
    assert sd["synthesis.b64.conv1.noise_const"].shape == (64, 64)
    assert sd["synthesis.b64.conv0.noise_strength"].shape == ()
    assert sd["synthesis.b64.torgb.weight"].shape == (3, ch[64], 1, 1)
    torch.testing.assert_close(sd["synthesis.b8.conv1.affine.bias"], torch.ones(ch[8]))  # bias_init=1
    assert G.num_ws == 10 and G.synthesis.num_ws == 10 and G.mapping.num_ws == 10
    assert (G.z_dim, G.c_dim, G.w_dim, G.img_resolution, G.img_channels) == (24, 0, 16, 64, 3)
    Gc = small_generator(8, c_dim=3)
    assert set(Gc.state_dict()) == expected_keys(8, c_dim=3)


def test_num_ws_256_and_default_channels():
    # Default channel_base/max: build the 256² generator's synthesis only on the meta device-free path
    # would still allocate; tiny channels keep it cheap while exercising the 256² block layout.
    G = StyleGAN2Generator(z_dim=8, w_dim=8, img_resolution=256, channel_base=256, channel_max=8)
    assert G.num_ws == 14 == 2 * 8 - 2
    assert G.synthesis.block_resolutions == [4, 8, 16, 32, 64, 128, 256]
    assert G.state_dict()["synthesis.b256.conv0.weight"].shape == (1, 2, 3, 3)
    img = G(torch.randn(1, 8))
    assert img.shape == (1, 3, 256, 256) and torch.isfinite(img).all()
    # NVIDIA's channel rule at the defaults (config F at 256²): 512 up to 64², then 256, 128.
    chans = {r: min(32768 // r, 512) for r in G.synthesis.block_resolutions}
    assert [chans[r] for r in (4, 64, 128, 256)] == [512, 512, 256, 128]


# ---------------------------------------------------------------------------------------------------------
# Generator: behaviour


def test_forward_shapes_determinism_and_seeds():
    state = torch.random.get_rng_state()
    G = small_generator(32, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())  # init does not touch the global RNG
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    img = G(z)
    assert img.shape == (2, 3, 32, 32) and img.dtype == torch.float32 and torch.isfinite(img).all()
    torch.testing.assert_close(G(z, noise_mode="const"), img, rtol=0, atol=0)
    G2 = small_generator(32, seed=1)
    for (k, a), (_, b) in zip(G.state_dict().items(), G2.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    G3 = small_generator(32, seed=2)
    assert not torch.equal(
        G.state_dict()["synthesis.b8.conv0.weight"], G3.state_dict()["synthesis.b8.conv0.weight"]
    )
    assert not torch.equal(G.state_dict()["mapping.fc0.weight"], G3.state_dict()["mapping.fc0.weight"])


def test_noise_modes():
    G = small_generator(16)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)
    ws = G.mapping(torch.randn(2, 16), None)
    const = G.synthesis(ws, noise_mode="const")
    none = G.synthesis(ws, noise_mode="none")
    assert not torch.allclose(const, none)
    r1 = G.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(7))
    r2 = G.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(7))
    r3 = G.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(8))
    assert torch.equal(r1, r2) and not torch.allclose(r1, r3)
    with pytest.raises(ValueError, match="noise_mode: expected one of"):
        G.synthesis(ws, noise_mode="fixed")
    with pytest.raises(ValueError, match="noise_mode"):
        G(torch.randn(1, 16), noise_mode="bogus")


def test_save_load_roundtrip(tmp_path):
    G = small_generator(32, seed=3)
    with torch.no_grad():
        G.mapping.w_avg.normal_(generator=torch.Generator().manual_seed(0))
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.1)
    path = tmp_path / "g.pt"
    torch.save(G.state_dict(), path)
    H = small_generator(32, seed=99)
    H.load_state_dict(torch.load(path, weights_only=True))
    z = torch.randn(2, 16)
    torch.testing.assert_close(H(z, truncation_psi=0.7), G(z, truncation_psi=0.7), rtol=0, atol=0)


def test_truncation_and_w_avg():
    G = small_generator(16)
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.linspace(-1, 1, 16))
    z = torch.randn(3, 16)
    ws = G.mapping(z, None, truncation_psi=0)
    assert ws.shape == (3, G.num_ws, 16)
    torch.testing.assert_close(ws, G.mapping.w_avg.expand(3, G.num_ws, -1))
    full = G.mapping(z, None)
    half = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=2)
    torch.testing.assert_close(half[:, :2], G.mapping.w_avg.lerp(full[:, :2], 0.5))
    torch.testing.assert_close(half[:, 2:], full[:, 2:])
    before = G.mapping.w_avg.clone()
    G.mapping(z, None)
    assert torch.equal(before, G.mapping.w_avg)  # no update unless update_emas
    G.mapping(z, None, update_emas=True)
    torch.testing.assert_close(G.mapping.w_avg, full[:, 0].detach().mean(0).lerp(before, 0.995))


def test_conditioning():
    G = small_generator(8, c_dim=4)
    z = torch.randn(2, 16).expand(2, 16)
    c = torch.eye(4)[:2]
    img = G(z, c)
    assert img.shape == (2, 3, 8, 8) and torch.isfinite(img).all()
    assert not torch.allclose(img[0], img[1])  # same z, different labels
    with pytest.raises(ValueError, match=r"c: expected shape \[N, 4\]"):
        G(z)
    with pytest.raises(ValueError, match="c: expected 2 rows"):
        G(z, torch.eye(4)[:3])


def test_errors():
    G = small_generator(8)
    with pytest.raises(ValueError, match=r"z: expected shape \[N, 16\], got \(2, 15\)"):
        G(torch.randn(2, 15))
    with pytest.raises(ValueError, match=r"z: expected shape"):
        G(torch.randn(16))
    with pytest.raises(ValueError, match=r"ws: expected shape \[N, 4, 16\]"):
        G.synthesis(torch.randn(2, 5, 16))
    for res in (48, 2, 0, 100):
        with pytest.raises(ValueError, match="img_resolution: expected a power of two >= 4"):
            small_generator(res)
    with pytest.raises(ValueError, match="architecture: expected"):
        small_generator(8, synthesis_kwargs=dict(architecture="fancy"))
    with pytest.raises(ValueError, match="impl: expected"):
        small_generator(8, impl="cuda")


@pytest.mark.parametrize("architecture", ["orig", "resnet"])
def test_other_architectures(architecture):
    G = small_generator(16, synthesis_kwargs=dict(architecture=architecture))
    assert G.num_ws == 6
    keys = set(G.state_dict())
    assert "synthesis.b8.torgb.weight" not in keys and "synthesis.b16.torgb.weight" in keys  # last block only
    assert ("synthesis.b8.skip.weight" in keys) == (architecture == "resnet")
    img = G(torch.randn(2, 16))
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()


def test_fused_and_unfused_generator_agree():
    G = small_generator(16).double()
    ws = G.mapping(torch.randn(2, 16, dtype=torch.float64), None)
    a = G.synthesis(ws, noise_mode="const", fused_modconv=True)
    b = G.synthesis(ws, noise_mode="const", fused_modconv=False)
    assert a.dtype == torch.float64
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_conv_clamp_and_fp16_blocks_run():
    G = small_generator(16, conv_clamp=0.05, synthesis_kwargs=dict(num_fp16_res=2))
    assert G.synthesis.b16.use_fp16 and G.synthesis.b8.use_fp16 and not G.synthesis.b4.use_fp16
    img = G(torch.randn(2, 16))  # force_fp32=True by default
    assert img.dtype == torch.float32
    assert img.abs().max() <= 0.05 * 3 * 1.0001  # every torgb output is clamped, three of them summed-ish


# ---------------------------------------------------------------------------------------------------------
# torch.func: jvp vs finite differences, vmap over tangents


def test_jvp_matches_finite_difference_and_vmap():
    G = StyleGAN2Generator(
        z_dim=8, w_dim=8, img_resolution=16, channel_base=64, channel_max=8, seed=5
    ).double()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
    g = torch.Generator().manual_seed(11)
    ws = G.mapping(torch.randn(2, 8, dtype=torch.float64, generator=g), None).detach().clone()
    tangents = torch.randn(3, *ws.shape, dtype=torch.float64, generator=g)

    def synth(w):
        return G.synthesis(w, noise_mode="const")

    out, jv = torch.func.jvp(synth, (ws,), (tangents[0],))
    torch.testing.assert_close(out, synth(ws))
    h = 1e-6
    with torch.no_grad():
        fd = (synth(ws + h * tangents[0]) - synth(ws - h * tangents[0])) / (2 * h)
    torch.testing.assert_close(jv, fd, rtol=1e-6, atol=1e-7)

    batched = torch.func.vmap(lambda v: torch.func.jvp(synth, (ws,), (v,))[1])(tangents)
    singles = torch.stack([torch.func.jvp(synth, (ws,), (v,))[1] for v in tangents])
    torch.testing.assert_close(batched, singles, rtol=1e-10, atol=1e-12)
    # The mapping network too (z to ws, with truncation).
    zt = torch.randn(2, 8, dtype=torch.float64, generator=g)
    _, jz = torch.func.jvp(
        lambda z: G.mapping(z, None, truncation_psi=0.7, truncation_cutoff=2), (zt,), (zt,)
    )
    with torch.no_grad():
        fdz = (G.mapping(zt * (1 + h), None, 0.7, 2) - G.mapping(zt * (1 - h), None, 0.7, 2)) / (2 * h)
    torch.testing.assert_close(jz, fdz, rtol=1e-6, atol=1e-8)
