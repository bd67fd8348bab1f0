"""The multi-tangent JVP engine: vmapped forward mode, chunking, coverage probe and exact fallbacks."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tangentlens
from conftest import requires_native
from tangentlens.jvp import JVPInfo, coverage


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 3, stride=2), nn.Softplus(), nn.Flatten()
    ).double()


def _loop_jvp(fn, x, t):
    return torch.stack([torch.func.jvp(fn, (x,), (t[:, i],))[1] for i in range(t.shape[1])], dim=1)


def _rand(*shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


class Warp(nn.Module):
    """A module whose grid_sample has no forward-mode rule in PyTorch."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.lin = nn.Linear(8, 4 * 4 * 2).double()

    def forward(self, z):
        grid = torch.tanh(self.lin(z)).reshape(-1, 4, 4, 2)
        img = torch.stack([z[:, :6].reshape(-1, 2, 3), z[:, 2:].reshape(-1, 2, 3)], dim=1)
        return F.grid_sample(img, grid, align_corners=False).flatten(1)


def test_matches_a_loop_of_single_jvps():
    net = _net()
    x, t = _rand(3, 2, 7, 6), _rand(3, 5, 2, 7, 6, seed=2)
    out, tout = tangentlens.jvp(net, x, t)
    torch.testing.assert_close(out, net(x), rtol=0, atol=0)
    torch.testing.assert_close(tout, _loop_jvp(net, x, t), rtol=1e-12, atol=1e-12)


def test_shared_tangents_broadcast_over_the_batch():
    net = _net()
    x, t = _rand(4, 2, 5, 5), _rand(3, 2, 5, 5, seed=2)
    _, tout = tangentlens.jvp(net, x, t)
    _, tfull = tangentlens.jvp(net, x, t.unsqueeze(0).expand(4, -1, -1, -1, -1))
    torch.testing.assert_close(tout, tfull, rtol=0, atol=0)


def test_chunking_does_not_change_the_result_and_follows_the_budget():
    net = _net()
    x, t = _rand(2, 2, 6, 6), _rand(2, 7, 2, 6, 6, seed=2)
    _, ref = tangentlens.jvp(net, x, t, chunk_size=7)
    for cs in (1, 3, 100):
        _, tout, info = tangentlens.jvp(net, x, t, chunk_size=cs, return_info=True)
        assert info.chunk_size == min(cs, 7) and info.num_chunks == -(-7 // min(cs, 7))
        torch.testing.assert_close(tout, ref, rtol=1e-13, atol=1e-13)
    _, tout, info = tangentlens.jvp(net, x, t, memory_budget=1, return_info=True)  # smallest budget: 1 each
    assert info.chunk_size == 1 and info.num_chunks == 7
    torch.testing.assert_close(tout, ref, rtol=1e-13, atol=1e-13)
    _, _, info = tangentlens.jvp(net, x, t, return_info=True)  # default budget: everything in one pass
    assert info.chunk_size == 7


def test_double_vjp_equals_forward_mode():
    net = _net()
    x, t = _rand(2, 2, 6, 6), _rand(2, 4, 2, 6, 6, seed=2)
    _, fwd = tangentlens.jvp(net, x, t)
    _, dv, info = tangentlens.jvp(net, x, t, method="double_vjp", return_info=True)
    assert info.method == "double_vjp"
    torch.testing.assert_close(dv, fwd, rtol=1e-12, atol=1e-12)


def test_op_without_forward_rule_is_reported_and_the_fallback_is_exact():
    w = Warp()
    z, t = _rand(3, 8), _rand(3, 4, 8, seed=2)
    report = coverage(w, z)
    assert report.method == "double_vjp" and not report.fully_supported
    assert any(u.op == "grid_sampler_2d" for u in report.unsupported)
    assert "grid_sampler_2d" in str(report)
    with pytest.warns(RuntimeWarning, match="grid_sampler_2d"):
        out, tout, info = tangentlens.jvp(w, z, t, return_info=True)
    assert info.method == "double_vjp" and info.report is not None
    eps = 1e-6
    fd = torch.stack([(w(z + eps * t[:, i]) - w(z - eps * t[:, i])) / (2 * eps) for i in range(4)], dim=1)
    torch.testing.assert_close(tout, fd, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(out, w(z), rtol=0, atol=0)
    with pytest.raises((NotImplementedError, RuntimeError), match="forward AD"):
        tangentlens.jvp(w, z, t, method="forward")


def test_leaf_module_coverage_names_the_submodule():
    class GridLayer(nn.Module):
        def forward(self, x):
            grid = torch.tanh(x[:, :32].reshape(-1, 4, 4, 2))
            return F.grid_sample(x[:, 32:].reshape(-1, 1, 2, 2), grid, align_corners=False).flatten(1)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 36), GridLayer(), nn.Linear(16, 3)).double()
    report = coverage(model, _rand(2, 5))
    assert [u.path for u in report.unsupported] == ["1"]
    assert report.unsupported[0].module_type == "GridLayer"


def test_lpips_under_the_engine_uses_reference_ops_for_the_tangents():
    lp = tangentlens.LPIPS("vgg16", pretrained=False).double()
    y = torch.rand(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 2 - 1
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) * 2 - 1
    t = _rand(2, 3, 3, 16, 16, seed=6)

    def dist(a):
        return lp(a, y)

    with tangentlens._extension.default_impl("reference"):
        ref = _loop_jvp(dist, x, t)
    _, tout, info = tangentlens.jvp(dist, x, t, return_info=True)
    assert info.method == "forward"
    torch.testing.assert_close(tout, ref, rtol=1e-10, atol=1e-12)
    # an explicitly native head has no forward rule: a clear error, never a zero tangent
    if tangentlens.NATIVE_AVAILABLE:
        lp_native = tangentlens.LPIPS("vgg16", pretrained=False, impl="native").double()
        with pytest.raises(RuntimeError, match="no forward-mode"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tangentlens.jvp(lambda a: lp_native(a, y), x, t)


@requires_native
def test_impl_switch_is_scoped():
    from tangentlens._extension import default_impl, resolve_impl

    assert resolve_impl("auto") == "native"
    with default_impl("reference"):
        assert resolve_impl("auto") == "reference"
        assert resolve_impl("native") == "native"
    assert resolve_impl("auto") == "native"


def test_reduced_precision_crosscheck_reports_the_error():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 8))
    x = torch.randn(6, 16)
    t = torch.randn(6, 3, 16)
    _, t32 = tangentlens.jvp(net, x, t)
    _, tbf, info = tangentlens.jvp(net, x, t, precision="bf16", crosscheck=2, return_info=True)
    assert isinstance(info, JVPInfo) and info.precision == "bf16" and info.crosscheck_points == 2
    assert 0 < info.crosscheck_rel_error < 0.1
    rel = (tbf - t32).abs().max() / t32.abs().max()
    assert rel < 0.1
    _, _, info = tangentlens.jvp(net, x, t, crosscheck=2, return_info=True)
    assert info.crosscheck_rel_error is None  # fp32: nothing to cross-check


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(tangents=torch.randn(2, 3, 5)), ValueError, "tangents: expected"),
        (dict(tangents=torch.randn(3, 3, 4, dtype=torch.float64)), TypeError, "dtype of primal"),
        (dict(chunk_size=0), ValueError, "chunk_size"),
        (dict(method="fd"), ValueError, "method"),
        (dict(precision="fp8"), ValueError, "precision"),
        (dict(crosscheck=-1), ValueError, "crosscheck"),
        (dict(memory_budget=-5), ValueError, "memory_budget"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    net = nn.Linear(4, 2)
    args = dict(primal=torch.randn(3, 4), tangents=torch.randn(3, 2, 4))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        tangentlens.jvp(net, args.pop("primal"), args.pop("tangents"), **args)
    with pytest.raises(TypeError, match="primal"):
        tangentlens.jvp(net, [1.0], torch.randn(1, 4))


@requires_native
def test_backward_only_native_ops_never_give_a_silent_zero_tangent():
    """PyTorch returns a zero tangent for a custom op with only a backward rule; the wrappers must not."""
    from tangentlens import ops
    from tangentlens.reference import lpips as ref

    f0, f1 = _rand(2, 4, 3, 3).abs(), _rand(2, 4, 3, 3, seed=2).abs()
    w, t = _rand(4, seed=3).abs(), _rand(2, 4, 3, 3, seed=4)
    _, tan = torch.func.jvp(lambda a: ops.lpips_layer_distance(a, f1, w), (f0,), (t,))
    _, want = torch.func.jvp(lambda a: ref.layer_distance(a, f1, w, 1e-10, 0), (f0,), (t,))
    assert want.abs().min() > 0
    torch.testing.assert_close(tan, want, rtol=1e-12, atol=0)
    with pytest.raises(RuntimeError, match="no forward-mode"):
        torch.func.jvp(lambda a: ops.lpips_layer_distance(a, f1, w, impl="native"), (f0,), (t,))
    a, b = _rand(3, 5), _rand(3, 5, seed=5)
    tt = torch.full((3,), 0.3, dtype=torch.float64)
    _, tan = torch.func.jvp(lambda x: tangentlens.paths.slerp(x, b, tt), (a,), (_rand(3, 5, seed=6),))
    _, want = torch.func.jvp(
        lambda x: tangentlens.paths.slerp(x, b, tt, impl="reference"), (a,), (_rand(3, 5, seed=6),)
    )
    torch.testing.assert_close(tan, want, rtol=1e-12, atol=1e-14)
