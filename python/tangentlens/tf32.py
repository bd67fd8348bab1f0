"""TF32 emulation: float32 GEMMs and convolutions with their operands rounded to TF32, on any device.

NVIDIA tensor cores in TF32 mode read each float32 operand of a matrix product or convolution with its
mantissa cut from 23 to 10 bits (8-bit exponent kept), multiply exactly and accumulate in float32. A
CPU has no such unit, so ``precision="tf32"`` would silently mean float32 there. :func:`emulate_tf32`
reproduces the arithmetic instead: a dispatch mode rounds the float32 operands of every
``convolution`` / ``mm`` / ``bmm`` / ``addmm`` / ``baddbmm`` / ``addbmm`` (and of ``convolution_backward``)
to the nearest TF32 value, ties to even, then runs the op in float32. The product of two 11-bit
significands is exact in float32, so only the accumulation order differs from the hardware.

The mode sits below autograd and ``torch.func``, so it also sees the products of forward-mode tangents,
of vmapped batches and of backward passes: everything a GPU would run on its tensor cores. Elementwise
ops, reductions and our own kernels are left in float32, as on the GPU. NVIDIA does not specify how
the hardware converts; we round to nearest, ties to even (a truncating conversion would differ by at most
one TF32 ulp per operand).

Emulation is for checking numbers, not for speed: the rounding passes and the Python dispatch make a CPU run
about 1.6x slower than float32 (PPL, StyleGAN2 64² + LPIPS-VGG16).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["emulate_tf32", "round_to_tf32"]

_DROPPED_BITS = 13  # float32 has 23 explicit mantissa bits, TF32 keeps 10
_HALF_ULP = (1 << (_DROPPED_BITS - 1)) - 1
_KEEP_MASK = -(1 << _DROPPED_BITS)  # 0xFFFFE000 as a signed int32


def round_to_tf32(x: torch.Tensor) -> torch.Tensor:
    """Round a float32 tensor to the nearest TF32 value (ties to even); other dtypes pass unchanged.

    Works on the bit pattern: adding ``0x0FFF`` plus the lowest kept bit then clearing the 13 dropped bits
    is round-half-to-even on the magnitude (a carry out of the mantissa correctly bumps the exponent, and
    the largest finite values round to infinity as they would in hardware). Inf and NaN are kept as they are.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype != torch.float32:
        return x
    bits = x.contiguous().view(torch.int32)
    rounded = ((bits + _HALF_ULP + ((bits >> _DROPPED_BITS) & 1)) & _KEEP_MASK).view(torch.float32)
    return torch.where(torch.isfinite(x), rounded.view_as(x), x)


def _round(x: object) -> object:
    return round_to_tf32(x) if isinstance(x, torch.Tensor) else x


# op -> positions of the operands the tensor cores read (biases and the C of addmm stay float32)
_aten = torch.ops.aten
_OPERANDS = {
    _aten.convolution.default: (0, 1),
    _aten.convolution_backward.default: (0, 1, 2),
    _aten.mm.default: (0, 1),
    _aten.bmm.default: (0, 1),
    _aten.addmm.default: (1, 2),
    _aten.baddbmm.default: (1, 2),
    _aten.addbmm.default: (1, 2),
}


class _TF32Mode(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        positions = _OPERANDS.get(func)
        if positions is not None:
            args = tuple(_round(a) if i in positions else a for i, a in enumerate(args))
        return func(*args, **(kwargs or {}))


@contextmanager
def emulate_tf32() -> Iterator[None]:
    """Within the block, float32 convolutions and matrix products compute as TF32 tensor cores do."""
    with _TF32Mode():
        yield
