"""Reference filtered leaky ReLU (StyleGAN3's alias-free nonlinearity), NVIDIA's ``filtered_lrelu`` contract.

Per channel of ``x [N, C, H, W]``: add the bias ``b``; upsample by ``up`` (zero insertion), pad by
``padding`` (negative: crop) and FIR-filter with ``fu`` at gain ``up²`` (upfirdn2d); ``clamp(gain *
lrelu(., slope), -clamp, clamp)``; FIR-filter with ``fd`` and keep every ``down``-th pixel. Filters are 1-D
(separable: the same taps along both axes), 2-D ``[fh, fw]`` or None (identity); ``flip_filter=False`` is a
true convolution. The output is ``[N, C, (H up + py0 + py1 - fuh - fdh + 1) // down + 1, ...]``.

Written with the reference ``upfirdn2d`` (:func:`tangentlens.resample.upfirdn2d`, ``impl="reference"``)
and :func:`tangentlens.reference.bias_act.bias_act`, plain torch ops: autograd and ``torch.func``
differentiate it; it is the oracle of the native ``tangentlens::filtered_lrelu`` kernels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from tangentlens.reference.bias_act import bias_act, bias_act_jvp
from tangentlens.resample import upfirdn2d

Padding = int | Sequence[int]


def _upsample(
    x: torch.Tensor,
    fu: torch.Tensor | None,
    up: int,
    padding: Padding,
    flip_filter: bool,
    up_gain: float | None,
) -> torch.Tensor:
    gain = up**2 if up_gain is None else up_gain
    return upfirdn2d(x, fu, up=up, padding=padding, gain=gain, flip_filter=flip_filter, impl="reference")


def _downsample(x: torch.Tensor, fd: torch.Tensor | None, down: int, flip_filter: bool) -> torch.Tensor:
    return upfirdn2d(x, fd, down=down, flip_filter=flip_filter, impl="reference")


def filtered_lrelu(
    x: torch.Tensor,
    fu: torch.Tensor | None = None,
    fd: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: float | None = None,
    flip_filter: bool = False,
    up_gain: float | None = None,
) -> torch.Tensor:
    """The composition above. ``up_gain`` overrides the upsampling filter's gain ``up²`` (1 for filters
    that already carry it, as the native op's are)."""
    x = bias_act(x, b)
    x = _upsample(x, fu, up, padding, flip_filter, up_gain)
    x = bias_act(x, None, act="lrelu", alpha=slope, gain=gain, clamp=clamp)
    return _downsample(x, fd, down, flip_filter)


def filtered_lrelu_jvp(
    x: torch.Tensor,
    fu: torch.Tensor | None,
    fd: torch.Tensor | None,
    b: torch.Tensor | None,
    tx: torch.Tensor,
    tb: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: float | None = None,
    flip_filter: bool = False,
    up_gain: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, ty)``: :func:`filtered_lrelu` and its tangents along ``tx [K, *x.shape]`` and ``tb [K, C]`` (or
    None), written with the explicit derivative: the filters are linear, so ``ty_k = down(d * up(tx_k +
    tb_k))`` with ``d = gain lrelu'(u)`` where the clamp is inactive (``|gain lrelu(u)| <= clamp``) and 0
    elsewhere, ``u`` the upsampled primal (``lrelu'(0) = slope``, as autograd of torch's leaky_relu)."""
    k = tx.shape[0]
    u = _upsample(bias_act(x, b), fu, up, padding, flip_filter, up_gain)
    t = tx if tb is None else tx + tb.reshape(k, 1, -1, 1, 1)
    tu = _upsample(t.reshape(-1, *x.shape[1:]), fu, up, padding, flip_filter, up_gain)
    a, ta = bias_act_jvp(
        u, None, tu.reshape(k, *u.shape), None, act="lrelu", alpha=slope, gain=gain, clamp=clamp
    )
    y = _downsample(a, fd, down, flip_filter)
    ty = _downsample(ta.reshape(-1, *u.shape[1:]), fd, down, flip_filter)
    return y, ty.reshape(k, *y.shape)
