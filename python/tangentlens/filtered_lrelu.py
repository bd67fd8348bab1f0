"""Filtered leaky ReLU (StyleGAN3's alias-free nonlinearity) with NVIDIA's ``filtered_lrelu`` interface.

``filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter)``: bias, upsampling FIR
filter ``fu`` (zero insertion, ``padding``, gain ``up²``), ``clamp(gain * lrelu(., slope))``, downsampling FIR
filter ``fd`` (:mod:`tangentlens.reference.filtered_lrelu` states the contract, NVIDIA's reference semantics).

The native path is differentiable in both modes:

* reverse mode: the adjoint of the reference composition at the saved input (exact, differentiable again);
* forward mode (``torch.func.jvp``, ``torch.autograd.forward_ad``): one ``tangentlens::filtered_lrelu_jvp``
  launch with K = 1, which evaluates the primal's mask once and applies it to the upsampled tangent;
* ``torch.func.vmap`` over ``jvp``: the Function's vmap rule is generated, so its ``jvp`` reaches the vmap
  rule of ``tangentlens::filtered_lrelu_jvp`` (:mod:`tangentlens.ops`), which folds the vmapped tangents into
  K: ONE launch for all K tangents, sharing the primal's mask and the filters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from tangentlens import ops
from tangentlens._extension import Impl, resolve_impl
from tangentlens.ops import filtered_lrelu_jvp
from tangentlens.reference.filtered_lrelu import filtered_lrelu as _reference

__all__ = ["filtered_lrelu", "filtered_lrelu_jvp"]


class _FilteredLrelu(torch.autograd.Function):
    """The native op with the reference's exact backward and a one-launch jvp (the primal's mask reused)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, fu, fd, b, *params):  # noqa: ANN001, ANN205
        return torch.ops.tangentlens.filtered_lrelu(x, fu, fd, b, *params)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
        x, fu, fd, b, *params = inputs
        ctx.save_for_backward(x, fu, fd, b)
        ctx.save_for_forward(x, fu, fd, b)
        ctx.params = params

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        x, fu, fd, b = ctx.saved_tensors
        up, down, px0, px1, py0, py1, gain, slope, clamp = ctx.params
        with torch.enable_grad():
            xl = x.detach().requires_grad_(True)
            bl = None if b is None else b.detach().requires_grad_(True)
            y = ops._filtered_lrelu_reference(
                xl, fu, fd, bl, up, down, (px0, px1, py0, py1), gain, slope, clamp
            )
            leaves = [xl] if bl is None else [xl, bl]
            grads = torch.autograd.grad(y, leaves, grad, create_graph=torch.is_grad_enabled())
        gb = grads[1] if bl is not None else None
        return grads[0], None, None, gb, *([None] * len(ctx.params))

    @staticmethod
    def jvp(ctx, tx, tfu, tfd, tb, *_):  # noqa: ANN001, ANN205
        x, fu, fd, b = ctx.saved_tensors
        if tx is None:
            tx = torch.zeros_like(x)
        tbk = None if tb is None or b is None else tb.unsqueeze(0).contiguous()
        _, ty = torch.ops.tangentlens.filtered_lrelu_jvp(
            x, fu, fd, b, tx.unsqueeze(0).contiguous(), tbk, *ctx.params
        )
        return ty.squeeze(0)


def filtered_lrelu(
    x: torch.Tensor,
    fu: torch.Tensor | None = None,
    fd: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: float | None = None,
    flip_filter: bool = False,
    impl: Impl = "auto",
) -> torch.Tensor:
    """NVIDIA's ``filtered_lrelu`` for a batch of images ``x [N, C, H, W]``.

    Per channel: ``x + b``; upsample by ``up`` (zero insertion), pad by ``padding`` (``int``, ``[px, py]`` or
    ``[px0, px1, py0, py1]``; negative crops) and convolve with ``fu`` at gain ``up²``; ``gain * lrelu(.,
    slope)`` clamped to ``[-clamp, clamp]`` (None: no clamp); convolve with ``fd`` and keep every ``down``-th
    pixel. Filters: 1-D (separable), 2-D ``[fh, fw]`` or None (identity); ``flip_filter`` True correlates.
    Output ``[N, C, (H up + py0 + py1 - fh_u - fh_d + 1) // down + 1, ...]``. Any strides,
    fp16/bf16/fp32/fp64 (math in float32, float64 for float64). Differentiable in reverse and forward mode
    and under ``torch.func.vmap`` (module docstring); ``impl="reference"`` runs the plain torch composition.
    Filters that require grad take the reference.
    """
    x, fu_c, fd_c, pads, g, s, c = ops._filtered_lrelu_args(
        x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter
    )
    grads = any(isinstance(f, torch.Tensor) and f.requires_grad for f in (fu, fd))
    if grads or resolve_impl(impl, x.device) == "reference":
        return _reference(x, fu, fd, b, up, down, padding, g, s, clamp, flip_filter)
    return _FilteredLrelu.apply(x.contiguous(), fu_c, fd_c, ops._contig(b), up, down, *pads, g, s, c)
