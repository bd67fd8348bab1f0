"""Forward (JVP) rules of the StyleGAN2 building blocks, with the primal and all k tangents stacked.

A stacked activation is ``X [B, 1 + k, C, H, W]``: index 0 is the primal, 1..k the tangents. Every rule
maps stacked inputs to stacked outputs in one pass:

- modulated convolution: with ``u = conv(x * s, weight)`` and the demodulation ``d = (s² @ W2ᵀ + 1e-8)^-½``
  (``W2 = Σ_kk weight²``), ``y = u * d`` and
  ``ẏ = conv(ẋ * s + x * ṡ, weight) * d + u * ḋ``,  ``ḋ = -d³ ((s * ṡ) @ W2ᵀ)``.
  The modulation moves to the input, so the primal and the k tangents share ONE convolution with the
  layer's weight over ``B (1 + k)`` images: ``1 + k`` convolutions' FLOPs where ``vmap(jvp)`` spends
  ``1 + 2k`` (a grouped convolution per tangent for ``conv(x, ẇ)``);
- upfirdn2d (up/down-sampling, FIR filters): linear, so the stacked batch goes through the same filter;
- bias + activation + gain + clamp: the fused ``bias_act_jvp`` (the derivative computed once per element).

The rules write in place and are meant to run without autograd (:func:`tangentlens.jvp` calls them
under ``torch.no_grad``). ``StyleGAN2Generator.forward_jvp`` and ``SynthesisNetwork.forward_jvp`` use
them, and :func:`tangentlens.jvp` picks those methods when a module has them.
"""

from __future__ import annotations

import torch

from tangentlens import ops
from tangentlens._extension import Impl
from tangentlens.resample import conv2d_resample

__all__ = ["bias_act_stacked", "modulated_conv2d_stacked", "stack", "unstack"]


def stack(x: torch.Tensor, tx: torch.Tensor | None, k: int) -> torch.Tensor:
    """``x [B, ...]`` and its tangents ``tx [B, k, ...]`` (None: zero) -> ``[B, 1 + k, ...]``."""
    if tx is None:
        tx = x.new_zeros((x.shape[0], k, *x.shape[1:]))
    return torch.cat([x.unsqueeze(1), tx], dim=1)


def unstack(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return X[:, 0], X[:, 1:]


def _flat(X: torch.Tensor) -> torch.Tensor:
    return X.reshape(X.shape[0] * X.shape[1], *X.shape[2:])


def modulated_conv2d_stacked(
    X: torch.Tensor,
    weight: torch.Tensor,
    S: torch.Tensor,
    *,
    demodulate: bool = True,
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    flip_weight: bool = True,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Stacked modulated convolution: ``X [B, 1+k, I, H, W]``, ``S [B, 1+k, I]`` -> ``[B, 1+k, O, H', W']``.

    Same maths as :func:`tangentlens.resample.modulated_conv2d` (fp32/fp64; the fp16 pre-normalisation
    is not applied), plus its tangents. ``noise`` is added to the primal only (constant noise has no
    tangent).
    """
    B, K1 = X.shape[:2]
    s, ts = S[:, 0], S[:, 1:]  # [B, I], [B, k, I]
    x = X[:, 0]
    # Input of the shared convolution: x * s for the primal, tx * s + x * ts for each tangent (in place:
    # the rules run without autograd).
    inp = X * s[:, None, :, None, None]
    inp[:, 1:].addcmul_(x.unsqueeze(1), ts[:, :, :, None, None])
    U = conv2d_resample(
        _flat(inp),
        weight.to(X.dtype),
        f=resample_filter,
        up=up,
        padding=padding,
        flip_weight=flip_weight,
    )
    U = U.reshape(B, K1, *U.shape[1:])  # [B, 1+k, O, H', W']
    if demodulate:
        w2 = weight.to(X.dtype).square().sum(dim=[2, 3])  # [O, I]
        d = (s.square() @ w2.t() + 1e-8).rsqrt()  # [B, O]
        td = -(d**3).unsqueeze(1) * ((s.unsqueeze(1) * ts) @ w2.t())  # [B, k, O]
        Y = U * d[:, None, :, None, None]
        Y[:, 1:].addcmul_(U[:, :1], td[:, :, :, None, None])
    else:
        Y = U
    if noise is not None:
        Y[:, 0] += noise.to(Y.dtype)
    return Y


def bias_act_stacked(
    X: torch.Tensor,
    b: torch.Tensor | None,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    impl: Impl = "auto",
) -> torch.Tensor:
    """bias_act of the primal and its derivative applied to the tangents, in one fused pass."""
    x, tx = unstack(X)
    y, ty = ops.bias_act_jvp(
        x, b, tx.transpose(0, 1), None, dim=1, act=act, alpha=alpha, gain=gain, clamp=clamp, impl=impl
    )
    ty = ty.transpose(0, 1)
    return torch.cat([y.unsqueeze(1), ty], dim=1)


def linear_stacked(X: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``X [B, 1+k, I] @ weightᵀ`` with the bias on the primal only."""
    Y = X @ weight.t()
    if bias is not None:
        Y[:, 0] += bias
    return Y
