"""Resampling ops of StyleGAN2 with NVIDIA's ``upfirdn2d`` / ``conv2d_resample`` contract.

Reference implementations in plain torch ops: autograd and ``torch.func`` (``jvp``, ``vmap``) differentiate
them, and nothing here works in place on a tensor that may carry a tangent.

* ``upfirdn2d(x, f, up, down, padding, flip_filter, gain)``: insert ``up - 1`` zeros after every pixel,
  pad (or crop, for negative padding), convolve depthwise with the FIR filter ``f`` (a true convolution,
  i.e. ``f`` flipped before cross-correlation, unless ``flip_filter``), keep every ``down``-th pixel.
* ``setup_filter`` builds the filters; ``filter2d``, ``upsample2d``, ``downsample2d`` choose the padding
  that keeps the image aligned; ``conv2d_resample`` is NVIDIA's generic path of a convolution with up/down
  sampling; ``modulated_conv2d`` is StyleGAN2's style-modulated (and demodulated) convolution.

Padding is an int, ``[px, py]`` or ``[px0, px1, py0, py1]`` (x = width axis), as in NVIDIA's code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from tangentlens._extension import Impl, resolve_impl

__all__ = [
    "conv2d_resample",
    "downsample2d",
    "filter2d",
    "modulated_conv2d",
    "setup_filter",
    "upfirdn2d",
    "upsample2d",
]

Padding = int | Sequence[int]
Scaling = int | Sequence[int]


def _parse_scaling(name: str, scaling: Scaling) -> tuple[int, int]:
    vals = [scaling, scaling] if isinstance(scaling, int) else list(scaling)
    if len(vals) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in vals):
        raise ValueError(f"{name}: expected an int >= 1 or a pair [sx, sy] of them, got {scaling!r}")
    return vals[0], vals[1]


def _parse_padding(padding: Padding) -> tuple[int, int, int, int]:
    vals = [padding] if isinstance(padding, int) else list(padding)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in vals) or len(vals) not in (1, 2, 4):
        raise ValueError(
            f"padding: expected an int, [px, py] or [px0, px1, py0, py1] of ints, got {padding!r}"
        )
    if len(vals) == 1:
        return vals[0], vals[0], vals[0], vals[0]
    if len(vals) == 2:
        return vals[0], vals[0], vals[1], vals[1]
    return vals[0], vals[1], vals[2], vals[3]


def _check_filter(f: torch.Tensor | None) -> None:
    if f is None:
        return
    if not isinstance(f, torch.Tensor) or f.ndim not in (1, 2) or f.numel() == 0:
        got = f"a tensor of shape {tuple(f.shape)}" if isinstance(f, torch.Tensor) else type(f).__name__
        raise ValueError(f"f: expected None or a non-empty 1-D (separable) or 2-D filter tensor, got {got}")


def _filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(width, height) of a filter; a 1-D filter is separable, so square."""
    if f is None:
        return 1, 1
    return int(f.shape[-1]), int(f.shape[0])


def _check_x(x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a 4-D tensor [N, C, H, W], got {got}")


def setup_filter(
    f: Sequence[float] | Sequence[Sequence[float]] | torch.Tensor | float | None,
    device: torch.device | str = "cpu",
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1,
    separable: bool | None = None,
) -> torch.Tensor:
    """A float32 FIR filter for ``upfirdn2d``.

    A 1-D filter becomes the 2-D outer product ``f ⊗ f`` unless ``separable`` (default: separable only
    for 1-D filters of 8 or more taps, NVIDIA's rule). ``normalize`` makes the taps sum to 1; ``gain``
    scales the filter by ``gain ** (f.ndim / 2)`` so both forms have the same overall gain.
    """
    f = torch.as_tensor(1.0 if f is None else f, dtype=torch.float32)
    if f.ndim not in (0, 1, 2) or f.numel() == 0:
        raise ValueError(f"f: expected a scalar, 1-D or 2-D non-empty filter, got shape {tuple(f.shape)}")
    if f.ndim == 0:
        f = f[None]
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if f.ndim != (1 if separable else 2):
        raise ValueError(f"separable=True needs a 1-D filter, got shape {tuple(f.shape)}")
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: Scaling = 1,
    down: Scaling = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: Impl = "auto",
) -> torch.Tensor:
    """Upsample (zero insertion), pad/crop, FIR-filter depthwise, downsample. x [N, C, H, W].

    Output height ``(H * up + pady0 + pady1 - fh) // down + 1`` (likewise the width). ``f`` is 2-D
    ``[fh, fw]`` or 1-D (separable: a horizontal then a vertical pass); None is the identity filter.
    ``impl``: the native kernel (one pass, only the taps that hit inserted samples; its forward rule is
    itself on the tangents, all vmapped tangents in one launch) or this reference composition. A filter
    that requires grad takes the reference path.
    """
    _check_x(x)
    _check_filter(f)
    upx, upy = _parse_scaling("up", up)
    downx, downy = _parse_scaling("down", down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    n, c, h, w = x.shape
    if f is None:
        f = torch.ones([1, 1], dtype=x.dtype, device=x.device)
    fw, fh = _filter_size(f)
    out_h = h * upy + pady0 + pady1 - fh + 1
    out_w = w * upx + padx0 + padx1 - fw + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"padding: the padded, upsampled input ({h * upy + pady0 + pady1}x{w * upx + padx0 + padx1}) is "
            f"smaller than the filter ({fh}x{fw})"
        )

    if (
        resolve_impl(impl, x.device) == "native"
        and not f.requires_grad
        and x.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
    ):
        return _native_upfirdn2d(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, gain)

    x = _upsample_pad(x, upx, upy, padx0, padx1, pady0, pady1)

    # conv2d cross-correlates, so flipping the filter gives a true convolution.
    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        x = F.conv2d(x, f[None, None].expand(c, 1, fh, fw), groups=c)
    else:
        k = f[None, None].expand(c, 1, fw)
        x = F.conv2d(x, k.unsqueeze(2), groups=c)  # horizontal pass
        x = F.conv2d(x, k.unsqueeze(3), groups=c)  # vertical pass

    if downx > 1 or downy > 1:
        x = x[:, :, ::downy, ::downx]
    return x


def _upsample_pad(
    x: torch.Tensor, upx: int, upy: int, padx0: int, padx1: int, pady0: int, pady1: int
) -> torch.Tensor:
    """Zero insertion (each pixel followed by up - 1 zeros along each axis), then padding with zeros
    (positive) or cropping (negative): the input of the FIR filter."""
    n, c, h, w = x.shape
    if upx > 1 or upy > 1:
        x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, upx - 1, 0, 0, 0, upy - 1]).reshape(n, c, h * upy, w * upx)
    x = F.pad(x, [max(padx0, 0), max(padx1, 0), max(pady0, 0), max(pady1, 0)])
    return x[:, :, max(-pady0, 0) : x.shape[2] - max(-pady1, 0), max(-padx0, 0) : x.shape[3] - max(-padx1, 0)]


def _correlation_filter(f: torch.Tensor, flip_filter: bool, gain: float, dtype: torch.dtype) -> torch.Tensor:
    """The 2-D filter the kernel cross-correlates with: separable filters as their outer product, flipped
    unless ``flip_filter`` (a true convolution), scaled by ``gain``."""
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    f = f.to(acc)
    f2 = torch.outer(f, f) if f.ndim == 1 else f
    if not flip_filter:
        f2 = f2.flip([0, 1])
    return (f2 * gain).contiguous()


class _Upfirdn2d(torch.autograd.Function):
    """The native kernel with autograd: linear in x, so the JVP is the kernel on the tangent (under vmap,
    all tangents in one launch through the op's vmap rule) and the backward pass is the adjoint, taken
    from the reference composition (exact, differentiable again)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, fc, upx, upy, downx, downy, padx0, padx1, pady0, pady1):  # noqa: ANN001, ANN205
        return torch.ops.tangentlens.upfirdn2d(x, fc, upx, upy, downx, downy, padx0, padx1, pady0, pady1)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
        x, fc, *params = inputs
        ctx.save_for_backward(fc)
        ctx.save_for_forward(fc)
        ctx.params = tuple(params)
        ctx.x_meta = (tuple(x.shape), x.dtype, x.device)

    @staticmethod
    def backward(ctx, gy):  # noqa: ANN001, ANN205
        (fc,) = ctx.saved_tensors
        shape, dtype, device = ctx.x_meta
        with torch.enable_grad():
            leaf = torch.zeros(shape, dtype=dtype, device=device, requires_grad=True)  # linear: any point
            y = _reference_correlation(leaf, fc, *ctx.params)
            (gx,) = torch.autograd.grad(y, leaf, gy, create_graph=torch.is_grad_enabled())
        return (gx, *([None] * 9))

    @staticmethod
    def jvp(ctx, tx, *_):  # noqa: ANN001, ANN205
        (fc,) = ctx.saved_tensors
        return torch.ops.tangentlens.upfirdn2d(tx.contiguous(), fc, *ctx.params)


def _reference_correlation(x, fc, upx, upy, downx, downy, padx0, padx1, pady0, pady1):  # noqa: ANN001, ANN202
    """The reference composition with a ready correlation filter (for the adjoint of the kernel)."""
    c = x.shape[1]
    x = _upsample_pad(x, upx, upy, padx0, padx1, pady0, pady1)
    x = F.conv2d(x, fc.to(x.dtype)[None, None].expand(c, 1, *fc.shape), groups=c)
    return x[:, :, ::downy, ::downx]


def _native_upfirdn2d(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, gain):  # noqa: ANN001, ANN202
    fc = _correlation_filter(f, flip_filter, gain, x.dtype)
    return _Upfirdn2d.apply(x, fc, upx, upy, downx, downy, padx0, padx1, pady0, pady1)


def filter2d(
    x: torch.Tensor, f: torch.Tensor | None, padding: Padding = 0, flip_filter: bool = False, gain: float = 1
) -> torch.Tensor:
    """FIR filter with the padding that keeps the size (plus ``padding``)."""
    _check_filter(f)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _filter_size(f)
    p = [padx0 + fw // 2, padx1 + (fw - 1) // 2, pady0 + fh // 2, pady1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain)


def upsample2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: Scaling = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Upsample by ``up`` (output ``H * up`` for zero ``padding``); gain ``up²`` keeps the mean level."""
    _check_filter(f)
    upx, upy = _parse_scaling("up", up)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _filter_size(f)
    p = [
        padx0 + (fw + upx - 1) // 2,
        padx1 + (fw - upx) // 2,
        pady0 + (fh + upy - 1) // 2,
        pady1 + (fh - upy) // 2,
    ]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy)


def downsample2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    down: Scaling = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Downsample by ``down`` (output ``H // down`` for even sizes and zero ``padding``)."""
    _check_filter(f)
    downx, downy = _parse_scaling("down", down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _filter_size(f)
    p = [
        padx0 + (fw - downx + 1) // 2,
        padx1 + (fw - downx) // 2,
        pady0 + (fh - downy + 1) // 2,
        pady1 + (fh - downy) // 2,
    ]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain)


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    groups: int = 1,
    flip_weight: bool = True,
    flip_filter: bool = False,
) -> torch.Tensor:
    """2-D convolution with optional up/down sampling (NVIDIA's generic reference path).

    ``up > 1``: upsample with ``f`` (zero insertion, FIR, gain up²) before the convolution; ``down > 1``:
    downsample with ``f`` after it; ``padding`` is that of the convolution at the upsampled resolution,
    adjusted here by the filter size as NVIDIA does. ``flip_weight=True`` is cross-correlation
    (``F.conv2d``); False flips ``w`` (a true convolution, what NVIDIA's transposed fast path computes).
    """
    _check_x(x)
    _check_filter(f)
    if not isinstance(w, torch.Tensor) or w.ndim != 4:
        raise ValueError(
            f"w: expected a 4-D weight [O, I/groups, kh, kw], got {getattr(w, 'shape', type(w))}"
        )
    if x.shape[1] != w.shape[1] * groups:
        raise ValueError(
            f"w: expected {x.shape[1] // max(groups, 1)} input channels per group for x with {x.shape[1]} "
            f"channels and groups={groups}, got weight shape {tuple(w.shape)}"
        )
    for name, v in (("up", up), ("down", down)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
    fw, fh = _filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    x = upfirdn2d(
        x, f if up > 1 else None, up=up, padding=[px0, px1, py0, py1], gain=up**2, flip_filter=flip_filter
    )
    if not flip_weight and (w.shape[2] > 1 or w.shape[3] > 1):
        w = w.flip([2, 3])
    x = F.conv2d(x, w, groups=groups)
    if down > 1:
        x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused_modconv: bool = True,
) -> torch.Tensor:
    """StyleGAN2's modulated convolution. x [N, I, H, W], weight [O, I, kh, kw], styles [N, I].

    Per sample the weight is ``w = weight * styles[n]`` (input channels scaled); with ``demodulate`` each
    output filter is divided by ``sqrt(sum w² + 1e-8)``. ``fused_modconv`` runs one grouped convolution
    (groups = N); otherwise the input is scaled, convolved with the shared weight and the output scaled by
    the demodulation coefficients: the same result. ``noise`` (broadcast to the output) is added last.
    """
    _check_x(x)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4:
        raise ValueError(
            f"weight: expected a 4-D tensor [O, I, kh, kw], got {getattr(weight, 'shape', weight)}"
        )
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    if x.shape[1] != in_channels:
        raise ValueError(
            f"x: expected {in_channels} channels (weight {tuple(weight.shape)}), got {x.shape[1]}"
        )
    if not isinstance(styles, torch.Tensor) or tuple(styles.shape) != (batch_size, in_channels):
        raise ValueError(
            f"styles: expected shape {(batch_size, in_channels)}, got {tuple(getattr(styles, 'shape', ()))}"
        )

    # fp16: scale weight and styles to max-abs 1 first so w² sums cannot overflow; demodulation undoes it.
    if x.dtype == torch.float16 and demodulate:
        inf_norm = weight.abs().amax(dim=[1, 2, 3], keepdim=True)
        weight = weight * (1 / math.sqrt(in_channels * kh * kw) / inf_norm)
        styles = styles / styles.abs().amax(dim=1, keepdim=True)

    w = None
    dcoefs = None
    if demodulate or fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(batch_size, 1, -1, 1, 1)  # [N, O, I, kh, kw]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [N, O]
    if demodulate and fused_modconv:
        w = w * dcoefs.reshape(batch_size, -1, 1, 1, 1)

    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(batch_size, -1, 1, 1)
        x = conv2d_resample(
            x,
            weight.to(x.dtype),
            f=resample_filter,
            up=up,
            down=down,
            padding=padding,
            flip_weight=flip_weight,
        )
        if demodulate:
            x = x * dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x

    # One grouped convolution: the batch becomes the channel groups.
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    x = conv2d_resample(
        x,
        w.to(x.dtype),
        f=resample_filter,
        up=up,
        down=down,
        padding=padding,
        groups=batch_size,
        flip_weight=flip_weight,
    )
    x = x.reshape(batch_size, -1, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x
