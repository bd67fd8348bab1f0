"""Fused bias + activation + gain + clamp with NVIDIA's ``bias_act`` interface (StyleGAN2/3).

``bias_act(x, b, dim=1, act="lrelu", alpha=None, gain=None, clamp=None)`` computes
``clamp(gain * act(x + b), -clamp, clamp)``; alpha and gain default per activation as in NVIDIA's code.

The native path is differentiable in both modes:

* reverse mode (``backward``): the Jacobian is diagonal, so the gradient is the native tangent kernel
  applied to the incoming gradient (the reference formula is differentiated under ``create_graph``);
* forward mode (``torch.func.jvp``, ``torch.autograd.forward_ad``): one ``tangentlens::bias_act_jvp``
  launch with K = 1;
* ``torch.func.vmap`` over ``jvp`` (K tangents at once): the Function's vmap rule is generated
  (``generate_vmap_rule=True``), so its ``jvp`` runs under vmap and reaches the vmap rule of
  ``tangentlens::bias_act_jvp`` (:mod:`tangentlens.ops`), which folds the vmapped dim of the tangents into
  K: ONE launch for all K tangents.
"""

from __future__ import annotations

import torch

from tangentlens import ops
from tangentlens._extension import Impl, resolve_impl
from tangentlens.reference import bias_act as _ref

__all__ = ["ACTIVATIONS", "bias_act"]

ACTIVATIONS = tuple(_ref.ACTIVATIONS)


class _BiasAct(torch.autograd.Function):
    """bias_act on the native op with exact backward and a one-launch jvp."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, b, dim, code, alpha, gain, clamp):  # noqa: ANN001, ANN205
        return torch.ops.tangentlens.bias_act(x, b, dim, code, alpha, gain, clamp)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
        x, b, *rest = inputs
        ctx.save_for_backward(x, b)
        ctx.save_for_forward(x, b)
        ctx.rest = rest

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        x, b = ctx.saved_tensors
        need_b = b is not None and ctx.needs_input_grad[1]
        gx, gb = ops.bias_act_backward(x, b, grad, *ctx.rest, need_b=need_b)
        return gx, gb, None, None, None, None, None

    @staticmethod
    def jvp(ctx, tx, tb, *_):  # noqa: ANN001, ANN205
        x, b = ctx.saved_tensors
        if tx is None:
            tx = torch.zeros_like(x)
        tbk = None if tb is None or b is None else tb.unsqueeze(0).contiguous()
        _, ty = torch.ops.tangentlens.bias_act_jvp(x, b, tx.unsqueeze(0).contiguous(), tbk, *ctx.rest)
        return ty.squeeze(0)


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    impl: Impl = "auto",
) -> torch.Tensor:
    """``clamp(gain * act(x + b), -clamp, clamp)``, b [x.shape[dim]] broadcast along ``dim``.

    Activations: linear, relu, lrelu (alpha 0.2), tanh, sigmoid, elu, selu, softplus, swish; gain defaults to
    sqrt 2 for relu, lrelu and swish, else 1; ``clamp`` None or < 0: no clamping. ``dim`` may be negative
    (NVIDIA's code accepts only [0, x.ndim)); it is unused without ``b``. Any rank and strides,
    fp16/bf16/fp32/fp64 (math in float32, float64 for float64); NaN propagates to y. Differentiable in
    reverse and forward mode, and under ``torch.func.vmap`` (see the module docstring).
    ``impl="reference"`` runs the plain torch ops of :mod:`tangentlens.reference.bias_act`.
    """
    x, dim, code, alpha_f, gain_f, clamp_f = ops._bias_act_args(x, b, dim, act, alpha, gain, clamp)
    if resolve_impl(impl, x.device) == "reference":
        return _ref.bias_act(x, b, dim, act, alpha_f, gain_f, clamp_f)
    return _BiasAct.apply(x.contiguous(), ops._contig(b), dim, code, alpha_f, gain_f, clamp_f)
