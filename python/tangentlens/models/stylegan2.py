"""StyleGAN2 generator (config F, "skip" architecture) with NVIDIA's interface and parameter names.

Written for tangentlens after the architecture of NVlabs' stylegan2-ada-pytorch ``training/networks.py``:
module and parameter names match NVIDIA's ``G_ema``, so ``load_state_dict`` of its state dict works
(``mapping.fc0.weight``, ``mapping.w_avg``, ``synthesis.b4.const``, ``synthesis.b8.conv0.affine.weight``,
...). Runtime weight scaling (equalized learning rate) happens in ``forward`` as in NVIDIA's code, so the
stored parameters are the raw ones.

Differences from NVIDIA's code, none of which changes a result:

* the generic (reference) resampling path of ``conv2d_resample`` (mathematically equal to its fast paths);
* no in-place ops, ``.item()`` or data-dependent control flow in ``forward``: ``torch.func.jvp`` / ``vmap``
  work through the whole generator;
* float64 inputs are computed in float64 (NVIDIA casts to float32), for finite-difference checks;
* deterministic initialisation from ``seed`` with a local ``torch.Generator``;
* ``noise_mode="random"`` takes an optional ``generator`` (default: the global RNG, as NVIDIA).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from tangentlens import forward_rules
from tangentlens._extension import Impl
from tangentlens.bias_act import bias_act
from tangentlens.reference.bias_act import ACTIVATIONS
from tangentlens.resample import conv2d_resample, setup_filter, upsample2d

__all__ = [
    "Conv2dLayer",
    "FullyConnectedLayer",
    "MappingNetwork",
    "StyleGAN2Generator",
    "SynthesisBlock",
    "SynthesisLayer",
    "SynthesisNetwork",
    "ToRGBLayer",
    "normalize_2nd_moment",
]

NoiseMode = Literal["random", "const", "none"]
NOISE_MODES = ("random", "const", "none")
ARCHITECTURES = ("orig", "skip", "resnet")
DEFAULT_FILTER = (1, 3, 3, 1)


def _randn(shape: Sequence[int], generator: torch.Generator | None) -> torch.Tensor:
    # Always drawn on the CPU in float32, so a seed gives the same numbers on any machine.
    return torch.randn(list(shape), generator=generator, dtype=torch.float32, device="cpu")


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    # NVIDIA computes in float32; float64 is kept so finite-difference checks are meaningful.
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _check_noise_mode(noise_mode: str) -> None:
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode: expected one of {NOISE_MODES}, got {noise_mode!r}")


def _check_layer_noise(noise: torch.Tensor, resolution: int) -> torch.Tensor:
    if (
        not isinstance(noise, torch.Tensor)
        or tuple(noise.shape[-2:]) != (resolution, resolution)
        or (noise.ndim not in (2, 4) or (noise.ndim == 4 and noise.shape[1] != 1))
    ):
        raise ValueError(
            f"noise: expected [N, 1, {resolution}, {resolution}] or [{resolution}, {resolution}], "
            f"got {tuple(getattr(noise, 'shape', ()))}"
        )
    return noise


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale each row to unit mean square (StyleGAN's pixel norm of the latent)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class FullyConnectedLayer(nn.Module):
    """Linear layer with equalized learning rate: ``act(x @ (weight * wg).T + bias * bg)``.

    ``weight`` [out, in] is initialised ``randn / lr_multiplier`` and scaled at run time by
    ``wg = lr_multiplier / sqrt(in)``; ``bias`` starts at ``bias_init`` and is scaled by
    ``bg = lr_multiplier``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
        *,
        generator: torch.Generator | None = None,
        impl: Impl = "auto",
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.impl = impl
        self.weight = nn.Parameter(_randn([out_features, in_features], generator) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        y = x.matmul(w.t())  # under autocast y is in the low dtype while x is not
        return bias_act(y, None if b is None else b.to(y.dtype), act=self.activation, impl=self.impl)

    def forward_stacked(self, X: torch.Tensor) -> torch.Tensor:
        """Primal and tangents stacked ``[B, 1 + k, in]`` (see tangentlens.forward_rules); in float32 (float64
        for float64) under autocast too: a style is one row of products per sample, cheap and
        multiplicative."""
        X = X.to(forward_rules.accumulation_dtype(X.dtype))
        w = self.weight.to(X.dtype) * self.weight_gain
        b = None if self.bias is None else self.bias.to(X.dtype) * self.bias_gain
        with forward_rules.full_precision(X.device.type):
            if self.activation == "linear":
                return forward_rules.linear_stacked(X, w, b)
            return forward_rules.bias_act_stacked(X @ w.t(), b, act=self.activation, impl=self.impl)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"
        )


class MappingNetwork(nn.Module):
    """z (and optional label c) to w: ``fc0 .. fc{L-1}`` after normalising z (and the embedded c).

    ``forward`` returns ws [N, num_ws, w_dim] (or [N, w_dim] when ``num_ws`` is None), truncated toward
    the tracked average ``w_avg`` with ``truncation_psi`` on the first ``truncation_cutoff`` ws (all when
    None). ``update_emas=True`` updates ``w_avg`` (training only; leave False for metrics).
    """

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int | None,
        num_layers: int = 8,
        embed_features: int | None = None,
        layer_features: int | None = None,
        activation: str = "lrelu",
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.995,
        *,
        generator: torch.Generator | None = None,
        impl: Impl = "auto",
    ) -> None:
        super().__init__()
        if z_dim + c_dim <= 0:
            raise ValueError(f"z_dim + c_dim: expected > 0, got z_dim={z_dim}, c_dim={c_dim}")
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features, generator=generator, impl=impl)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(
                features[idx],
                features[idx + 1],
                activation=activation,
                lr_multiplier=lr_multiplier,
                generator=generator,
                impl=impl,
            )
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> torch.Tensor:
        x = None
        if self.z_dim > 0:
            if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.z_dim:
                raise ValueError(f"z: expected shape [N, {self.z_dim}], got {tuple(getattr(z, 'shape', ()))}")
            x = normalize_2nd_moment(z.to(_compute_dtype(z)))
        if self.c_dim > 0:
            if not isinstance(c, torch.Tensor) or c.ndim != 2 or c.shape[1] != self.c_dim:
                raise ValueError(f"c: expected shape [N, {self.c_dim}], got {tuple(getattr(c, 'shape', ()))}")
            if x is not None and c.shape[0] != x.shape[0]:
                raise ValueError(f"c: expected {x.shape[0]} rows like z, got {c.shape[0]}")
            dtype = x.dtype if x is not None else _compute_dtype(c)
            y = normalize_2nd_moment(self.embed(c.to(dtype)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)

        if update_emas and self.w_avg_beta is not None:
            with torch.no_grad():
                self.w_avg.copy_(
                    x.detach().mean(dim=0).to(self.w_avg.dtype).lerp(self.w_avg, self.w_avg_beta)
                )

        if self.num_ws is not None:
            # a real copy per ws, as NVIDIA's repeat: an expanded view would make every ws one memory
            # location, which torch.func (jvp through synthesis) and in-place edits of ws refuse
            x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise ValueError(
                    "truncation_psi: needs w_avg, but this network was built with w_avg_beta=None"
                )
            w_avg = self.w_avg.to(x.dtype)
            trunc = w_avg.lerp(x, truncation_psi)
            if self.num_ws is None or truncation_cutoff is None:
                x = trunc
            else:
                # Only the first truncation_cutoff ws are truncated (a static mask: no in-place write).
                keep = torch.arange(self.num_ws, device=x.device) < truncation_cutoff
                x = torch.where(keep[None, :, None], trunc, x)
        return x

    def ws_and_tangents(
        self,
        z: torch.Tensor,
        tz: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ws, tws)`` for ``tz [N, k, z_dim]``: k JVPs by torch.func (a small MLP), kept in float32 under
        autocast since the ws place the path's points. Not named ``forward_jvp``: tangentlens.jvp takes a
        module with that method for one with stacked rules, and the mapping's generic route stays as it is."""

        def mapping(zz: torch.Tensor) -> torch.Tensor:
            return self(zz, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)

        with forward_rules.full_precision(z.device.type):
            return torch.func.vmap(
                lambda t: torch.func.jvp(mapping, (z,), (t,)), in_dims=1, out_dims=(None, 1)
            )(tz.contiguous())


class Conv2dLayer(nn.Module):
    """Equalized-lr convolution with optional resampling (only the resnet skip path uses it here)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        up: int = 1,
        down: int = 1,
        resample_filter: Sequence[float] = DEFAULT_FILTER,
        conv_clamp: float | None = None,
        *,
        generator: torch.Generator | None = None,
        impl: Impl = "auto",
    ) -> None:
        super().__init__()
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.impl = impl
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = ACTIVATIONS[activation].def_gain
        self.weight = nn.Parameter(_randn([out_channels, in_channels, kernel_size, kernel_size], generator))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        b = self.bias.to(x.dtype) if self.bias is not None else None
        x = conv2d_resample(
            x,
            w,
            f=self.resample_filter.to(x.dtype),
            up=self.up,
            down=self.down,
            padding=self.padding,
            flip_weight=(self.up == 1),
        )
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp, impl=self.impl)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (upsampling by 2 for a block's conv0) + noise + bias + lrelu."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        activation: str = "lrelu",
        resample_filter: Sequence[float] = DEFAULT_FILTER,
        conv_clamp: float | None = None,
        *,
        generator: torch.Generator | None = None,
        impl: Impl = "auto",
    ) -> None:
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.impl = impl
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = ACTIVATIONS[activation].def_gain
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1, generator=generator, impl=impl)
        self.weight = nn.Parameter(_randn([out_channels, in_channels, kernel_size, kernel_size], generator))
        if use_noise:
            self.register_buffer("noise_const", _randn([resolution, resolution], generator))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def _scaled_noise(
        self,
        noise: torch.Tensor | None,
        noise_mode: NoiseMode,
        x: torch.Tensor,
        generator: torch.Generator | None,
    ) -> torch.Tensor | None:
        """The noise added after the convolution, times ``noise_strength``: the given one, else that of
        ``noise_mode`` (per-pixel random for x's batch, the stored constant, or none)."""
        if not self.use_noise:
            return None
        if noise is not None:
            return _check_layer_noise(noise, self.resolution) * self.noise_strength
        if noise_mode == "random":
            shape = [x.shape[0], 1, self.resolution, self.resolution]
            return (
                torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype) * self.noise_strength
            )
        if noise_mode == "const":
            return self.noise_const * self.noise_strength
        return None

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise_mode: NoiseMode = "random",
        fused_modconv: bool = True,
        gain: float = 1,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``noise`` (``[N, 1, R, R]`` or ``[R, R]``, unscaled) replaces the noise of ``noise_mode``."""
        _check_noise_mode(noise_mode)
        styles = self.affine(w)
        noise = self._scaled_noise(noise, noise_mode, x, generator)
        x = forward_rules.modulated_conv2d(
            x,
            self.weight,
            styles,
            noise=noise,
            up=self.up,
            padding=self.padding,
            resample_filter=self.resample_filter,
            flip_weight=(self.up == 1),  # the transposed-conv orientation NVIDIA's up=2 path uses
            fused_modconv=fused_modconv,
            impl=self.impl,
        )
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        b = self.bias.to(x.dtype)
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp, impl=self.impl)

    def forward_stacked(
        self,
        X: torch.Tensor,
        W: torch.Tensor,
        noise_mode: NoiseMode = "const",
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``X [B, 1+k, I, H, W]``, ``W [B, 1+k, w_dim]`` -> stacked output (constant, given or no noise)."""
        if noise is None and noise_mode == "random":
            raise ValueError("noise_mode: the stacked JVP needs deterministic noise ('const' or 'none')")
        S = self.affine.forward_stacked(W)
        noise = self._scaled_noise(noise, noise_mode, X, None)
        Y = forward_rules.modulated_conv2d_stacked(
            X,
            self.weight,
            S,
            up=self.up,
            padding=self.padding,
            resample_filter=self.resample_filter,
            flip_weight=(self.up == 1),
            noise=noise,
        )
        return forward_rules.bias_act_stacked(
            Y,
            self.bias.to(Y.dtype),
            act=self.activation,
            gain=self.act_gain,
            clamp=self.conv_clamp,
            impl=self.impl,
        )


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution to image channels, without demodulation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        kernel_size: int = 1,
        conv_clamp: float | None = None,
        *,
        generator: torch.Generator | None = None,
        impl: Impl = "auto",
    ) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.impl = impl
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1, generator=generator, impl=impl)
        self.weight = nn.Parameter(_randn([out_channels, in_channels, kernel_size, kernel_size], generator))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = forward_rules.modulated_conv2d(
            x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv, impl=self.impl
        )
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp, impl=self.impl)

    def forward_stacked(self, X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        S = self.affine.forward_stacked(W) * self.weight_gain
        Y = forward_rules.modulated_conv2d_stacked(X, self.weight, S, demodulate=False)
        return forward_rules.bias_act_stacked(Y, self.bias.to(Y.dtype), clamp=self.conv_clamp, impl=self.impl)


class SynthesisBlock(nn.Module):
    """One resolution: (const | conv0 with 2x upsampling), conv1, torgb; the image is upsampled and summed.

    ``architecture``: "skip" (config F), "orig" (torgb only in the last block) or "resnet" (a 1x1
    upsampling skip convolution, outputs scaled by sqrt(1/2)).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        architecture: str = "skip",
        resample_filter: Sequence[float] = DEFAULT_FILTER,
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        *,
        generator: torch.Generator | None = None,
        impl: Impl = "auto",
        **layer_kwargs: Any,
    ) -> None:
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture: expected one of {ARCHITECTURES}, got {architecture!r}")
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0
        common = dict(w_dim=w_dim, resolution=resolution, conv_clamp=conv_clamp)
        if in_channels == 0:
            self.const = nn.Parameter(_randn([out_channels, resolution, resolution], generator))
        else:
            self.conv0 = SynthesisLayer(
                in_channels,
                out_channels,
                up=2,
                resample_filter=resample_filter,
                generator=generator,
                impl=impl,
                **common,
                **layer_kwargs,
            )
            self.num_conv += 1
        # conv1 does not resample; as in NVIDIA's code it keeps the default filter (an unused buffer).
        self.conv1 = SynthesisLayer(
            out_channels, out_channels, generator=generator, impl=impl, **common, **layer_kwargs
        )
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(
                out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp, generator=generator, impl=impl
            )
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(
                in_channels,
                out_channels,
                kernel_size=1,
                bias=False,
                up=2,
                resample_filter=resample_filter,
                generator=generator,
                impl=impl,
            )

    def _split_noise(
        self, noise: Sequence[torch.Tensor | None] | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if noise is None:
            return None, None
        if len(noise) != self.num_conv:
            raise ValueError(
                f"noise: expected {self.num_conv} tensors for block b{self.resolution}, got {len(noise)}"
            )
        return (None, noise[0]) if self.in_channels == 0 else (noise[0], noise[1])

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        force_fp32: bool = False,
        fused_modconv: bool = True,
        noise: Sequence[torch.Tensor | None] | None = None,
        **layer_kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``noise``: one tensor (or None) per conv layer of the block, conv0 first (see
        ``SynthesisNetwork.noise_shapes``)."""
        w_iter = iter(ws.unbind(dim=1))
        n0, n1 = self._split_noise(noise)
        dtype = torch.float16 if self.use_fp16 and not force_fp32 else ws.dtype
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, noise=n1, **layer_kwargs)
        elif self.architecture == "resnet":
            x = x.to(dtype)
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, noise=n0, **layer_kwargs)
            x = self.conv1(
                x, next(w_iter), fused_modconv=fused_modconv, gain=math.sqrt(0.5), noise=n1, **layer_kwargs
            )
            x = y + x
        else:
            x = x.to(dtype)
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, noise=n0, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, noise=n1, **layer_kwargs)

        if img is not None:
            img = upsample2d(img, self.resample_filter.to(img.dtype))
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv).to(ws.dtype)
            img = img + y if img is not None else y
        return x, img

    def forward_stacked(
        self,
        X: torch.Tensor | None,
        IMG: torch.Tensor | None,
        WS: torch.Tensor,
        noise_mode: NoiseMode = "const",
        noise: Sequence[torch.Tensor | None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stacked primal and tangents: ``X [B, 1+k, C, H, W]``, ``WS [B, 1+k, n, w_dim]``."""
        if self.architecture == "resnet" or self.use_fp16:
            raise NotImplementedError("forward_stacked: 'resnet' blocks and fp16 blocks are not covered")
        n0, n1 = self._split_noise(noise)
        ws = WS.unbind(dim=2)
        i = 0
        if self.in_channels == 0:
            B, K1 = WS.shape[:2]
            x = self.const.to(WS.dtype).unsqueeze(0)
            X = forward_rules.stack(x.expand(B, -1, -1, -1), None, K1 - 1)  # the constant has no tangent
        else:
            X = self.conv0.forward_stacked(X, ws[i], noise_mode, n0)
            i += 1
        X = self.conv1.forward_stacked(X, ws[i], noise_mode, n1)
        i += 1
        if IMG is not None:  # linear: the whole stack through the same filter
            B, K1 = IMG.shape[:2]
            up = upsample2d(IMG.reshape(B * K1, *IMG.shape[2:]), self.resample_filter.to(IMG.dtype))
            IMG = up.reshape(B, K1, *up.shape[1:])
        if self.is_last or self.architecture == "skip":
            Y = self.torgb.forward_stacked(X, ws[i])
            IMG = IMG + Y if IMG is not None else Y
        return X, IMG


def _check_resolution(img_resolution: int) -> None:
    if (
        not isinstance(img_resolution, int)
        or img_resolution < 4
        or img_resolution & (img_resolution - 1) != 0
    ):
        raise ValueError(f"img_resolution: expected a power of two >= 4, got {img_resolution!r}")


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] to images [N, img_channels, R, R]; blocks ``b4, b8, ..., bR``.

    Block channels are ``min(channel_base // res, channel_max)``. Block ``b{res}`` reads ws
    ``[w_idx, w_idx + num_conv + num_torgb)`` and advances ``w_idx`` by ``num_conv``: a block's torgb shares
    its w with the next block's conv0, so ``num_ws = 2 * log2(R) - 2``. The top ``num_fp16_res``
    resolutions run in float16 unless ``force_fp32``.
    """

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        *,
        generator: torch.Generator | None = None,
        impl: Impl = "auto",
        **block_kwargs: Any,
    ) -> None:
        super().__init__()
        _check_resolution(img_resolution)
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(math.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(2, self.img_resolution_log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        if min(channels.values()) < 1:
            raise ValueError(
                f"channel_base: expected >= img_resolution ({img_resolution}) so every block has a channel, "
                f"got {channel_base}"
            )
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            is_last = res == img_resolution
            block = SynthesisBlock(
                channels[res // 2] if res > 4 else 0,
                channels[res],
                w_dim=w_dim,
                resolution=res,
                img_channels=img_channels,
                is_last=is_last,
                use_fp16=res >= fp16_resolution,
                generator=generator,
                impl=impl,
                **block_kwargs,
            )
            self.num_ws += block.num_conv
            if is_last:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def forward(
        self,
        ws: torch.Tensor,
        noise_mode: NoiseMode = "random",
        force_fp32: bool = False,
        fused_modconv: bool = True,
        generator: torch.Generator | None = None,
        noise: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Images [N, img_channels, R, R] from ws [N, num_ws, w_dim].

        ``noise_mode``: "random" draws per-pixel noise (from ``generator``, else the global RNG; not
        reproducible across devices), "const" uses the stored ``noise_const`` buffers (deterministic), "none"
        adds no noise. ``noise``: explicit unscaled noise, one ``[N, 1, R, R]`` tensor per conv layer in the
        order of :meth:`noise_shapes` (per-sample noise, e.g. from a counter-based RNG); it overrides
        ``noise_mode``.
        """
        _check_noise_mode(noise_mode)
        if (
            not isinstance(ws, torch.Tensor)
            or ws.ndim != 3
            or tuple(ws.shape[1:]) != (self.num_ws, self.w_dim)
        ):
            raise ValueError(
                f"ws: expected shape [N, {self.num_ws}, {self.w_dim}], got {tuple(getattr(ws, 'shape', ()))}"
            )
        ws = ws.to(_compute_dtype(ws))
        per_block = self._block_noise(noise)
        x = img = None
        w_idx = 0
        for res, block_noise in zip(self.block_resolutions, per_block, strict=True):
            block = getattr(self, f"b{res}")
            cur_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(
                x,
                img,
                cur_ws,
                force_fp32=force_fp32,
                fused_modconv=fused_modconv,
                noise_mode=noise_mode,
                generator=generator,
                noise=block_noise,
            )
        return img

    def noise_shapes(self) -> list[tuple[int, int]]:
        """``(H, W)`` of each conv layer's noise input, in execution order (the ``noise`` argument)."""
        shapes = []
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            shapes += [(res, res)] * block.num_conv
        return shapes

    def _block_noise(self, noise: Sequence[torch.Tensor] | None) -> list[Sequence[torch.Tensor] | None]:
        if noise is None:
            return [None] * len(self.block_resolutions)
        want = len(self.noise_shapes())
        if isinstance(noise, torch.Tensor) or len(noise) != want:
            raise ValueError(
                f"noise: expected a sequence of {want} tensors (noise_shapes()), got {type(noise).__name__}"
            )
        out, i = [], 0
        for res in self.block_resolutions:
            n = getattr(self, f"b{res}").num_conv
            out.append(list(noise[i : i + n]))
            i += n
        return out

    def forward_jvp(
        self,
        ws: torch.Tensor,
        tws: torch.Tensor,
        noise_mode: NoiseMode = "const",
        noise: Sequence[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and their tangents ``[N, k, C, R, R]`` along ``tws [N, k, num_ws, w_dim]``, in one stacked
        pass (tangentlens.forward_rules); the same maths as ``torch.func.jvp`` of ``forward`` (fp32/fp64,
        noise "const" or "none")."""
        _check_noise_mode(noise_mode)
        if tws.ndim != 4 or tws.shape[0] != ws.shape[0] or tuple(tws.shape[2:]) != (self.num_ws, self.w_dim):
            raise ValueError(
                f"tws: expected shape [{ws.shape[0]}, k, {self.num_ws}, {self.w_dim}], got {tuple(tws.shape)}"
            )
        dtype = _compute_dtype(ws)
        WS = forward_rules.stack(ws.to(dtype), tws.to(dtype), tws.shape[1])
        X = IMG = None
        w_idx = 0
        for res, block_noise in zip(self.block_resolutions, self._block_noise(noise), strict=True):
            block = getattr(self, f"b{res}")
            cur = WS.narrow(2, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            X, IMG = block.forward_stacked(X, IMG, cur, noise_mode, block_noise)
        assert IMG is not None
        return forward_rules.unstack(IMG)


class StyleGAN2Generator(nn.Module):
    """StyleGAN2 generator G(z, c) = synthesis(mapping(z, c)) with NVIDIA's ``G_ema`` interface and names.

    ``seed`` initialises every parameter and buffer from a local ``torch.Generator`` (the global RNG is not
    touched; the same seed gives the same parameters on any machine). ``impl`` is passed to ``bias_act``.
    ``mapping_kwargs`` / ``synthesis_kwargs`` reach ``MappingNetwork`` / ``SynthesisNetwork`` (e.g.
    ``architecture``, ``num_fp16_res``, ``resample_filter``, ``lr_multiplier``).
    """

    def __init__(
        self,
        z_dim: int = 512,
        c_dim: int = 0,
        w_dim: int = 512,
        img_resolution: int = 256,
        img_channels: int = 3,
        *,
        channel_base: int = 32768,
        channel_max: int = 512,
        mapping_layers: int = 8,
        conv_clamp: float | None = None,
        seed: int = 0,
        impl: Impl = "auto",
        mapping_kwargs: dict[str, Any] | None = None,
        synthesis_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        _check_resolution(img_resolution)
        if impl not in ("auto", "native", "reference"):
            raise ValueError(f"impl: expected 'auto', 'native' or 'reference', got {impl!r}")
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        gen = torch.Generator(device="cpu").manual_seed(seed)
        # Synthesis first, as NVIDIA builds it (mapping needs its num_ws).
        self.synthesis = SynthesisNetwork(
            w_dim=w_dim,
            img_resolution=img_resolution,
            img_channels=img_channels,
            channel_base=channel_base,
            channel_max=channel_max,
            conv_clamp=conv_clamp,
            generator=gen,
            impl=impl,
            **(synthesis_kwargs or {}),
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim=z_dim,
            c_dim=c_dim,
            w_dim=w_dim,
            num_ws=self.num_ws,
            num_layers=mapping_layers,
            generator=gen,
            impl=impl,
            **(mapping_kwargs or {}),
        )

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        noise_mode: NoiseMode = "const",
        force_fp32: bool = True,
        fused_modconv: bool = True,
        generator: torch.Generator | None = None,
        noise: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Images [N, img_channels, R, R] (about [-1, 1] when trained) from z [N, z_dim], c [N, c_dim]."""
        _check_noise_mode(noise_mode)
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(
            ws,
            noise_mode=noise_mode,
            force_fp32=force_fp32,
            fused_modconv=fused_modconv,
            generator=generator,
            noise=noise,
        )

    def forward_jvp(
        self,
        z: torch.Tensor,
        tz: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        noise_mode: NoiseMode = "const",
        noise: Sequence[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(G(z), J_z G v_k)`` for ``tz [N, k, z_dim]``: the mapping's JVPs by torch.func
        (:meth:`MappingNetwork.ws_and_tangents`), the synthesis network's by the stacked forward rules."""
        ws, tws = self.mapping.ws_and_tangents(z, tz, c, truncation_psi, truncation_cutoff)
        return self.synthesis.forward_jvp(ws, tws, noise_mode=noise_mode, noise=noise)
