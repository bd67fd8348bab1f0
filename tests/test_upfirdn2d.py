"""Native upfirdn2d vs the reference composition; autograd, forward mode and the one-launch vmap rule."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import requires_cuda, requires_native
from tangentlens import resample
from tangentlens._extension import default_impl

pytestmark = requires_native

FILTERS = {
    "binomial": lambda: resample.setup_filter([1, 3, 3, 1]),
    "separable": lambda: torch.tensor([1.0, 2.0, 3.0]) / 6,
    "asym2d": lambda: torch.rand(3, 5, generator=torch.Generator().manual_seed(1)),
}
CASES = [
    dict(up=1, down=1, padding=0),
    dict(up=2, down=1, padding=[2, 1, 2, 1], gain=4),
    dict(up=1, down=2, padding=[1, 1, 1, 1], flip_filter=True),
    dict(up=[2, 1], down=[1, 2], padding=[-1, 2, 0, 3], gain=2.5),
    dict(up=3, down=2, padding=[-2, -1, 1, 0], flip_filter=True),
]


def _rand(*shape, dtype=torch.float64, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("fname", list(FILTERS))
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_native_matches_reference(fname, case, dtype):
    f, kw = FILTERS[fname](), CASES[case]
    x = _rand(2, 3, 7, 9, dtype=dtype, seed=case)
    got = resample.upfirdn2d(x, f, impl="native", **kw)
    want = resample.upfirdn2d(x.double(), f.double(), impl="reference", **kw)
    assert got.dtype == dtype and got.shape == want.shape
    tol = {torch.float64: 1e-12, torch.float32: 2e-6, torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype]
    scale = want.abs().max()
    assert (got.double() - want).abs().max() <= tol * scale * 8


def test_non_contiguous_input_and_upsample_helpers():
    f = resample.setup_filter([1, 3, 3, 1])
    x = _rand(2, 9, 8, 3, seed=3).permute(0, 3, 1, 2)  # channels-last view
    for fn in (resample.upsample2d, resample.downsample2d, resample.filter2d):  # default impl: native
        with default_impl("reference"):
            want = fn(x, f)
        torch.testing.assert_close(fn(x, f), want, rtol=1e-12, atol=1e-12)
    got = resample.upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], impl="native")
    want = resample.upfirdn2d(x.contiguous(), f, up=2, padding=[2, 1, 2, 1], impl="reference")
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_autograd_and_forward_mode():
    f = resample.setup_filter([1, 3, 3, 1]).double()
    kw = dict(up=2, down=1, padding=[2, 1, 2, 1], gain=4)
    x = _rand(2, 2, 5, 6, seed=4).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: resample.upfirdn2d(a, f, impl="native", **kw), (x,))
    assert torch.autograd.gradgradcheck(
        lambda a: resample.upfirdn2d(a, f, impl="native", **kw).square(), (x,)
    )
    t = _rand(2, 2, 5, 6, seed=5)
    y, ty = torch.func.jvp(lambda a: resample.upfirdn2d(a, f, impl="native", **kw), (x.detach(),), (t,))
    torch.testing.assert_close(ty, resample.upfirdn2d(t, f, impl="reference", **kw), rtol=1e-12, atol=1e-12)


class _Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "upfirdn2d" in str(func):
            self.calls.append(args[0].shape)
        return func(*args, **(kwargs or {}))


def test_vmap_over_jvp_is_one_launch():
    f = resample.setup_filter([1, 3, 3, 1]).double()
    x, T = _rand(2, 3, 6, 6, seed=6), _rand(16, 2, 3, 6, 6, seed=7)

    def fn(a):
        return resample.upfirdn2d(a, f, up=2, padding=[2, 1, 2, 1], gain=4, impl="native")

    counter = _Count()
    with counter:
        _, ty = torch.func.vmap(lambda t: torch.func.jvp(fn, (x,), (t,)), out_dims=(None, 0))(T)
    assert [tuple(s) for s in counter.calls] == [(2, 3, 6, 6), (32, 3, 6, 6)]  # primal, then all 16 tangents
    want = torch.stack(
        [resample.upfirdn2d(t, f, up=2, padding=[2, 1, 2, 1], gain=4, impl="reference") for t in T]
    )
    torch.testing.assert_close(ty, want, rtol=1e-12, atol=1e-12)


def test_opcheck_and_errors():
    fc = torch.rand(4, 4, dtype=torch.float32)
    x = torch.randn(2, 3, 5, 5)
    torch.library.opcheck(torch.ops.tangentlens.upfirdn2d, (x, fc, 2, 2, 1, 1, 2, 1, 2, 1))
    with pytest.raises(RuntimeError, match="f: expected"):
        torch.ops.tangentlens.upfirdn2d(x, fc.double(), 1, 1, 1, 1, 0, 0, 0, 0)
    with pytest.raises((RuntimeError, ValueError), match="padding"):
        resample.upfirdn2d(x, resample.setup_filter([1, 3, 3, 1]), padding=-3, impl="native")
    with pytest.raises(RuntimeError, match="x: expected"):
        torch.ops.tangentlens.upfirdn2d(x[0], fc, 1, 1, 1, 1, 0, 0, 0, 0)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    f = resample.setup_filter([1, 3, 3, 1])
    for kw in CASES:
        x = _rand(2, 3, 7, 9, dtype=dtype, seed=8)
        cpu = resample.upfirdn2d(x, f, impl="native", **kw)
        gpu = resample.upfirdn2d(x.cuda(), f.cuda(), impl="native", **kw)
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5 if dtype != torch.float64 else 1e-12, atol=1e-5)
