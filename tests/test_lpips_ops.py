"""Fused LPIPS layer head: distance and tangent kernels vs the float64 formula, JVPs, layouts, errors."""

import math

import pytest
import torch

import tangentlens.ops as ops
from conftest import ALL_DTYPES, requires_cuda, requires_native
from tangentlens.reference import lpips as ref

IMPLS = ["reference", pytest.param("native", marks=requires_native)]
SHAPES = [(2, 64, 5, 7), (3, 13, 1, 1), (1, 3, 4, 4), (2, 130, 3, 3), (2, 1, 2, 3)]
MODES = ["outside", "inside"]
# Kernels accumulate per pixel in float32 (float64 for float64 maps); the reference is float64 throughout.
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-14)}
TOL_LOW = dict(rtol=3e-5, atol=1e-7)


def _rand(*shape, dtype=torch.float64, seed=0, relu=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    return (x.relu() + 0.05 * x if relu else x).to(dtype)


def _weight(c, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(c, generator=g, dtype=torch.float64) + 0.1).to(dtype)


def _layout(x, layout):
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "strided":  # a non-dense view: every other column of a wider map
        wide = torch.cat([x, x], dim=3)[..., ::2]
        wide[..., :] = x
        return wide
    return x.contiguous()


def _loop_distance(f0, f1, w, eps, mode):
    """Plain Python loops over the published formula (independent of any tensor code)."""
    n, c, h, wd = f0.shape
    out = []
    for i in range(n):
        tot = 0.0
        for y in range(h):
            for x in range(wd):
                v0 = [float(f0[i, k, y, x]) for k in range(c)]
                v1 = [float(f1[i, k, y, x]) for k in range(c)]
                s0, s1 = sum(v * v for v in v0), sum(v * v for v in v1)
                d0 = math.sqrt(s0) + eps if mode == "outside" else math.sqrt(s0 + eps)
                d1 = math.sqrt(s1) + eps if mode == "outside" else math.sqrt(s1 + eps)
                tot += sum(float(w[k]) * (v0[k] / d0 - v1[k] / d1) ** 2 for k in range(c))
        out.append(tot / (h * wd))
    return torch.tensor(out, dtype=torch.float64)


# ---- distance -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", MODES)
def test_distance_matches_loops(impl, mode):
    f0, f1 = _rand(2, 5, 3, 2, seed=2), _rand(2, 5, 3, 2, seed=3)
    # tiny features at one pixel make the eps convention matter
    f0[:, :, 0, 0] *= 1e-5
    w = _weight(5)
    eps = 1e-9
    got = ops.lpips_layer_distance(f0, f1, w, eps=eps, eps_mode=mode, impl=impl)
    torch.testing.assert_close(got, _loop_distance(f0, f1, w, eps, mode), rtol=1e-12, atol=0)
    other = "inside" if mode == "outside" else "outside"
    assert not torch.allclose(got, _loop_distance(f0, f1, w, eps, other), rtol=1e-6, atol=0)


@requires_native
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("mode", MODES)
def test_distance_native_matches_reference(shape, dtype, layout, mode):
    f0 = _layout(_rand(*shape, dtype=dtype, seed=4), layout)
    f1 = _layout(_rand(*shape, dtype=dtype, seed=5), layout)
    w = _weight(shape[1])
    eps = 1e-10 if mode == "outside" else 1e-8
    got = ops.lpips_layer_distance(f0, f1, w, eps=eps, eps_mode=mode, impl="native")
    want = ops.lpips_layer_distance(f0, f1, w, eps=eps, eps_mode=mode, impl="reference")
    assert got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert got.shape == (shape[0],) and (want > 0).all()
    torch.testing.assert_close(got, want, **TOL.get(dtype, TOL_LOW))


@requires_native
def test_distance_mixed_layouts_and_large_maps():
    f0 = _rand(2, 96, 37, 41, dtype=torch.float32, seed=6)  # pixel count not a multiple of the chunk
    f1 = _rand(2, 96, 37, 41, dtype=torch.float32, seed=7).contiguous(memory_format=torch.channels_last)
    w = _weight(96, dtype=torch.float32)
    want = ref.layer_distance(f0, f1, w, 1e-10, 0)
    torch.testing.assert_close(ops.lpips_layer_distance(f0, f1, w), want, **TOL_LOW)
    torch.testing.assert_close(ops.lpips_layer_distance(f1, f0, w), want, **TOL_LOW)


@requires_native
def test_distance_of_identical_maps_is_zero_and_nearby_maps_are_accurate():
    f0 = _rand(3, 64, 6, 6, dtype=torch.float32, seed=8)
    w = _weight(64, dtype=torch.float32)
    assert torch.equal(ops.lpips_layer_distance(f0, f0.clone(), w), torch.zeros(3))
    # a 1e-4 perturbation (a PPL finite difference): the fused form keeps ~1e-5 relative accuracy
    f1 = f0 + 1e-4 * _rand(3, 64, 6, 6, dtype=torch.float32, seed=9, relu=False)
    want = ref.layer_distance(f0.double(), f1.double(), w.double(), 1e-10, 0)
    torch.testing.assert_close(ops.lpips_layer_distance(f0, f1, w).double(), want, rtol=2e-3, atol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_distance_non_finite_inputs_propagate_per_sample(impl):
    f0, f1 = _rand(3, 8, 4, 4, seed=10), _rand(3, 8, 4, 4, seed=11)
    w = _weight(8)
    f0[1, 2, 1, 1] = float("nan")
    f1[2, 0, 3, 0] = float("inf")
    d = ops.lpips_layer_distance(f0, f1, w, impl=impl)
    assert torch.isfinite(d[0]) and torch.isnan(d[1]) and torch.isnan(d[2])


@pytest.mark.parametrize("impl", IMPLS)
def test_zero_features_are_finite(impl):
    f0, f1 = torch.zeros(2, 4, 3, 3, dtype=torch.float64), _rand(2, 4, 3, 3, seed=12)
    w = _weight(4)
    for mode in MODES:
        d = ops.lpips_layer_distance(f0, f1, w, eps_mode=mode, impl=impl)
        torch.testing.assert_close(
            d, ref.layer_distance(torch.zeros_like(f1), f1, w, 1e-10, 0), rtol=1e-6, atol=0
        )


# ---- tangent norms -----------------------------------------------------------------------------------


def _jvp_products(f, t, w, eps, mode):
    """Inner products of torch.func.jvp of the reference embedding e(f) = sqrt(w / HW) f_hat."""
    hw = f.shape[2] * f.shape[3]
    scale = torch.sqrt(w / hw).reshape(1, -1, 1, 1)
    m = 0 if mode == "outside" else 1

    def embed(x):
        return (scale * ref.normalize_channels(x, eps, m)).flatten(1)

    des = torch.stack([torch.func.jvp(embed, (f,), (t[:, k],))[1] for k in range(t.shape[1])], 1)
    return des @ des.transpose(1, 2)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape,k", [((2, 64, 5, 7), 3), ((3, 13, 1, 1), 1), ((1, 130, 3, 2), 5)])
def test_tangent_norm_matches_jvp(impl, mode, shape, k):
    f = _rand(*shape, seed=13)
    t = _rand(shape[0], k, *shape[1:], seed=14, relu=False)
    t[:, 0] += 3.0 * f  # a mostly radial tangent: its normalised tangent nearly cancels
    w = _weight(shape[1])
    eps = 1e-10 if mode == "outside" else 1e-8
    gram = _jvp_products(f, t, w, eps, mode)
    norms = ops.lpips_tangent_norm(f, t, w, eps=eps, eps_mode=mode, impl=impl)
    torch.testing.assert_close(norms, torch.diagonal(gram, dim1=1, dim2=2), rtol=1e-10, atol=1e-14)
    g = ops.lpips_tangent_norm(f, t, w, eps=eps, eps_mode=mode, gram=True, impl=impl)
    torch.testing.assert_close(g, gram, rtol=1e-10, atol=1e-14)
    if impl == "native":
        assert torch.equal(g, g.transpose(1, 2))  # the kernel fills both triangles from one sum


def _maps_and_tangents(shape, k, dtype, layout, seed):
    """A feature map in ``layout`` and k tangents [N, k, C, H, W] laid out to match (seeds seed, seed + 1)."""
    f = _layout(_rand(*shape, dtype=dtype, seed=seed), layout)
    t = _rand(shape[0], k, *shape[1:], dtype=dtype, seed=seed + 1, relu=False)
    if layout == "channels_last":
        t = t.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    elif layout == "strided":
        t = t.transpose(0, 1).contiguous().transpose(0, 1)
    return f, t


@requires_native
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("gram", [False, True])
@pytest.mark.parametrize("shape,k", [((2, 64, 5, 7), 3), ((1, 130, 1, 1), 2), ((2, 512, 3, 3), 4)])
def test_tangent_norm_native_matches_reference(dtype, layout, gram, shape, k):
    f, t = _maps_and_tangents(shape, k, dtype, layout, seed=15)
    w = _weight(shape[1])
    for mode in MODES:
        got = ops.lpips_tangent_norm(f, t, w, eps_mode=mode, gram=gram, impl="native")
        want = ops.lpips_tangent_norm(f, t, w, eps_mode=mode, gram=gram, impl="reference")
        assert got.shape == ((shape[0], k, k) if gram else (shape[0], k))
        scale = want.abs().amax()
        tol = 1e-12 if dtype == torch.float64 else 5e-5
        assert ((got - want).abs() <= tol * scale).all(), (got - want).abs().max() / scale


@requires_native
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("shape,k", [((2, 64, 5, 7), 17), ((1, 130, 1, 1), 24), ((2, 9, 6, 3), 40)])
def test_tangent_gram_gemm_matches_reference(monkeypatch, dtype, layout, shape, k):
    """Above GRAM_NATIVE_MAX_K tangents the Gram is a GEMM over bands of rows; tiny bands force several."""
    assert k > ops.GRAM_NATIVE_MAX_K
    monkeypatch.setattr(ops, "_GRAM_BAND_ELEMENTS", shape[0] * k * shape[1] * shape[3] * 2)  # 2 rows
    f, t = _maps_and_tangents(shape, k, dtype, layout, seed=25)
    w = _weight(shape[1])
    for mode in MODES:
        got = ops.lpips_tangent_norm(f, t, w, eps_mode=mode, gram=True, impl="native")
        want = ops.lpips_tangent_norm(f, t, w, eps_mode=mode, gram=True, impl="reference")
        small = ops.lpips_tangent_norm(f, t[:, :3], w, eps_mode=mode, gram=True, impl="native")  # the kernel
        assert got.shape == (shape[0], k, k) and got.dtype == small.dtype
        scale = want.abs().amax()
        tol = (
            1e-12 if dtype == torch.float64 else (5e-3 if dtype in (torch.float16, torch.bfloat16) else 5e-5)
        )
        assert ((got - want).abs() <= tol * scale).all(), (got - want).abs().max() / scale
        torch.testing.assert_close(got, got.transpose(1, 2))


@pytest.mark.parametrize("impl", IMPLS)
def test_tangent_at_zero_features(impl):
    """A pixel with f = 0: eps inside the sqrt is smooth (matches jvp); eps outside gives the one-sided
    derivative t / eps, where autograd's jvp of the eager form is NaN."""
    f = _rand(1, 6, 2, 2, seed=17)
    f[0, :, 1, 1] = 0.0
    t = _rand(1, 2, 6, 2, 2, seed=18, relu=False)
    w = _weight(6)
    inside = ops.lpips_tangent_norm(f, t, w, eps=1e-8, eps_mode="inside", impl=impl)
    torch.testing.assert_close(
        inside, torch.diagonal(_jvp_products(f, t, w, 1e-8, "inside"), dim1=1, dim2=2), rtol=1e-10, atol=0
    )
    eps = 1e-3
    out = ops.lpips_tangent_norm(f, t, w, eps=eps, eps_mode="outside", impl=impl)
    assert torch.isfinite(out).all()
    h = 1e-9  # one-sided difference quotient along each tangent
    for k in range(2):
        e0 = torch.sqrt(w / 4).reshape(1, -1, 1, 1) * ref.normalize_channels(f, eps, 0)
        e1 = torch.sqrt(w / 4).reshape(1, -1, 1, 1) * ref.normalize_channels(f + h * t[:, k], eps, 0)
        fd = ((e1 - e0) / h).square().sum()
        torch.testing.assert_close(out[0, k], fd, rtol=1e-4, atol=0)


# ---- autograd, opcheck -------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_distance(impl, mode):
    f0 = _rand(2, 5, 3, 2, seed=19).requires_grad_()
    f1 = _rand(2, 5, 3, 2, seed=20).requires_grad_()
    w = _weight(5).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b, c: ops.lpips_layer_distance(a, b, c, eps_mode=mode, impl=impl), (f0, f1, w)
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_gradgradcheck_distance(impl):
    # double backward (Hessians, e.g. of z' -> LPIPS(G(z), G(z'))) must not come back silently zero
    f0 = _rand(2, 5, 3, 2, seed=23).requires_grad_()
    f1 = _rand(2, 5, 3, 2, seed=24).requires_grad_()
    w = _weight(5)
    assert torch.autograd.gradgradcheck(lambda a, b: ops.lpips_layer_distance(a, b, w, impl=impl), (f0, f1))
    hess = torch.autograd.functional.hessian(
        lambda b: ops.lpips_layer_distance(f0.detach(), b, w, impl=impl).sum(), f1.detach()
    )
    assert hess.abs().max() > 0


@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck_tangent_norm(impl):
    f = _rand(2, 4, 2, 3, seed=21).requires_grad_()
    t = _rand(2, 2, 4, 2, 3, seed=22, relu=False).requires_grad_()
    w = _weight(4)
    for gram in (False, True):
        assert torch.autograd.gradcheck(
            lambda a, b, gram=gram: ops.lpips_tangent_norm(a, b, w, gram=gram, impl=impl), (f, t)
        )


@requires_native
def test_gradcheck_tangent_gram_gemm():
    k = ops.GRAM_NATIVE_MAX_K + 1
    f = _rand(1, 3, 2, 2, seed=23).requires_grad_()
    t = _rand(1, k, 3, 2, 2, seed=24, relu=False).requires_grad_()
    w = _weight(3)
    assert torch.autograd.gradcheck(lambda a, b: ops.lpips_tangent_norm(a, b, w, gram=True), (f, t))


@requires_native
def test_opcheck_lpips_ops():
    for dtype in (torch.float32, torch.float64):
        acc = dtype
        for fmt in (torch.contiguous_format, torch.channels_last):
            f0 = _rand(2, 7, 3, 5, dtype=dtype, seed=23).contiguous(memory_format=fmt)
            f1 = _rand(2, 7, 3, 5, dtype=dtype, seed=24).contiguous(memory_format=fmt)
            w = _weight(7, dtype=acc)
            torch.library.opcheck(torch.ops.tangentlens.lpips_layer_distance.default, (f0, f1, w, 1e-10, 0))
        f = _rand(2, 7, 3, 5, dtype=dtype, seed=25)
        t = _rand(2, 3, 7, 3, 5, dtype=dtype, seed=26, relu=False)
        for gram in (False, True):
            torch.library.opcheck(torch.ops.tangentlens.lpips_tangent_norm.default, (f, t, w, 1e-8, 1, gram))


@requires_native
def test_torch_compile_fullgraph_distance():
    def fn(a, b, w):
        return ops.lpips_layer_distance(a, b, w).sum()

    a, b, w = (
        _rand(2, 6, 4, 4, dtype=torch.float32, seed=27),
        _rand(2, 6, 4, 4, dtype=torch.float32),
        _weight(6),
    )
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(a, b, w.float()), fn(a, b, w.float()), rtol=0, atol=0)


# ---- bad input ---------------------------------------------------------------------------------------


def _bad_cases():
    f = _rand(2, 4, 3, 3)
    w = _weight(4)
    return [
        ((f, f[:1], w), {}, ValueError, "f1: expected the shape of f0"),
        ((f, f.float(), w), {}, TypeError, "f1: expected the dtype of f0"),
        ((f[0], f[0], w), {}, ValueError, "f0: expected a 4-D feature map"),
        ((f, f, w[:3]), {}, ValueError, r"weight: expected shape \[4\]"),
        ((f, f, w), {"eps_mode": "lpips"}, ValueError, "eps_mode: expected 'outside'"),
        ((f, f, w), {"eps": -1.0}, ValueError, "eps: expected a finite number"),
        ((f.int(), f.int(), w), {}, TypeError, "f0.dtype: expected one of"),
    ]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", range(7))
def test_distance_bad_arguments(impl, case):
    args, kwargs, exc, match = _bad_cases()[case]
    with pytest.raises(exc, match=match):
        ops.lpips_layer_distance(*args, impl=impl, **kwargs)


@pytest.mark.parametrize("impl", IMPLS)
def test_tangent_norm_bad_arguments(impl):
    f, w = _rand(2, 4, 3, 3), _weight(4)
    with pytest.raises(ValueError, match=r"tangents: expected shape \[2, K, 4, 3, 3\]"):
        ops.lpips_tangent_norm(f, _rand(2, 1, 4, 3, 2), w, impl=impl)
    with pytest.raises(ValueError, match=r"tangents: expected shape"):
        ops.lpips_tangent_norm(f, _rand(2, 4, 3, 3), w, impl=impl)
    with pytest.raises(TypeError, match="tangents: expected the dtype of f"):
        ops.lpips_tangent_norm(f, _rand(2, 1, 4, 3, 3, dtype=torch.float32), w, impl=impl)


@requires_native
def test_kernel_entry_checks():
    f, w = _rand(2, 4, 3, 3, dtype=torch.float32), _weight(4, dtype=torch.float32)
    op = torch.ops.tangentlens.lpips_layer_distance
    with pytest.raises(RuntimeError, match="f0: expected an NCHW-contiguous or channels_last tensor"):
        op(f[..., ::2], f[..., ::2], w, 1e-10, 0)
    with pytest.raises(RuntimeError, match="f1: expected the memory layout of f0"):
        op(f, f.contiguous(memory_format=torch.channels_last), w, 1e-10, 0)
    with pytest.raises(RuntimeError, match="weight: expected Double for Double features, got Float"):
        op(f.double(), f.double(), w, 1e-10, 0)
    with pytest.raises(RuntimeError, match="eps_mode: expected 0"):
        op(f, f, w, 1e-10, 2)
    t = _rand(2, 2, 4, 3, 3, dtype=torch.float32).transpose(0, 1).contiguous().transpose(0, 1)
    with pytest.raises(RuntimeError, match="tangents: expected a contiguous tensor like f"):
        torch.ops.tangentlens.lpips_tangent_norm(f, t[:, :, :, :, :], w, 1e-8, 1, False)


# ---- CUDA --------------------------------------------------------------------------------------------


@requires_cuda
@requires_native
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_cuda_matches_cpu(dtype, fmt):
    for shape in [
        (3, 64, 9, 11),
        (2, 13, 1, 1),
        (2, 512, 4, 4),
        (2, 37, 23, 29),
    ]:  # last: several pixel chunks
        f0 = _rand(*shape, dtype=dtype, seed=28).contiguous(memory_format=fmt)
        f1 = _rand(*shape, dtype=dtype, seed=29).contiguous(memory_format=fmt)
        t = _rand(shape[0], 3, *shape[1:], dtype=dtype, seed=30, relu=False)
        w = _weight(shape[1])
        tol = TOL.get(dtype, TOL_LOW)
        for mode in MODES:
            cpu = ops.lpips_layer_distance(f0, f1, w, eps_mode=mode)
            gpu = ops.lpips_layer_distance(f0.cuda(), f1.cuda(), w.cuda(), eps_mode=mode)
            torch.testing.assert_close(gpu.cpu(), cpu, **tol)
            for gram in (False, True):
                cpu = ops.lpips_tangent_norm(f0, t, w, eps_mode=mode, gram=gram)
                gpu = ops.lpips_tangent_norm(f0.cuda(), t.cuda(), w.cuda(), eps_mode=mode, gram=gram)
                torch.testing.assert_close(
                    gpu.cpu(), cpu, rtol=5e-5 if dtype != torch.float64 else 1e-12, atol=1e-7
                )
