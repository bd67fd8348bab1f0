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

Under autocast (``precision="bf16"`` / ``"fp16"``) only the convolutions run in the low dtype, with float32
accumulation: their outputs come back in float32 at once, and the styles, the demodulation coefficients
and everything elementwise stay float32 (these are cheap, and a bf16 demodulation coefficient would scale
a whole output channel by its rounding error).

The rules write in place and are meant to run without autograd (:func:`tangentlens.jvp` calls them
under ``torch.no_grad``). ``StyleGAN2Generator.forward_jvp`` and ``SynthesisNetwork.forward_jvp`` use
them, and :func:`tangentlens.jvp` picks those methods when a module has them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from tangentlens import ops
from tangentlens._extension import Impl
from tangentlens.resample import conv2d_resample

__all__ = [
    "bias_act_stacked",
    "filtered_lrelu_stacked",
    "modulated_conv2d_stacked",
    "rms_normalize_stacked",
    "stack",
    "unstack",
]


def stack(x: torch.Tensor, tx: torch.Tensor | None, k: int) -> torch.Tensor:
    """``x [B, ...]`` and its tangents ``tx [B, k, ...]`` (None: zero) -> ``[B, 1 + k, ...]``."""
    if tx is None:
        tx = x.new_zeros((x.shape[0], k, *x.shape[1:]))
    return torch.cat([x.unsqueeze(1), tx], dim=1)


def unstack(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return X[:, 0], X[:, 1:]


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64, float32 for everything else: the dtype of the non-convolution arithmetic."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@contextmanager
def full_precision(device_type: str) -> Iterator[None]:
    """Autocast off: the small products (styles, demodulation) keep their inputs' precision."""
    with torch.autocast(device_type=device_type, enabled=False):
        yield


def _flat(X: torch.Tensor) -> torch.Tensor:
    return X.reshape(X.shape[0] * X.shape[1], *X.shape[2:])


def _demodulation(weight: torch.Tensor, styles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``W2 = Σ_kk weight²`` [O, I] and the demodulation ``d = (s² @ W2ᵀ + 1e-8)^-½`` [B, O]."""
    w2 = weight.square().sum(dim=[2, 3])
    return w2, (styles.square() @ w2.t() + 1e-8).rsqrt()


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
    acc = accumulation_dtype(X.dtype)
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
    U = U.to(acc).reshape(B, K1, *U.shape[1:])  # [B, 1+k, O, H', W']; float32 under autocast
    if demodulate:
        with full_precision(X.device.type):
            w2, d = _demodulation(weight.to(acc), s.to(acc))
            td = -(d**3).unsqueeze(1) * ((s.unsqueeze(1) * ts).to(acc) @ w2.t())  # [B, k, O]
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


def rms_normalize_stacked(S: torch.Tensor) -> torch.Tensor:
    """StyleGAN3's style pre-normalisation ``s / sqrt(mean(s²))`` (the mean over the whole primal batch and
    all channels), stacked: ``S [B, 1 + k, I]``; a tangent of the scale ``c = mean(s²)^-½`` is
    ``ċ = -c³ mean(s ṡ)``, one scalar per tangent direction (the batch is one point)."""
    s, ts = S[:, 0], S[:, 1:]
    c = s.square().mean().rsqrt()
    tc = -(c**3) * (s.unsqueeze(1) * ts).mean(dim=(0, 2))  # [k]
    out = S * c
    out[:, 1:].addcmul_(s.unsqueeze(1), tc[None, :, None])
    return out


def filtered_lrelu_stacked(
    X: torch.Tensor,
    fu: torch.Tensor | None,
    fd: torch.Tensor | None,
    b: torch.Tensor | None,
    up: int = 1,
    down: int = 1,
    padding: int | list[int] = 0,
    gain: float = 1.0,
    slope: float = 0.2,
    clamp: float | None = None,
    impl: Impl = "auto",
) -> torch.Tensor:
    """filtered_lrelu of the primal and its derivative applied to the tangents (the primal's activation
    mask and the filters shared), in one fused pass: ``X [B, 1 + k, C, H, W]``."""
    from tangentlens.filtered_lrelu import filtered_lrelu_jvp

    x, tx = unstack(X)
    y, ty = filtered_lrelu_jvp(
        x,
        fu,
        fd,
        b,
        tx.transpose(0, 1),
        None,
        up=up,
        down=down,
        padding=padding,
        gain=gain,
        slope=slope,
        clamp=clamp,
        impl=impl,
    )
    return torch.cat([y.unsqueeze(1), ty.transpose(0, 1)], dim=1)


# ---- the same rule registered for torch.func (vmap over jvp) -----------------------------------------------


def _modconv_parts(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    up: int,
    padding: int,
    f: torch.Tensor | None,
    demodulate: bool,
    flip_weight: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``u = conv(x * s, weight)`` (shared weight, the modulation on the input) and ``d`` (or None)."""
    u = conv2d_resample(
        x * styles[:, :, None, None], weight.to(x.dtype), f=f, up=up, padding=padding, flip_weight=flip_weight
    )
    d = _demodulation(weight.to(x.dtype), styles)[1] if demodulate else None
    return u, d


class _ModulatedConv2d(torch.autograd.Function):
    """Modulated convolution whose forward-mode rule is ``conv(ẋ s + x ṡ, weight) d + conv(x s, ẇ) d + u ḋ``.

    Under ``vmap(jvp)`` the rule runs vmapped: the tangents' input ``ẋ s + x ṡ`` is batched and the weight
    is not, so all tangents share one convolution (1 + k convolutions' FLOPs instead of 1 + 2k).
    The backward pass differentiates the same computation (exact).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, styles, noise, f, up, padding, demodulate, flip_weight):  # noqa: ANN001, ANN205
        u, d = _modconv_parts(x, weight, styles, up, padding, f, demodulate, flip_weight)
        y = u if d is None else u * d[:, :, None, None]
        return y if noise is None else y + noise.to(y.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):  # noqa: ANN001, ANN205
        x, weight, styles, noise, f, up, padding, demodulate, flip_weight = inputs
        ctx.cfg = (up, padding, demodulate, flip_weight)
        ctx.has_noise = noise is not None
        ctx.save_for_backward(x, weight, styles, f)
        ctx.save_for_forward(x, weight, styles, f)

    @staticmethod
    def backward(ctx, gy):  # noqa: ANN001, ANN205
        x, weight, styles, f = ctx.saved_tensors
        up, padding, demodulate, flip_weight = ctx.cfg
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(True) for t in (x, weight, styles)]
            u, d = _modconv_parts(*leaves, up, padding, f, demodulate, flip_weight)
            y = u if d is None else u * d[:, :, None, None]
            grads = torch.autograd.grad(
                y, leaves, gy, create_graph=torch.is_grad_enabled(), allow_unused=True
            )
        return (*grads, gy if ctx.has_noise else None, None, None, None, None, None)

    @staticmethod
    def jvp(ctx, tx, tweight, tstyles, tnoise, tf, *_):  # noqa: ANN001, ANN205
        x, weight, styles, f = ctx.saved_tensors
        up, padding, demodulate, flip_weight = ctx.cfg
        w = weight.to(x.dtype)

        def conv(inp: torch.Tensor, weight_: torch.Tensor) -> torch.Tensor:
            return conv2d_resample(inp, weight_, f=f, up=up, padding=padding, flip_weight=flip_weight)

        inp = None
        if tx is not None:
            inp = tx * styles[:, :, None, None]
        if tstyles is not None:
            term = x * tstyles[:, :, None, None]
            inp = term if inp is None else inp + term
        ty = None
        if inp is not None:
            ty = conv(inp, w)
        xs = x * styles[:, :, None, None]
        if tweight is not None:
            term = conv(xs, tweight.to(x.dtype))
            ty = term if ty is None else ty + term
        # u = conv(x s, weight), the primal before demodulation: recomputed here (the forward's is not
        # handed over), and only where it is needed.
        u = conv(xs, w) if demodulate or ty is None else None
        if ty is None:
            ty = torch.zeros_like(u)
        if demodulate:
            w2, d = _demodulation(w, styles)
            dd = torch.zeros_like(d)
            if tstyles is not None:
                dd = dd + (styles * tstyles) @ w2.t()
            if tweight is not None:
                dd = dd + styles.square() @ (w * tweight.to(x.dtype)).sum(dim=[2, 3]).t()
            td = -(d**3) * dd
            ty = ty * d[:, :, None, None] + u * td[:, :, None, None]
        if tnoise is not None:
            ty = ty + tnoise.to(ty.dtype)
        return ty


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused_modconv: bool = True,
    impl: Impl = "auto",
) -> torch.Tensor:
    """:func:`tangentlens.resample.modulated_conv2d` with the shared-weight forward rule registered for
    ``torch.func`` (``impl`` native/auto, fp32/fp64), else the reference composition (fp16 keeps NVIDIA's
    pre-normalisation there)."""
    from tangentlens._extension import resolve_impl
    from tangentlens.resample import modulated_conv2d as reference

    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"x: expected [N, I, H, W], got {getattr(x, 'shape', type(x).__name__)}")
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4 or weight.shape[1] != x.shape[1]:
        got = getattr(weight, "shape", type(weight).__name__)
        raise ValueError(f"weight: expected [O, {x.shape[1]}, kh, kw], got {got}")
    if not isinstance(styles, torch.Tensor) or tuple(styles.shape) != (x.shape[0], x.shape[1]):
        raise ValueError(
            f"styles: expected shape {(x.shape[0], x.shape[1])}, got {tuple(getattr(styles, 'shape', ()))}"
        )
    if resolve_impl(impl, x.device) == "reference" or x.dtype not in (torch.float32, torch.float64):
        return reference(
            x,
            weight,
            styles,
            noise=noise,
            up=up,
            padding=padding,
            resample_filter=resample_filter,
            demodulate=demodulate,
            flip_weight=flip_weight,
            fused_modconv=fused_modconv,
        )
    return _ModulatedConv2d.apply(
        x, weight, styles.to(x.dtype), noise, resample_filter, up, padding, demodulate, flip_weight
    )
