"""Stacked forward rules of the StyleGAN2 blocks vs torch.func.jvp of the reference modules (float64)."""

import pytest
import torch

import tangentlens
from tangentlens import forward_rules
from tangentlens.models import StyleGAN2Generator
from tangentlens.resample import modulated_conv2d, setup_filter


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _loop(fn, x, t):
    return torch.stack([torch.func.jvp(fn, (x,), (t[:, i],))[1] for i in range(t.shape[1])], dim=1)


@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("up", [1, 2])
def test_modulated_conv2d_stacked_matches_jvp(demodulate, up):
    B, k, I, O = 2, 3, 5, 4
    x, tx = _rand(B, I, 6, 7, seed=1), _rand(B, k, I, 6, 7, seed=2)
    s, ts = _rand(B, I, seed=3), _rand(B, k, I, seed=4)
    weight = _rand(O, I, 3, 3, seed=5)
    f = setup_filter([1, 3, 3, 1]).double() if up == 2 else None
    noise = _rand(1, 1, 6 * up, 7 * up, seed=6)
    kw = dict(up=up, padding=1, resample_filter=f, flip_weight=(up == 1), demodulate=demodulate)

    def ref(xx, ss):
        return modulated_conv2d(xx, weight, ss, noise=noise, **kw)

    want_y = ref(x, s)
    want_t = torch.stack([torch.func.jvp(ref, (x, s), (tx[:, i], ts[:, i]))[1] for i in range(k)], dim=1)
    Y = forward_rules.modulated_conv2d_stacked(
        forward_rules.stack(x, tx, k), weight, forward_rules.stack(s, ts, k), noise=noise, **kw
    )
    y, ty = forward_rules.unstack(Y)
    torch.testing.assert_close(y, want_y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ty, want_t, rtol=1e-11, atol=1e-11)
    assert want_t.abs().max() > 0.1


def _generator(**kw):
    return StyleGAN2Generator(
        z_dim=8, w_dim=8, img_resolution=16, channel_base=256, channel_max=8, mapping_layers=2, seed=1, **kw
    ).double()


@pytest.mark.parametrize("architecture", ["skip", "orig"])
def test_generator_forward_jvp_matches_vmap_jvp(architecture):
    G = _generator(synthesis_kwargs=dict(architecture=architecture), conv_clamp=256)
    with torch.no_grad():
        G.synthesis.b8.conv0.noise_strength.fill_(0.3)  # make the constant noise count
    z, t = _rand(3, 8, seed=7), _rand(3, 4, 8, seed=8)
    with torch.no_grad():
        img, timg = G.forward_jvp(z, t)
    torch.testing.assert_close(img, G(z), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(timg, _loop(G, z, t), rtol=1e-10, atol=1e-11)
    ws = G.mapping(z).contiguous()  # the mapping broadcasts w over num_ws (an expanded view)
    tw = _rand(3, 2, *ws.shape[1:], seed=9)
    with torch.no_grad():
        _, tws = G.synthesis.forward_jvp(ws, tw)
    torch.testing.assert_close(
        tws, _loop(lambda w: G.synthesis(w, noise_mode="const"), ws, tw), rtol=1e-10, atol=1e-11
    )


def test_engine_uses_the_rules_and_falls_back_where_they_do_not_reach():
    G = _generator()
    z, t = _rand(2, 8, seed=10), _rand(2, 3, 8, seed=11)
    _, t_rules, info = tangentlens.jvp(G, z, t, return_info=True)
    assert info.method == "forward-rules"
    _, t_generic, info = tangentlens.jvp(G, z, t, impl="reference", return_info=True)
    assert info.method == "forward"
    torch.testing.assert_close(t_rules, t_generic, rtol=1e-10, atol=1e-11)
    _, t_chunked = tangentlens.jvp(G, z, t, chunk_size=1)
    torch.testing.assert_close(t_chunked, t_rules, rtol=1e-12, atol=1e-12)
    R = _generator(synthesis_kwargs=dict(architecture="resnet"))
    _, t_res, info = tangentlens.jvp(R, z, t, return_info=True)
    assert info.method == "forward"  # resnet blocks are not covered by the stacked rules
    torch.testing.assert_close(t_res, _loop(R, z, t), rtol=1e-10, atol=1e-11)


def test_random_noise_is_refused_by_the_stacked_rules():
    G = _generator()
    ws = G.mapping(_rand(2, 8, seed=12))
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis.forward_jvp(ws, _rand(2, 1, *ws.shape[1:]), noise_mode="random")
    with pytest.raises(ValueError, match="tws"):
        G.synthesis.forward_jvp(ws, _rand(2, 1, 3, 8))


@pytest.mark.parametrize("k", [1, 7])
def test_generator_with_lpips_matches_float64_reference_jvp(k):
    """Engine route (stacked rules + LPIPS tangent norms) vs float64 torch.func of the reference path."""
    G = _generator()
    lp = tangentlens.LPIPS("vgg16", pretrained=False).double()
    z, v = _rand(2, 8, seed=20), _rand(2, k, 8, seed=21)

    def embedding(zz):
        return lp.embed(G(zz))

    with tangentlens._extension.default_impl("reference"):
        want = _loop(embedding, z, v).square().sum(-1)
    img, timg = tangentlens.jvp(G, z, v)
    got = lp.tangent_norms(img, timg)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=0)
    # float32 run: within float32 round-off of the float64 reference
    G32, lp32 = G.float(), lp.float()
    img32, timg32 = tangentlens.jvp(G32, z.float(), v.float())
    got32 = lp32.tangent_norms(img32, timg32).double()
    assert ((got32 - want).abs() / want.abs()).max() < 1e-3


@pytest.mark.parametrize("k", [1, 7, 64])
@pytest.mark.parametrize("demodulate, up", [(True, 1), (True, 2), (False, 1)])
def test_registered_modconv_rule_under_vmap_jvp(k, demodulate, up):
    """forward_rules.modulated_conv2d (the torch.func-registered rule) vs jvp of the reference, float64,
    with tangents in x, styles, weight and noise."""
    from tangentlens.resample import modulated_conv2d as reference

    B, I, O = 2, 3, 4
    x, s = _rand(B, I, 5, 6, seed=30), _rand(B, I, seed=31)
    weight, noise = _rand(O, I, 3, 3, seed=32), _rand(1, 1, 5 * up, 6 * up, seed=33)
    f = setup_filter([1, 3, 3, 1]).double() if up == 2 else None
    kw = dict(up=up, padding=1, resample_filter=f, flip_weight=(up == 1), demodulate=demodulate)
    tx, ts = _rand(k, B, I, 5, 6, seed=34), _rand(k, B, I, seed=35)
    tw, tn = _rand(k, O, I, 3, 3, seed=36), _rand(k, 1, 1, 5 * up, 6 * up, seed=37)

    def run(fn):
        return torch.func.vmap(
            lambda a, b, c, d: torch.func.jvp(
                lambda xx, ss, ww, nn: fn(xx, ww, ss, noise=nn, **kw), (x, s, weight, noise), (a, b, c, d)
            )
        )(tx, ts, tw, tn)

    y, ty = run(lambda *a, **k_: forward_rules.modulated_conv2d(*a, **k_, impl="native"))
    y_ref, ty_ref = run(reference)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ty, ty_ref, rtol=1e-11, atol=1e-11)
    # reverse mode through the rule is exact too
    xg = x.clone().requires_grad_(True)
    sg = s.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: forward_rules.modulated_conv2d(a, weight, b, noise=noise, **kw, impl="native"), (xg, sg)
    )


def test_generic_engine_path_uses_the_registered_rule():
    """torch.func through the native generator equals the reference generator, and is what jvp runs."""
    G = _generator()
    z, v = _rand(2, 8, seed=40), _rand(2, 3, 8, seed=41)
    _, t_native = tangentlens.jvp(lambda zz: G(zz), z, v)
    _, t_ref = tangentlens.jvp(lambda zz: G(zz), z, v, impl="reference")
    torch.testing.assert_close(t_native, t_ref, rtol=1e-10, atol=1e-11)
