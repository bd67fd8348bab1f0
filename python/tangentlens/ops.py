"""Typed wrappers over ``torch.ops.tangentlens.*`` with their fake (meta) kernels and autograd.

Every op has a pure-PyTorch twin in :mod:`tangentlens.reference`; ``impl="auto"`` (the default) runs
the compiled kernel when it is available for the device and the reference otherwise,
``impl="reference"`` forces the reference, ``impl="native"`` forces the kernel (an error where it
cannot run).
"""

from __future__ import annotations

import torch

from tangentlens import reference
from tangentlens._extension import NATIVE_AVAILABLE, Impl, resolve_impl

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_U64 = 1 << 64

__all__ = ["FLOAT_DTYPES", "philox4x32_10", "philox_normal"]


def check_u64(value: object, name: str) -> int:
    """An integer in [0, 2^64): seeds and sample indices are unsigned 64-bit counters."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int in [0, 2**64), got {type(value).__name__}")
    if not 0 <= value < _U64:
        raise ValueError(f"{name}: expected an int in [0, 2**64), got {value}")
    return value


def as_i64(value: int) -> int:
    """The int64 carrying the same 64 bits (the op schema has no unsigned type)."""
    return value - _U64 if value >= 1 << 63 else value


def check_count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}: expected a non-negative int, got {value!r}")
    return value


def check_float_dtype(dtype: object, name: str = "dtype") -> torch.dtype:
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected one of float16, bfloat16, float32, float64, got {dtype}")
    return dtype  # type: ignore[return-value]


def philox4x32_10(counters: torch.Tensor, seed: int, *, impl: Impl = "auto") -> torch.Tensor:
    """Raw Philox4x32-10 (Random123's bijection) of ``counters`` int64 [N, 4] (uint32 words) under
    key (lo32(seed), hi32(seed)); returns int64 [N, 4] of uint32 words."""
    check_u64(seed, "seed")
    if not isinstance(counters, torch.Tensor) or counters.dtype != torch.int64:
        raise TypeError(
            f"counters: expected an int64 tensor, got {getattr(counters, 'dtype', type(counters))}"
        )
    if counters.dim() != 2 or counters.shape[1] != 4:
        raise ValueError(f"counters: expected shape [N, 4], got {tuple(counters.shape)}")
    if counters.numel() and (int(counters.min()) < 0 or int(counters.max()) > 0xFFFFFFFF):
        raise ValueError("counters: expected uint32 words in [0, 2**32)")
    if resolve_impl(impl, counters.device) == "reference":
        return reference.philox4x32_10(counters, seed)
    return torch.ops.tangentlens.philox4x32_10(counters, as_i64(seed))


def philox_normal(
    seed: int,
    start: int,
    count: int,
    dim: int,
    *,
    stream: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    out: torch.Tensor | None = None,
    impl: Impl = "auto",
) -> torch.Tensor:
    """Standard normals ``[count, dim]`` from the counter-based generator.

    Row ``i`` depends only on ``(seed, start + i, stream)``: any chunking of an index range gives
    bit-identical rows, on CPU and CUDA, and fp32/fp16/bf16 rows are the rounded fp64 rows.
    ``out`` (``[count, dim]``, unit stride along dim 1, e.g. a row slice of a larger buffer) is
    written in place and returned.
    """
    check_u64(seed, "seed")
    check_u64(start, "start")
    check_count(count, "count")
    check_count(dim, "dim")
    if isinstance(stream, bool) or not isinstance(stream, int) or not 0 <= stream < 1 << 32:
        raise ValueError(f"stream: expected an int in [0, 2**32), got {stream!r}")
    if out is None:
        check_float_dtype(dtype)
        out = torch.empty(count, dim, dtype=dtype, device=device)
    else:
        if tuple(out.shape) != (count, dim):
            raise ValueError(f"out: expected shape ({count}, {dim}), got {tuple(out.shape)}")
        check_float_dtype(out.dtype, "out.dtype")
        if dim > 1 and out.stride(1) != 1:
            raise ValueError(f"out: expected unit stride along dim 1, got strides {out.stride()}")
    if resolve_impl(impl, out.device) == "reference":
        with torch.no_grad():
            out.copy_(
                reference.philox_normal(
                    seed, start, count, dim, stream=stream, dtype=out.dtype, device=out.device
                )
            )
        return out
    torch.ops.tangentlens.philox_normal_(out, as_i64(seed), as_i64(start), stream)
    return out


# ---- fake kernels (torch.compile / meta) and autograd ------------------------------------------------

if NATIVE_AVAILABLE:

    @torch.library.register_fake("tangentlens::philox4x32_10")
    def _philox4x32_10_fake(counters: torch.Tensor, seed: int) -> torch.Tensor:
        return torch.empty_like(counters)

    @torch.library.register_fake("tangentlens::philox_normal_")
    def _philox_normal_fake(out: torch.Tensor, seed: int, start: int, stream: int) -> None:
        return None

    @torch.library.register_fake("tangentlens::paths_sample_")
    def _paths_sample_fake(z0, z1, t, p0, p1, tangent, seed, start, dim, path_kind, full, eps) -> None:  # noqa: ANN001
        return None

    @torch.library.register_fake("tangentlens::interpolate")
    def _interpolate_fake(
        a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, path_kind: int, with_tangent: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        torch._check(a.dim() == 2, lambda: "a: expected a 2-D tensor")
        return torch.empty_like(a, memory_format=torch.contiguous_format), (
            torch.empty_like(a, memory_format=torch.contiguous_format) if with_tangent else a.new_empty(0)
        )

    def _interpolate_setup(ctx, inputs, output) -> None:  # noqa: ANN001
        a, b, t, path_kind, with_tangent = inputs
        ctx.save_for_backward(a, b, t)
        ctx.path_kind, ctx.with_tangent = path_kind, with_tangent

    def _interpolate_backward(ctx, grad_p, grad_tangent):  # noqa: ANN001, ANN202
        # The kernels are forward-only; gradients come from the reference formula (same maths).
        a, b, t = ctx.saved_tensors
        with torch.enable_grad():
            leaves = [x.detach().requires_grad_(x.requires_grad or x.is_floating_point()) for x in (a, b, t)]
            p, tan = reference.interpolate(*leaves, ctx.path_kind, ctx.with_tangent)
            outs, grads = [p], [grad_p]
            if ctx.with_tangent and tan is not None and grad_tangent is not None and grad_tangent.numel():
                outs.append(tan)
                grads.append(grad_tangent)
            ga, gb, gt = torch.autograd.grad(outs, leaves, grads, allow_unused=True)
        return ga, gb, gt, None, None

    torch.library.register_autograd(
        "tangentlens::interpolate", _interpolate_backward, setup_context=_interpolate_setup
    )
