"""filtered_lrelu (StyleGAN3): NVIDIA's reference outputs, native kernels vs the reference twin, the K-tangent
forward rule vs torch.func.jvp of the reference, autograd, the one-launch vmap-over-jvp, opcheck, errors."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import scipy.signal
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import requires_cuda, requires_native
from tangentlens import ops, reference
from tangentlens.filtered_lrelu import filtered_lrelu, filtered_lrelu_jvp

pytestmark = requires_native

FIXTURE = Path(__file__).parent / "fixtures" / "stylegan3" / "filtered_lrelu.pt"
TOL = {
    torch.float64: dict(rtol=1e-12, atol=1e-13),
    torch.float32: dict(rtol=2e-5, atol=2e-6),
    torch.float16: dict(rtol=2e-2, atol=2e-2),
    torch.bfloat16: dict(rtol=1e-1, atol=1e-1),
}


def _rand(*shape, dtype=torch.float64, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)


def _filter(factor: int, separable: bool, seed: int) -> torch.Tensor:
    """A StyleGAN3-like Kaiser low-pass of 6 taps per factor (float32), or an asymmetric 2-D filter."""
    if factor == 1:
        f = torch.ones(1)
    else:
        f = torch.tensor(scipy.signal.firwin(6 * factor, 0.3, fs=2 * factor), dtype=torch.float32)
    if separable:
        return f
    g = torch.Generator().manual_seed(seed)
    return torch.outer(f, f) + 0.02 * torch.rand(len(f) + 1, len(f), generator=g)[: len(f)]


# (up, down, separable fu, separable fd, padding): StyleGAN3's layers are up 2 / 4, down 2 (or 1, 1 for ToRGB)
CASES = [
    (2, 2, True, True, [9, 8, 9, 8]),
    (4, 2, True, False, [-6, -9, -6, -9]),
    (2, 2, True, False, [11, 10, 11, 10]),
    (1, 1, True, True, [0, 0, 0, 0]),
    (2, 4, False, True, [3, 5, 2, 4]),
    (1, 2, False, False, [7, 6, 8, 9]),
    (4, 4, True, True, [-2, 3, 1, -1]),
]


def _case(i: int, dtype=torch.float64, shape=(2, 3, 20, 18)):
    up, down, su, sd, pad = CASES[i]
    x = _rand(*shape, dtype=dtype, seed=i)
    b = _rand(shape[1], dtype=dtype, seed=i + 50, scale=0.5)
    return x, _filter(up, su, i), _filter(down, sd, i + 1), b, dict(up=up, down=down, padding=pad)


class CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "tangentlens":
            self.calls.append((func.__name__, [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]))
        return func(*args, **(kwargs or {}))


# ---- NVIDIA's reference outputs (tests/fixtures/stylegan3/README.md) ------------------------------------


def test_matches_nvidias_reference_outputs():
    for case in torch.load(FIXTURE, weights_only=True):
        args = (case["x"], case["fu"], case["fd"], case["b"])
        y = reference.filtered_lrelu(*args, **case["kwargs"])
        assert torch.equal(y, case["y"])  # the same composition of the same ops
        torch.testing.assert_close(
            ops.filtered_lrelu(*args, **case["kwargs"], impl="native"), case["y"], **TOL[torch.float64]
        )


# ---- native vs reference ----------------------------------------------------------------------------------


@pytest.mark.parametrize("clamp", [None, 0.7])
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_native_matches_reference(dtype, case, clamp):
    x, fu, fd, b, kw = _case(case, dtype)
    for flip in (False, True):
        want = reference.filtered_lrelu(x.double(), fu, fd, b.double(), clamp=clamp, flip_filter=flip, **kw)
        got = ops.filtered_lrelu(x, fu, fd, b, clamp=clamp, flip_filter=flip, impl="native", **kw)
        assert got.dtype == dtype and got.shape == want.shape
        torch.testing.assert_close(got, want.to(dtype), **TOL[dtype])
        torch.testing.assert_close(
            filtered_lrelu(x, fu, fd, b, clamp=clamp, flip_filter=flip, **kw), got, rtol=0, atol=0
        )
    if clamp is not None:
        assert (want.abs() > 0).any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision(dtype):
    for case in (0, 1):
        x, fu, fd, b, kw = _case(case, dtype)
        got = ops.filtered_lrelu(x, fu, fd, b, clamp=1.0, impl="native", **kw)
        want = reference.filtered_lrelu(x.double(), fu, fd, b.double(), clamp=1.0, **kw)
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), want, **TOL[dtype])


def test_non_contiguous_inputs_identity_filters_and_no_bias():
    x = _rand(2, 13, 12, 4, seed=3).permute(0, 3, 1, 2)  # channels-last view [2, 4, 13, 12]
    fu, fd = _filter(2, True, 0), _filter(2, False, 1)
    b = _rand(8, seed=4)[::2]
    assert not x.is_contiguous() and not b.is_contiguous()
    for args in ((x, fu, fd, b), (x, None, None, None), (x, fu, None, b), (x, None, fd, None)):
        kw = dict(
            up=2 if args[1] is not None else 1, down=2 if args[2] is not None else 1, padding=[5, 4, 6, 7]
        )
        want = reference.filtered_lrelu(*(a.contiguous() if a is not None else a for a in args), **kw)
        torch.testing.assert_close(ops.filtered_lrelu(*args, impl="native", **kw), want, **TOL[torch.float64])


def test_parallel_planes_and_larger_images():
    x, fu, fd, b, kw = _case(1, shape=(3, 40, 20, 22))  # more planes than one task takes
    torch.testing.assert_close(
        ops.filtered_lrelu(x, fu, fd, b, clamp=0.5, impl="native", **kw),
        reference.filtered_lrelu(x, fu, fd, b, clamp=0.5, **kw),
        **TOL[torch.float64],
    )


# ---- the K-tangent forward rule ----------------------------------------------------------------------------


def _func_jvp_of_reference(x, fu, fd, b, tx, tb, **kw):
    """torch.func.jvp of the reference, one tangent at a time (no vmap: an independent oracle)."""
    outs = []
    for k in range(tx.shape[0]):
        tbk = torch.zeros_like(b) if tb is None else tb[k]
        _, t = torch.func.jvp(
            lambda x_, b_: reference.filtered_lrelu(x_, fu, fd, b_, **kw), (x, b), (tx[k], tbk)
        )
        outs.append(t)
    return torch.stack(outs)


@pytest.mark.parametrize("clamp", [None, 0.6])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_jvp_matches_func_jvp_of_reference(case, clamp):
    x, fu, fd, b, kw = _case(case, shape=(1, 3, 20, 18))
    kw["clamp"] = clamp
    for k, with_tb in ((1, False), (4, True)) if case == 0 else ((3, True),):
        tx = _rand(k, *x.shape, seed=case + 10)
        tb = _rand(k, x.shape[1], seed=case + 20) if with_tb else None
        want = _func_jvp_of_reference(x, fu, fd, b, tx, tb, **kw)
        y, ty = filtered_lrelu_jvp(x, fu, fd, b, tx, tb, impl="native", **kw)
        torch.testing.assert_close(y, reference.filtered_lrelu(x, fu, fd, b, **kw), **TOL[torch.float64])
        torch.testing.assert_close(ty, want, **TOL[torch.float64])
        _, ty_ref = reference.filtered_lrelu_jvp(x, fu, fd, b, tx, tb, **kw)  # the explicit-formula twin
        torch.testing.assert_close(ty_ref, want, **TOL[torch.float64])
        # and torch.func through the native op (its Function's jvp rule)
        _, t0 = torch.func.jvp(lambda x_: filtered_lrelu(x_, fu, fd, b, **kw), (x,), (tx[0],))
        torch.testing.assert_close(
            t0, _func_jvp_of_reference(x, fu, fd, b, tx[:1], None, **kw)[0], **TOL[torch.float64]
        )


def test_jvp_uses_the_primals_mask():
    """Where the clamp binds the tangent is 0; at the boundary it passes; at u = 0 the slope applies."""
    x = torch.tensor([[[[-2.0, -1.0, 0.0, 0.5, 1.0, 3.0]]]], dtype=torch.float64)
    tx = torch.ones(1, *x.shape, dtype=torch.float64)
    y, ty = filtered_lrelu_jvp(x, None, None, None, tx, gain=1.0, slope=0.25, clamp=1.0, impl="native")
    torch.testing.assert_close(
        y.flatten(), torch.tensor([-0.5, -0.25, 0.0, 0.5, 1.0, 1.0], dtype=torch.float64)
    )
    assert ty.flatten().tolist() == [0.25, 0.25, 0.25, 1.0, 1.0, 0.0]
    assert (
        ty.flatten().tolist()
        == _func_jvp_of_reference(
            x, None, None, torch.zeros(1, dtype=torch.float64), tx, None, gain=1.0, slope=0.25, clamp=1.0
        )
        .flatten()
        .tolist()
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_jvp_low_precision(dtype):
    x, fu, fd, b, kw = _case(0, dtype)
    tx = _rand(4, *x.shape, dtype=dtype, seed=5)
    _, ty = filtered_lrelu_jvp(x, fu, fd, b, tx, impl="native", **kw)
    _, want = reference.filtered_lrelu_jvp(x.double(), fu, fd, b.double(), tx.double(), **kw)
    torch.testing.assert_close(ty.double(), want, **TOL[dtype])


def test_vmap_over_jvp_is_one_launch():
    x, fu, fd, b, kw = _case(0, shape=(1, 2, 16, 14))
    T = _rand(8, *x.shape, seed=6)
    f = lambda x_: filtered_lrelu(x_, fu, fd, b, clamp=0.8, **kw)  # noqa: E731
    with CountOps() as counter:
        out = torch.func.vmap(lambda t: torch.func.jvp(f, (x,), (t,))[1])(T)
    calls = [shapes for name, shapes in counter.calls if name.startswith("filtered_lrelu_jvp")]
    assert len(calls) == 1 and calls[0][4] == (8, *x.shape), counter.calls  # tx carries all K = 8
    torch.testing.assert_close(
        out, _func_jvp_of_reference(x, fu, fd, b, T, None, clamp=0.8, **kw), **TOL[torch.float64]
    )
    # tangents of x and b, both vmapped; and a batch of x (vmap over inputs)
    Tb = _rand(8, x.shape[1], seed=7)
    g = lambda x_, b_: filtered_lrelu(x_, fu, fd, b_, clamp=0.8, **kw)  # noqa: E731
    with CountOps() as counter:
        out = torch.func.vmap(lambda t, tb: torch.func.jvp(g, (x, b), (t, tb))[1])(T, Tb)
    assert sum(name.startswith("filtered_lrelu_jvp") for name, _ in counter.calls) == 1
    torch.testing.assert_close(
        out, _func_jvp_of_reference(x, fu, fd, b, T, Tb, clamp=0.8, **kw), **TOL[torch.float64]
    )
    X = _rand(3, *x.shape, seed=8)
    r = lambda x_: reference.filtered_lrelu(x_, fu, fd, b, clamp=0.8, **kw)  # noqa: E731
    torch.testing.assert_close(torch.func.vmap(f)(X), torch.func.vmap(r)(X), **TOL[torch.float64])
    jf = lambda x_, t_: torch.func.jvp(f, (x_,), (t_,))[1]  # noqa: E731
    jr = lambda x_, t_: torch.func.jvp(r, (x_,), (t_,))[1]  # noqa: E731
    torch.testing.assert_close(
        torch.func.vmap(jf)(X, T[:3]), torch.func.vmap(jr)(X, T[:3]), **TOL[torch.float64]
    )


# ---- autograd, opcheck ----------------------------------------------------------------------------------


def test_gradcheck():
    x, fu, fd, b, kw = _case(0, shape=(1, 1, 5, 4))
    x.requires_grad_(True)
    b.requires_grad_(True)
    kw["clamp"] = 0.9
    assert torch.autograd.gradcheck(
        lambda x_, b_: filtered_lrelu(x_, fu, fd, b_, **kw), (x, b), check_forward_ad=True
    )
    assert torch.autograd.gradcheck(lambda x_, b_: ops.filtered_lrelu(x_, fu, fd, b_, **kw), (x, b))
    assert torch.autograd.gradgradcheck(lambda x_, b_: filtered_lrelu(x_, fu, fd, b_, **kw).square(), (x, b))


def test_backward_matches_reference_and_filters_requiring_grad_take_the_reference():
    x, fu, fd, b, kw = _case(2, torch.float32)
    gy = _rand(*ops.filtered_lrelu(x, fu, fd, b, **kw).shape, dtype=torch.float32, seed=9)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    bs = [b.clone().requires_grad_(True) for _ in range(2)]
    filtered_lrelu(xs[0], fu, fd, bs[0], clamp=0.7, **kw).backward(gy)
    reference.filtered_lrelu(xs[1], fu, fd, bs[1], clamp=0.7, **kw).backward(gy)
    torch.testing.assert_close(xs[0].grad, xs[1].grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bs[0].grad, bs[1].grad, rtol=1e-4, atol=1e-4)
    fu_g = fu.clone().requires_grad_(True)
    filtered_lrelu(x, fu_g, fd, b, **kw).sum().backward()
    assert fu_g.grad is not None and fu_g.grad.abs().sum() > 0


def test_opcheck():
    x, fu, fd, b, kw = _case(0, torch.float32, shape=(2, 2, 6, 6))
    xx, fu_c, fd_c, pads, g, s, c = ops._filtered_lrelu_args(
        x, fu, fd, b, 2, 2, kw["padding"], 1.4, 0.2, 0.9, False
    )
    args = (xx, fu_c, fd_c, b, 2, 2, *pads, g, s, c)
    torch.library.opcheck(torch.ops.tangentlens.filtered_lrelu.default, args)
    torch.library.opcheck(
        torch.ops.tangentlens.filtered_lrelu.default, (xx.clone().requires_grad_(True), *args[1:])
    )
    torch.library.opcheck(
        torch.ops.tangentlens.filtered_lrelu.default, (xx, fu_c, fd_c, None, 2, 2, *pads, g, s, -1.0)
    )
    tx, tb = _rand(3, *x.shape, dtype=torch.float32, seed=2), _rand(3, 2, dtype=torch.float32, seed=3)
    torch.library.opcheck(
        torch.ops.tangentlens.filtered_lrelu_jvp.default, (xx, fu_c, fd_c, b, tx, tb, 2, 2, *pads, g, s, c)
    )
    torch.library.opcheck(
        torch.ops.tangentlens.filtered_lrelu_jvp.default,
        (xx, fu_c, fd_c, None, tx, None, 2, 2, *pads, g, s, c),
    )


# ---- errors ---------------------------------------------------------------------------------------------


def test_python_errors():
    x, fu, fd, b, kw = _case(0)
    with pytest.raises(ValueError, match="x: expected a 4-D tensor"):
        filtered_lrelu(x[0], fu, fd, b, **kw)
    with pytest.raises(ValueError, match="up: expected an int >= 1, got 0"):
        filtered_lrelu(x, fu, fd, b, up=0)
    with pytest.raises(ValueError, match="clamp: expected None or a number >= 0, got -1"):
        filtered_lrelu(x, fu, fd, b, clamp=-1, **kw)
    with pytest.raises(ValueError, match="fu: expected None or a non-empty 1-D"):
        filtered_lrelu(x, torch.zeros(2, 2, 2), fd, b, **kw)
    with pytest.raises(ValueError, match=r"b: expected None or shape \[3\]"):
        filtered_lrelu(x, fu, fd, b[:2], **kw)
    with pytest.raises(TypeError, match="b: expected the dtype of x"):
        filtered_lrelu(x, fu, fd, b.float(), **kw)
    with pytest.raises(ValueError, match="padding: the upsampled, padded and filtered input"):
        filtered_lrelu(x, fu, fd, b, up=2, down=2, padding=-8)
    with pytest.raises(ValueError, match="gain: expected a finite number"):
        filtered_lrelu(x, fu, fd, b, gain=float("inf"), **kw)
    with pytest.raises(ValueError, match=r"tx: expected shape \[K, \*x.shape\]"):
        filtered_lrelu_jvp(x, fu, fd, b, x, **kw)
    with pytest.raises(ValueError, match="tb: tangents of b given without b"):
        filtered_lrelu_jvp(x, fu, fd, None, x[None], torch.zeros(1, 3, dtype=x.dtype), **kw)


def test_native_errors():
    x, fu, fd, b, kw = _case(0)
    xx, fu_c, fd_c, pads, g, s, c = ops._filtered_lrelu_args(
        x, fu, fd, b, 2, 2, kw["padding"], 1.4, 0.2, None, False
    )
    op, jop = torch.ops.tangentlens.filtered_lrelu, torch.ops.tangentlens.filtered_lrelu_jvp
    with pytest.raises(RuntimeError, match="fu: expected Double for Double input, got Float"):
        op(xx, fu_c.float(), fd_c, b, 2, 2, *pads, g, s, c)
    with pytest.raises(RuntimeError, match="x: expected a contiguous tensor"):
        op(xx.transpose(2, 3), fu_c, fd_c, b, 2, 2, *pads, g, s, c)
    with pytest.raises(RuntimeError, match=r"b: expected shape \[3\]"):
        op(xx, fu_c, fd_c, b[:2], 2, 2, *pads, g, s, c)
    with pytest.raises(RuntimeError, match="down: expected an integer >= 1"):
        op(xx, fu_c, fd_c, b, 2, 0, *pads, g, s, c)
    with pytest.raises(RuntimeError, match="padding: the upsampled"):
        op(xx, fu_c, fd_c, b, 2, 2, -9, -9, -9, -9, g, s, c)
    with pytest.raises(RuntimeError, match=r"tx: expected shape \[K, N, C, H, W\]"):
        jop(xx, fu_c, fd_c, b, xx, None, 2, 2, *pads, g, s, c)
    with pytest.raises(RuntimeError, match=r"tb: expected shape \[1, 3\]"):
        jop(xx, fu_c, fd_c, b, xx[None], torch.zeros(2, 3, dtype=xx.dtype), 2, 2, *pads, g, s, c)


# ---- CUDA -----------------------------------------------------------------------------------------------


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    tol = TOL[dtype] if dtype != torch.float64 else dict(rtol=1e-11, atol=1e-12)
    for case, clamp in itertools.product(range(len(CASES)), (None, 0.7)):
        x, fu, fd, b, kw = _case(case, dtype)
        tx, tb = _rand(3, *x.shape, dtype=dtype, seed=11), _rand(3, x.shape[1], dtype=dtype, seed=12)
        y, ty = ops.filtered_lrelu_jvp(x, fu, fd, b, tx, tb, clamp=clamp, impl="native", **kw)
        yc, tyc = ops.filtered_lrelu_jvp(
            x.cuda(), fu.cuda(), fd.cuda(), b.cuda(), tx.cuda(), tb.cuda(), clamp=clamp, impl="native", **kw
        )
        torch.testing.assert_close(yc.cpu(), y, **tol)
        torch.testing.assert_close(
            ops.filtered_lrelu(x.cuda(), fu.cuda(), fd.cuda(), b.cuda(), clamp=clamp, **kw).cpu(), y, **tol
        )
        if dtype in (
            torch.float64,
            torch.float32,
        ):  # the mask may differ where u rounds across 0 or the clamp
            torch.testing.assert_close(tyc.cpu(), ty, **tol)
