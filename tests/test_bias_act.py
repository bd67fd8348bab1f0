"""Fused bias + activation + gain + clamp (NVIDIA's bias_act): native kernels vs the reference, the
one-pass forward-mode rule (bias_act_jvp), autograd, vmap-over-jvp folding, errors."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import tangentlens.ops as ops
from conftest import ALL_DTYPES, requires_cuda, requires_native
from tangentlens.bias_act import bias_act
from tangentlens.reference import bias_act as ref

ACTS = list(ref.ACTIVATIONS)
CLAMPS = [None, 0.7]
# (shape, dim): any rank, bias along the first, a middle or the last dim (inner == 1), dim = -1.
CASES = [
    ((2, 5, 3, 4), 1),
    ((6, 7), 0),
    ((6, 7), 1),
    ((3, 4, 5), -1),
    ((4, 5, 3), 2),
    ((9,), 0),
    ((2, 3, 1, 5), 3),
]
TOL = {
    torch.float64: dict(rtol=1e-12, atol=1e-13),
    torch.float32: dict(rtol=2e-6, atol=2e-6),
    torch.float16: dict(rtol=4e-3, atol=4e-3),
    torch.bfloat16: dict(rtol=3e-2, atol=3e-2),
}

pytestmark = requires_native


def _rand(*shape, dtype=torch.float64, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)


def _inputs(shape, dim, dtype=torch.float64, bias=True, seed=0):
    x = _rand(*shape, dtype=dtype, seed=seed)
    b = _rand(shape[dim], dtype=dtype, seed=seed + 1, scale=0.5) if bias else None
    return x, b


def _ref_jvp(x, b, tx, tb, dim, act, clamp):
    """torch.func.jvp of the reference, one tangent at a time (no vmap: the oracle stays independent)."""
    d = dim % x.ndim
    outs = []
    for k in range(tx.shape[0]):
        if b is None:
            _, t = torch.func.jvp(lambda x_: ref.bias_act(x_, None, d, act, clamp=clamp), (x,), (tx[k],))
        else:
            tbk = torch.zeros_like(b) if tb is None else tb[k]
            _, t = torch.func.jvp(
                lambda x_, b_: ref.bias_act(x_, b_, d, act, clamp=clamp), (x, b), (tx[k], tbk)
            )
        outs.append(t)
    return torch.stack(outs)


class CountOps(TorchDispatchMode):
    """Records the tangentlens ops that reach the kernels (below every functorch transform)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "tangentlens":
            self.calls.append((func.__name__, [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]))
        return func(*args, **(kwargs or {}))


# ---- forward --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("clamp", CLAMPS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_matches_reference(dtype, act, bias, clamp):
    for shape, dim in CASES:
        x, b = _inputs(shape, dim, dtype, bias)
        got = ops.bias_act(x, b, dim, act, clamp=clamp, impl="native")
        want = ref.bias_act(x, b, dim % x.ndim, act, clamp=clamp)
        assert got.dtype == dtype and got.shape == x.shape
        torch.testing.assert_close(got, want, **TOL[dtype])
        torch.testing.assert_close(bias_act(x, b, dim, act, clamp=clamp), got, rtol=0, atol=0)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_forward_low_precision(dtype, act):
    for shape, dim in CASES[:4]:
        x, b = _inputs(shape, dim, dtype)
        got = ops.bias_act(x, b, dim, act, clamp=1.5, impl="native")
        want = ref.bias_act(x.double(), b.double(), dim % x.ndim, act, clamp=1.5).to(dtype)
        assert got.dtype == dtype
        torch.testing.assert_close(got, want, **TOL[dtype])


def test_alpha_gain_and_clamp_boundary():
    x, b = _inputs((3, 8, 5), 1)
    for act, alpha, gain in (
        ("lrelu", 0.1, 3.0),
        ("relu", None, -0.5),
        ("elu", None, 2.0),
        ("linear", 0.3, 1.0),
    ):
        got = ops.bias_act(x, b, 1, act, alpha=alpha, gain=gain, clamp=1.0, impl="native")
        torch.testing.assert_close(got, ref.bias_act(x, b, 1, act, alpha, gain, 1.0), **TOL[torch.float64])
    # clamp = 0 clamps everything to 0; a negative clamp (NVIDIA's -1) means none.
    assert ops.bias_act(x, b, 1, "linear", clamp=0.0, impl="native").abs().max() == 0
    torch.testing.assert_close(
        ops.bias_act(x, b, 1, "tanh", clamp=-1.0, impl="native"), torch.tanh(x + b[:, None])
    )


def test_non_contiguous_inputs():
    xw, bw = _rand(4, 10, 6), _rand(12, scale=0.5)
    x = xw[:, ::2].transpose(1, 2)  # [4, 6, 5], neither contiguous nor dense
    b = bw[::2][:5]
    assert not x.is_contiguous() and not b.is_contiguous()
    got = bias_act(x, b, 2, "swish", clamp=0.9)
    torch.testing.assert_close(got, ref.bias_act(x, b, 2, "swish", clamp=0.9), **TOL[torch.float64])
    tx = _rand(3, 6, 4, 5, seed=5).transpose(1, 2)  # [3, 4, 6, 5] non-contiguous
    tb = _rand(5, 3, seed=6).t()  # [3, 5] non-contiguous
    y, ty = ops.bias_act_jvp(x, b, tx, tb, 2, "swish", clamp=0.9, impl="native")
    torch.testing.assert_close(ty, _ref_jvp(x, b, tx, tb, 2, "swish", 0.9), **TOL[torch.float64])


def test_negative_dim_is_normalised():
    """Negative dims are accepted (dim + x.ndim); NVIDIA's code accepts only [0, ndim)."""
    x, b = _inputs((2, 3, 4), 2)
    torch.testing.assert_close(bias_act(x, b, -1, "lrelu"), bias_act(x, b, 2, "lrelu"), rtol=0, atol=0)
    torch.testing.assert_close(
        bias_act(x, b, -1, "lrelu", impl="reference"), bias_act(x, b, 2, "lrelu"), **TOL[torch.float64]
    )


def test_empty_and_scalar():
    x = torch.empty(0, 3, dtype=torch.float64)
    assert ops.bias_act(x, torch.ones(3, dtype=torch.float64), 1, "relu", impl="native").shape == (0, 3)
    y, ty = ops.bias_act_jvp(x, None, torch.empty(2, 0, 3, dtype=torch.float64), impl="native")
    assert y.shape == (0, 3) and ty.shape == (2, 0, 3)
    s = torch.tensor(0.3, dtype=torch.float64)
    y, ty = ops.bias_act_jvp(s, None, torch.ones(0, dtype=torch.float64), act="tanh", impl="native")
    assert ty.shape == (0,)
    torch.testing.assert_close(ops.bias_act(s, None, 0, "tanh", impl="native"), torch.tanh(s))


def test_nan_propagates():
    """NaN in x makes y NaN at that element only. Its tangent is what autograd of the reference gives: NaN for
    tanh (1 - y^2) without clamp, 0 with a clamp (torch.clamp's derivative is 0 at NaN); (piecewise-linear
    activations give a finite tangent: lrelu'(NaN) = alpha, as torch's leaky_relu backward)."""
    x, b = _inputs((2, 4, 3), 1)
    x[1, 2, 0] = float("nan")
    tx = _rand(2, 2, 4, 3, seed=3)
    for clamp in (None, 0.8):
        y, ty = ops.bias_act_jvp(x, b, tx, None, 1, "tanh", clamp=clamp, impl="native")
        assert torch.isnan(y).sum() == 1 and torch.isnan(y[1, 2, 0])
        want = _ref_jvp(x, b, tx, None, 1, "tanh", clamp)
        torch.testing.assert_close(ty, want, equal_nan=True, **TOL[torch.float64])
        assert torch.isnan(ty[:, 1, 2, 0]).all() == (clamp is None)


# ---- forward mode: bias_act_jvp ---------------------------------------------------------------------------


@pytest.mark.parametrize("clamp", CLAMPS)
@pytest.mark.parametrize("act", ACTS)
def test_jvp_matches_func_jvp(act, clamp):
    for k, (shape, dim) in zip((1, 7, 64), [CASES[0], CASES[2], CASES[3]], strict=True):
        x, b = _inputs(shape, dim)
        tx = _rand(k, *shape, seed=7)
        tb = _rand(k, shape[dim], seed=8)
        want = _ref_jvp(x, b, tx, tb, dim, act, clamp)
        y, ty = ops.bias_act_jvp(x, b, tx, tb, dim, act, clamp=clamp, impl="native")
        assert ty.shape == (k, *shape)
        torch.testing.assert_close(
            y, ref.bias_act(x, b, dim % x.ndim, act, clamp=clamp), **TOL[torch.float64]
        )
        torch.testing.assert_close(ty, want, **TOL[torch.float64])
        # The explicit-formula reference agrees with autograd's.
        _, ty_ref = ops.bias_act_jvp(x, b, tx, tb, dim, act, clamp=clamp, impl="reference")
        torch.testing.assert_close(ty_ref, want, **TOL[torch.float64])
        # Without b (and so without tb).
        _, ty0 = ops.bias_act_jvp(x, None, tx, None, dim, act, clamp=clamp, impl="native")
        torch.testing.assert_close(ty0, _ref_jvp(x, None, tx, None, dim, act, clamp), **TOL[torch.float64])


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_jvp_low_precision_vs_float64(dtype, act):
    shape, dim = (2, 6, 5), 1
    x, b = _inputs(shape, dim, dtype)
    tx, tb = _rand(7, *shape, dtype=dtype, seed=9), _rand(7, 6, dtype=dtype, seed=10)
    y, ty = ops.bias_act_jvp(x, b, tx, tb, dim, act, clamp=1.2, impl="native")
    y64, ty64 = ref.bias_act_jvp(x.double(), b.double(), tx.double(), tb.double(), dim, act, clamp=1.2)
    assert y.dtype == ty.dtype == dtype
    tol = TOL[dtype] if dtype != torch.float32 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y, y64.to(dtype), **tol)
    # Elements within rounding of the clamp boundary may switch sides in low precision: compare the rest.
    pre = ref.bias_act(x.double(), b.double(), dim, act)
    ok = ((pre.abs() - 1.2).abs() > 0.05).expand_as(ty)
    torch.testing.assert_close(ty[ok], ty64.to(dtype)[ok], **tol)


def test_jvp_clamp_boundary_inclusive():
    """At |pre| == clamp exactly the tangent passes (torch.clamp's derivative is 1 on the boundary)."""
    x = torch.tensor([[-2.0, -1.0, -0.5, 0.5, 1.0, 2.0]], dtype=torch.float64)
    tx = torch.ones(1, 1, 6, dtype=torch.float64)
    _, ty = ops.bias_act_jvp(x, None, tx, None, 1, "linear", clamp=1.0, impl="native")
    torch.testing.assert_close(ty, _ref_jvp(x, None, tx, None, 1, "linear", 1.0))
    assert ty.flatten().tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]


def test_jvp_finite_differences():
    x, b = _inputs((3, 4, 5), 1)
    tx, tb = _rand(2, 3, 4, 5, seed=11), _rand(2, 4, seed=12)
    h = 1e-6
    for act in ACTS:
        _, ty = ops.bias_act_jvp(x, b, tx, tb, 1, act, clamp=2.5, impl="native")
        for k in range(2):
            fp = ops.bias_act(x + h * tx[k], b + h * tb[k], 1, act, clamp=2.5, impl="native")
            fm = ops.bias_act(x - h * tx[k], b - h * tb[k], 1, act, clamp=2.5, impl="native")
            fd = (fp - fm) / (2 * h)
            pre = ref.bias_act(x, b, 1, act)
            ok = ((pre.abs() - 2.5).abs() > 1e-3) & ((x + b[:, None]).abs() > 1e-3)  # away from kinks
            torch.testing.assert_close(ty[k][ok], fd[ok], rtol=1e-6, atol=1e-6)


# ---- autograd, torch.func, vmap -------------------------------------------------------------------------


@pytest.mark.parametrize("act", ["lrelu", "swish", "softplus", "selu"])
def test_gradcheck_native(act):
    x, b = _inputs((2, 3, 4), 1)
    x.requires_grad_(True)
    b.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x_, b_: bias_act(x_, b_, 1, act, clamp=1.9), (x, b), check_forward_ad=True
    )
    assert torch.autograd.gradcheck(lambda x_, b_: ops.bias_act(x_, b_, 1, act, clamp=1.9), (x, b))
    assert torch.autograd.gradgradcheck(lambda x_, b_: bias_act(x_, b_, 1, act), (x, b))


@pytest.mark.parametrize("act", ACTS)
def test_backward_matches_reference(act):
    x, b = _inputs((3, 5, 4), 1, torch.float32)
    gy = _rand(3, 5, 4, dtype=torch.float32, seed=4)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    bs = [b.clone().requires_grad_(True) for _ in range(2)]
    bias_act(xs[0], bs[0], 1, act, clamp=0.9).backward(gy)
    ref.bias_act(xs[1], bs[1], 1, act, clamp=0.9).backward(gy)
    torch.testing.assert_close(xs[0].grad, xs[1].grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bs[0].grad, bs[1].grad, rtol=1e-5, atol=1e-5)


def test_forward_ad_and_func_jvp():
    import torch.autograd.forward_ad as fwAD

    x, b = _inputs((2, 4, 3), 1)
    tx = _rand(2, 4, 3, seed=13)
    want = _ref_jvp(x, b, tx[None], None, 1, "tanh", 0.6)[0]
    with fwAD.dual_level():
        y = bias_act(fwAD.make_dual(x, tx), b, 1, "tanh", clamp=0.6)
        torch.testing.assert_close(fwAD.unpack_dual(y).tangent, want, **TOL[torch.float64])
    _, t = torch.func.jvp(lambda x_: bias_act(x_, b, 1, "tanh", clamp=0.6), (x,), (tx,))
    torch.testing.assert_close(t, want, **TOL[torch.float64])


def test_vmap_over_jvp_is_one_launch():
    x, b = _inputs((2, 8, 3, 3), 1)
    T = _rand(16, 2, 8, 3, 3, seed=14)
    f = lambda x_: bias_act(x_, b, 1, "lrelu", clamp=1.0)  # noqa: E731
    with CountOps() as counter:
        out = torch.func.vmap(lambda t: torch.func.jvp(f, (x,), (t,))[1])(T)
    jvp_calls = [shapes for name, shapes in counter.calls if name.startswith("bias_act_jvp")]
    assert len(jvp_calls) == 1, counter.calls
    assert jvp_calls[0][2] == (16, 2, 8, 3, 3)  # tx carries all K = 16 tangents
    want = _ref_jvp(x, b, T, None, 1, "lrelu", 1.0)
    torch.testing.assert_close(out, want, **TOL[torch.float64])
    # Tangents of x and b, both vmapped.
    Tb = _rand(16, 8, seed=15)
    g = lambda x_, b_: bias_act(x_, b_, 1, "lrelu", clamp=1.0)  # noqa: E731
    with CountOps() as counter:
        out = torch.func.vmap(lambda t, tb: torch.func.jvp(g, (x, b), (t, tb))[1])(T, Tb)
    assert sum(name.startswith("bias_act_jvp") for name, _ in counter.calls) == 1
    torch.testing.assert_close(out, _ref_jvp(x, b, T, Tb, 1, "lrelu", 1.0), **TOL[torch.float64])


def test_vmap_over_inputs():
    """vmap over x (folded into a leading dim) and over b (one call per entry) stay correct."""
    X, b = _rand(5, 3, 4, seed=16), _rand(4, seed=17)
    B, T = _rand(5, 4, seed=18), _rand(5, 3, 4, seed=19)
    f = lambda x_, b_: bias_act(x_, b_, 1, "swish", clamp=0.8)  # noqa: E731
    fr = lambda x_, b_: ref.bias_act(x_, b_, 1, "swish", clamp=0.8)  # noqa: E731
    for in_dims, args in (((0, None), (X, b)), ((0, 0), (X, B)), ((None, 0), (X[0], B))):
        torch.testing.assert_close(
            torch.func.vmap(f, in_dims)(*args), torch.func.vmap(fr, in_dims)(*args), **TOL[torch.float64]
        )
    jf = lambda x_, t_: torch.func.jvp(lambda z: f(z, b), (x_,), (t_,))[1]  # noqa: E731
    jr = lambda x_, t_: torch.func.jvp(lambda z: fr(z, b), (x_,), (t_,))[1]  # noqa: E731
    torch.testing.assert_close(torch.func.vmap(jf)(X, T), torch.func.vmap(jr)(X, T), **TOL[torch.float64])
    torch.testing.assert_close(
        torch.func.jacfwd(lambda z: f(z, b))(X[0]),
        torch.func.jacrev(lambda z: fr(z, b))(X[0]),
        **TOL[torch.float64],
    )


def test_reference_impl_uses_plain_torch_ops():
    x, b = _inputs((2, 3, 4), 1)
    x.requires_grad_(True)
    y = bias_act(x, b, 1, "lrelu", clamp=0.5, impl="reference")
    assert "Clamp" in type(y.grad_fn).__name__
    y = bias_act(x, b, 1, "lrelu", clamp=0.5)
    assert "BiasAct" in type(y.grad_fn).__name__


def test_opcheck():
    x, b = _inputs((2, 3, 4), 1)
    tx, tb = _rand(3, 2, 3, 4, seed=20), _rand(3, 3, seed=21)
    torch.library.opcheck(torch.ops.tangentlens.bias_act.default, (x, b, 1, 2, 0.2, 1.4142, 0.9))
    torch.library.opcheck(
        torch.ops.tangentlens.bias_act.default, (x.clone().requires_grad_(True), b, 1, 8, 0.0, 1.0, -1.0)
    )
    torch.library.opcheck(torch.ops.tangentlens.bias_act_jvp.default, (x, b, tx, tb, 1, 8, 0.0, 1.4142, 0.9))
    torch.library.opcheck(
        torch.ops.tangentlens.bias_act_jvp.default, (x, None, tx, None, 0, 3, 0.0, 1.0, -1.0)
    )


# ---- errors ---------------------------------------------------------------------------------------------


def test_python_errors():
    x, b = _inputs((2, 3, 4), 1)
    tx = _rand(2, 2, 3, 4)
    with pytest.raises(ValueError, match="act: expected one of"):
        bias_act(x, b, 1, "gelu")
    with pytest.raises(ValueError, match=r"dim: expected an int in \[-3, 3\)"):
        bias_act(x, b, 3, "relu")
    with pytest.raises(ValueError, match=r"b: expected shape \[4\]"):
        bias_act(x, b, 2, "relu")
    with pytest.raises(TypeError, match="b: expected the dtype of x"):
        bias_act(x, b.float(), 1, "relu")
    with pytest.raises(ValueError, match=r"tx: expected shape \[K, \*x.shape\]"):
        ops.bias_act_jvp(x, b, tx[:, :1], None, 1, "relu")
    with pytest.raises(TypeError, match="tx: expected the dtype of x"):
        ops.bias_act_jvp(x, b, tx.float(), None, 1, "relu")
    with pytest.raises(ValueError, match=r"tb: expected shape \[K, C\] = \[2, 3\]"):
        ops.bias_act_jvp(x, b, tx, torch.zeros(2, 4, dtype=x.dtype), 1, "relu")
    with pytest.raises(ValueError, match="tb: tangents of b given without b"):
        ops.bias_act_jvp(x, None, tx, torch.zeros(2, 3, dtype=x.dtype), 1, "relu")
    with pytest.raises(TypeError, match="x.dtype"):
        bias_act(x.long(), None)


def test_native_errors():
    x, b = _inputs((2, 3, 4), 1)
    tx = _rand(2, 2, 3, 4)
    op, jop = torch.ops.tangentlens.bias_act, torch.ops.tangentlens.bias_act_jvp
    with pytest.raises(RuntimeError, match=r"act: expected an activation code in \[0, 9\), got 9"):
        op(x, b, 1, 9, 0.0, 1.0, -1.0)
    with pytest.raises(RuntimeError, match=r"dim: expected an integer in \[0, 3\).*got -1"):
        op(x, b, -1, 0, 0.0, 1.0, -1.0)
    with pytest.raises(RuntimeError, match=r"b: expected shape \[3\]"):
        op(x, b[:2], 1, 0, 0.0, 1.0, -1.0)
    with pytest.raises(RuntimeError, match="b: expected the dtype of x"):
        op(x, b.float(), 1, 0, 0.0, 1.0, -1.0)
    with pytest.raises(RuntimeError, match="x: expected a contiguous tensor"):
        op(x.transpose(0, 2), None, 1, 0, 0.0, 1.0, -1.0)
    with pytest.raises(RuntimeError, match=r"tx: expected shape \[K, \*x.shape\]"):
        jop(x, b, tx[:, :, :2], None, 1, 0, 0.0, 1.0, -1.0)
    with pytest.raises(RuntimeError, match=r"tb: expected shape \[2, 3\]"):
        jop(x, b, tx, torch.zeros(3, 3, dtype=x.dtype), 1, 0, 0.0, 1.0, -1.0)
    with pytest.raises(RuntimeError, match="gain: expected a finite number"):
        op(x, b, 1, 0, 0.0, float("inf"), -1.0)


# ---- CUDA -----------------------------------------------------------------------------------------------


@requires_cuda
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_cuda_matches_cpu(dtype):
    tol = TOL[dtype] if dtype != torch.float64 else dict(rtol=1e-11, atol=1e-12)
    for act in ACTS:
        for shape, dim in CASES:
            x, b = _inputs(shape, dim, dtype)
            tx, tb = _rand(5, *shape, dtype=dtype, seed=22), _rand(5, shape[dim], dtype=dtype, seed=23)
            y = ops.bias_act(x, b, dim, act, clamp=1.3, impl="native")
            yc = ops.bias_act(x.cuda(), b.cuda(), dim, act, clamp=1.3, impl="native")
            torch.testing.assert_close(yc.cpu(), y, **tol)
            y2, ty = ops.bias_act_jvp(x, b, tx, tb, dim, act, clamp=1.3, impl="native")
            y2c, tyc = ops.bias_act_jvp(
                x.cuda(), b.cuda(), tx.cuda(), tb.cuda(), dim, act, clamp=1.3, impl="native"
            )
            torch.testing.assert_close(y2c.cpu(), y2, **tol)
            pre = ref.bias_act(x.double(), b.double(), dim % x.ndim, act)
            ok = ((pre.abs() - 1.3).abs() > 0.05).expand_as(ty)
            torch.testing.assert_close(tyc.cpu()[ok], ty[ok], **tol)


def test_many_parallel_chunks():
    """Sizes above the CPU task grain: segments straddle task boundaries (inner == 1 and inner > 1)."""
    for shape, dim, k in (((50, 999), 1, 2), ((3, 37, 41, 13), 1, 3)):
        x, b = _inputs(shape, dim)
        tx, tb = _rand(k, *shape, seed=24), _rand(k, shape[dim], seed=25)
        y, ty = ops.bias_act_jvp(x, b, tx, tb, dim, "swish", clamp=1.0, impl="native")
        yr, tyr = ref.bias_act_jvp(x, b, tx, tb, dim, "swish", clamp=1.0)
        torch.testing.assert_close(y, yr, **TOL[torch.float64])
        torch.testing.assert_close(ty, tyr, **TOL[torch.float64])
        torch.testing.assert_close(
            ops.bias_act(x, b, dim, "swish", clamp=1.0, impl="native"), yr, **TOL[torch.float64]
        )
