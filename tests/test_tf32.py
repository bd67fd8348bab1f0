"""TF32 emulation: the rounding against an independent float64 construction, and the dispatch mode on
forward, forward-mode (vmap(jvp)) and backward products."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import jvp, vmap

from tangentlens.tf32 import emulate_tf32, round_to_tf32


def _tf32_reference(v: float) -> float:
    """Nearest value with an 11-bit significand (ties to the even one), built with frexp in float64."""
    if not math.isfinite(v) or v == 0.0:
        return v
    m, e = math.frexp(v)  # v = m 2^e, 0.5 <= |m| < 1
    e = max(e, -125)  # float32 subnormals: the grid spacing stops shrinking below 2^-126
    scaled = math.ldexp(v, 11 - e)  # the kept bits become the integer part
    lo = math.floor(scaled)
    frac = scaled - lo
    q = lo + 1 if frac > 0.5 or (frac == 0.5 and lo % 2 == 1) else lo
    out = math.ldexp(q, e - 11)
    return out if abs(out) <= 3.4028234663852886e38 else math.copysign(math.inf, v)


def _reference_tensor(x: torch.Tensor) -> torch.Tensor:
    return torch.tensor([_tf32_reference(v) for v in x.double().flatten().tolist()], dtype=torch.float64)


def test_round_to_tf32_matches_float64_construction() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, generator=g) * torch.logspace(-40, 38, 4000).float()
    one = torch.tensor(1.0)
    ulp = 2.0**-10
    edge = torch.tensor(
        [
            1 + ulp / 2,  # tie, rounds down to even
            1 + 3 * ulp / 2,  # tie, rounds up to even
            1 + ulp / 2 + 2**-20,  # just above a tie
            -(1 + 3 * ulp / 2),
            2.0 - ulp / 4,  # carry into the exponent
            3.4e38,  # rounds to the largest TF32 value
            3.4028234663852886e38,  # the largest float32 rounds to infinity
            1e-40,  # subnormal
            -0.0,
        ]
    ).float()
    x = torch.cat([x, edge, one.reshape(1)])
    got = round_to_tf32(x)
    torch.testing.assert_close(got.double(), _reference_tensor(x), rtol=0, atol=0)
    assert torch.signbit(got[-2]) and got[-2] == 0
    # non-finite values pass through
    special = torch.tensor([math.inf, -math.inf, math.nan])
    out = round_to_tf32(special)
    assert out[0] == math.inf and out[1] == -math.inf and math.isnan(out[2])


def test_round_to_tf32_layouts_and_dtypes() -> None:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(6, 10, generator=g)
    view = base.t()[::2]  # non-contiguous
    torch.testing.assert_close(round_to_tf32(view), round_to_tf32(view.contiguous()), rtol=0, atol=0)
    assert round_to_tf32(view).shape == view.shape
    # the kept significand has at most 11 bits and the error is at most half a TF32 ulp
    rel = ((round_to_tf32(base) - base).abs() / base.abs()).max()
    assert 0 < rel <= 2.0**-11
    for dt in (torch.float64, torch.float16, torch.bfloat16):
        y = base.to(dt)
        assert round_to_tf32(y) is y
    with pytest.raises(TypeError, match="x: expected a torch.Tensor"):
        round_to_tf32([1.0])  # type: ignore[arg-type]


def _conv_setup(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 5, 9, 9, generator=g)
    w = torch.randn(7, 5, 3, 3, generator=g)
    b = torch.randn(7, generator=g)
    return x, w, b


def test_emulated_products_round_their_operands() -> None:
    x, w, b = _conv_setup(2)
    with emulate_tf32():
        y = F.conv2d(x, w, b, padding=1)
    exact = F.conv2d(round_to_tf32(x).double(), round_to_tf32(w).double(), b.double(), padding=1)
    plain = F.conv2d(x.double(), w.double(), b.double(), padding=1)
    # float32 accumulation of exact products vs TF32-level operand error
    assert (y.double() - exact).abs().max() < 1e-5 * plain.abs().max()
    assert (y.double() - plain).abs().max() > 1e-4 * plain.abs().max()

    g = torch.Generator().manual_seed(3)
    a, m = torch.randn(4, 6, 8, generator=g), torch.randn(4, 8, 5, generator=g)
    c = torch.randn(5, generator=g)
    with emulate_tf32():
        outs = [a @ m, torch.bmm(a, m), F.linear(a[0], m[0].t(), c), torch.baddbmm(c, a, m)]
    ra, rm = round_to_tf32(a).double(), round_to_tf32(m).double()
    refs = [ra @ rm, ra @ rm, ra[0] @ rm[0] + c.double(), c.double() + ra @ rm]
    for out, ref in zip(outs, refs, strict=True):
        assert out.dtype == torch.float32
        torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-5)
    # float64 products are not TF32 products
    with emulate_tf32():
        d = a.double() @ m.double()
    torch.testing.assert_close(d, a.double() @ m.double(), rtol=0, atol=0)


def test_emulation_reaches_tangents_and_backward() -> None:
    x, w, _ = _conv_setup(4)
    g = torch.Generator().manual_seed(5)
    tangents = torch.randn(2, *x.shape, generator=g)

    def f(inp: torch.Tensor) -> torch.Tensor:
        return F.conv2d(inp, w, padding=1)

    with emulate_tf32():
        tan = vmap(lambda t: jvp(f, (x,), (t,))[1])(tangents)
    ref = F.conv2d(round_to_tf32(tangents.flatten(0, 1)).double(), round_to_tf32(w).double(), padding=1)
    torch.testing.assert_close(tan.flatten(0, 1).double(), ref, rtol=1e-5, atol=1e-5)

    cot = torch.randn(3, 7, 9, 9, generator=g)
    xr = x.clone().requires_grad_()
    with emulate_tf32():
        (grad,) = torch.autograd.grad(f(xr), xr, cot)
    ref = torch.nn.grad.conv2d_input(
        x.shape, round_to_tf32(w).double(), round_to_tf32(cot).double(), padding=1
    )
    torch.testing.assert_close(grad.double(), ref, rtol=1e-5, atol=1e-5)
    plain = torch.nn.grad.conv2d_input(x.shape, w.double(), cot.double(), padding=1)
    assert (grad.double() - plain).abs().max() > 1e-4 * plain.abs().max()
