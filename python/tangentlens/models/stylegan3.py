"""StyleGAN3 generator (configs T and R) with NVIDIA's interface and parameter names.

Written for tangentlens after the architecture of NVlabs' stylegan3 ``training/networks_stylegan3.py``
("Alias-Free Generative Adversarial Networks"): module, parameter and buffer names match NVIDIA's
``G_ema`` (``mapping.fc0.weight``, ``mapping.w_avg``, ``synthesis.input.freqs``,
``synthesis.L3_52_512.affine.weight``, ``synthesis.L3_52_512.up_filter``, ``...magnitude_ema``), so
``load_state_dict`` of its state dict works. The synthesis network is

* ``input``: Fourier features (a grid of ``channels`` sinusoids whose frequencies and phases are rotated and
  translated by an affine transform of ``ws[:, 0]``), then a learned channel mixing;
* ``L0 .. L{num_layers}``: modulated convolutions (styles from ``ws[:, i + 1]``, weight demodulation, the
  input gain ``magnitude_ema^-1/2``) followed by :func:`tangentlens.filtered_lrelu.filtered_lrelu`
  (upsample, bias, leaky ReLU with gain and clamp, low-pass filter, downsample); the last layer is the
  ToRGB layer (1x1, no demodulation, linear, clamped);
* the output times ``output_scale``.

Layer geometry (cutoffs, stopbands, sampling rates, sizes, channels, Kaiser / jinc filters) is computed from
the constructor arguments as NVIDIA computes it. Config T: ``conv_kernel=3``; config R: ``conv_kernel=1``,
``use_radial_filters=True`` (NVIDIA's train.py also doubles ``channel_base`` and ``channel_max``).

Differences from NVIDIA's code, none of which changes a result:

* float64 inputs are computed in float64 (NVIDIA casts to float32), for finite-difference checks and
  float64 parity tests; float16 layers only on CUDA and only with ``force_fp32=False``, as NVIDIA;
* no in-place ops in ``forward``: ``torch.func.jvp`` / ``vmap`` work through the whole generator;
* deterministic initialisation from ``seed`` with a local ``torch.Generator``;
* the Kaiser low-pass filters are designed with NumPy (the same formulas as ``scipy.signal.firwin``), the
  radial filters' Bessel function ``J1`` by a midpoint rule (exact to rounding; no SciPy needed);
* ``forward_jvp``: images and K tangents in one stacked pass (:mod:`tangentlens.forward_rules`).

As in NVIDIA's code, the styles of the demodulated layers are normalised by their root mean square over the
whole batch before modulation: a sample's image depends on the rest of its batch at the level of the
demodulation's 1e-8 only (about 1e-10 relative).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tangentlens import forward_rules
from tangentlens._extension import Impl
from tangentlens.filtered_lrelu import filtered_lrelu
from tangentlens.models.stylegan2 import FullyConnectedLayer, MappingNetwork, _compute_dtype, _randn

__all__ = [
    "CONFIGS",
    "StyleGAN3Generator",
    "SynthesisInput",
    "SynthesisLayer",
    "SynthesisNetwork",
    "design_lowpass_filter",
]

Config = Literal["stylegan3-t", "stylegan3-r"]
# what train.py's --cfg changes in the generator (besides doubling channel_base / channel_max for R)
CONFIGS: dict[str, dict[str, Any]] = {
    "stylegan3-t": dict(conv_kernel=3, use_radial_filters=False),
    "stylegan3-r": dict(conv_kernel=1, use_radial_filters=True),
}
NOISE_MODES = ("random", "const", "none")  # accepted for NVIDIA's interface; StyleGAN3 has no noise


# ---- filter design ---------------------------------------------------------------------------------------


def _kaiser_beta(atten: float) -> float:
    """Kaiser's empirical beta for a stopband attenuation in dB (as scipy.signal.kaiser_beta)."""
    if atten > 50:
        return 0.1102 * (atten - 8.7)
    if atten > 21:
        return 0.5842 * (atten - 21) ** 0.4 + 0.07886 * (atten - 21)
    return 0.0


def _kaiser_window(numtaps: int, width: float, fs: float) -> np.ndarray:
    """The Kaiser window of a filter with ``numtaps`` taps and transition width ``width`` (Hz at rate fs)."""
    atten = 2.285 * (numtaps - 1) * np.pi * (float(width) / (0.5 * fs)) + 7.95
    return np.kaiser(numtaps, _kaiser_beta(atten))


def _bessel_j1(x: np.ndarray, nodes: int = 256) -> np.ndarray:
    """``J1(x) = (1/pi) int_0^pi cos(t - x sin t) dt`` by the midpoint rule: the integrand is periodic and
    analytic, so the rule converges geometrically (float64 rounding for |x| < 100 at 256 nodes)."""
    t = (np.arange(nodes) + 0.5) * (np.pi / nodes)
    return np.cos(t - np.asarray(x, dtype=np.float64)[..., None] * np.sin(t)).mean(axis=-1)


def design_lowpass_filter(
    numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False
) -> torch.Tensor | None:
    """NVIDIA's low-pass filters: None for one tap (identity); a separable Kaiser-windowed sinc
    (``scipy.signal.firwin(numtaps, cutoff, width=width, fs=fs)``, 1-D float32); or with ``radial`` a
    radially symmetric jinc ``J1(2 pi cutoff r) / (pi r)`` under the outer product of the Kaiser window,
    normalised to sum 1 (2-D float32)."""
    if numtaps < 1:
        raise ValueError(f"numtaps: expected >= 1, got {numtaps}")
    if numtaps == 1:
        return None
    window = _kaiser_window(numtaps, width, fs)
    if not radial:
        c = cutoff / (0.5 * fs)
        m = np.arange(numtaps) - 0.5 * (numtaps - 1)
        h = c * np.sinc(c * m) * window
        return torch.as_tensor(h / np.sum(h), dtype=torch.float32)
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    f = _bessel_j1(2 * cutoff * (np.pi * r)) / (np.pi * r)
    f = f * np.outer(window, window)
    return torch.as_tensor(f / np.sum(f), dtype=torch.float32)


# ---- layers ----------------------------------------------------------------------------------------------


class SynthesisInput(nn.Module):
    """Fourier features ``[N, channels, size, size]`` from ``w [N, w_dim]``.

    ``affine(w) = (r_c, r_s, t_x, t_y)`` (normalised so ``r_c² + r_s² = 1``) rotates and translates the
    feature grid (on top of the user-set inverse ``transform`` buffer); frequencies whose rotated magnitude
    leaves the band are damped; then ``sin(2 pi (grid . freq + phase))`` and a learned channel mixing.
    """

    def __init__(
        self,
        w_dim: int,
        channels: int,
        size: int,
        sampling_rate: float,
        bandwidth: float,
        *,
        generator: torch.Generator | None = None,
        impl: Impl = "auto",
    ) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.channels = channels
        self.size = (int(size), int(size))  # (width, height)
        self.sampling_rate = float(sampling_rate)
        self.bandwidth = float(bandwidth)
        # Frequencies drawn uniformly-ish from a disc of radius bandwidth, phases uniform in [-1/2, 1/2).
        freqs = _randn([channels, 2], generator)
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        phases = torch.rand([channels], generator=generator) - 0.5
        self.weight = nn.Parameter(_randn([channels, channels], generator))
        self.affine = FullyConnectedLayer(w_dim, 4, generator=generator, impl=impl)
        with torch.no_grad():  # starts at the identity transform: weight 0, bias (1, 0, 0, 0)
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        self.register_buffer("transform", torch.eye(3, 3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", phases)

    def _transforms(self, w: torch.Tensor) -> torch.Tensor:
        """``[N, 3, 3]``: the learned rotation, then the translation, then the user transform."""
        t = self.affine(w)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        one, zero = torch.ones_like(t[:, 0]), torch.zeros_like(t[:, 0])
        rot = torch.stack([t[:, 0], -t[:, 1], zero, t[:, 1], t[:, 0], zero, zero, zero, one], dim=1).reshape(
            -1, 3, 3
        )
        shift = torch.stack([one, zero, -t[:, 2], zero, one, -t[:, 3], zero, zero, one], dim=1).reshape(
            -1, 3, 3
        )
        return rot @ shift @ self.transform.to(w.dtype).unsqueeze(0)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        dtype = w.dtype
        transforms = self._transforms(w)
        freqs = self.freqs.to(dtype).unsqueeze(0)
        phases = self.phases.to(dtype).unsqueeze(0) + (freqs @ transforms[:, :2, 2:]).squeeze(2)
        freqs = freqs @ transforms[:, :2, :2]
        band = self.sampling_rate / 2 - self.bandwidth
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / band).clamp(0, 1)
        # The sampling grid: pixel centres in [-1, 1] scaled to the input's extent in cycles.
        sx, sy = (0.5 * s / self.sampling_rate for s in self.size)
        theta = torch.tensor([[sx, 0.0, 0.0], [0.0, sy, 0.0]], dtype=dtype, device=w.device)
        grid = F.affine_grid(theta.unsqueeze(0), [1, 1, self.size[1], self.size[0]], align_corners=False)
        x = (grid.unsqueeze(3) @ freqs.transpose(1, 2).unsqueeze(1).unsqueeze(2)).squeeze(3)  # [N, H, W, C]
        x = torch.sin((x + phases.unsqueeze(1).unsqueeze(2)) * (2 * np.pi))
        x = x * amplitudes.unsqueeze(1).unsqueeze(2)
        x = x @ (self.weight.to(dtype) / np.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)

    def forward_stacked(self, W: torch.Tensor) -> torch.Tensor:
        """``W [B, 1 + k, w_dim]`` -> ``[B, 1 + k, C, H, W]`` (a small layer: torch.func over tangents)."""
        w, tw = W[:, 0], W[:, 1:]
        x, tx = torch.func.vmap(
            lambda t: torch.func.jvp(self.forward, (w,), (t,)), in_dims=1, out_dims=(None, 1)
        )(tw)
        return torch.cat([x.unsqueeze(1), tx], dim=1)

    def extra_repr(self) -> str:
        return (
            f"w_dim={self.w_dim}, channels={self.channels}, size={list(self.size)}, "
            f"sampling_rate={self.sampling_rate:g}, bandwidth={self.bandwidth:g}"
        )


def _rms_normalized(weight: torch.Tensor) -> torch.Tensor:
    """Each output filter scaled to unit RMS (StyleGAN3's weight pre-normalisation before demodulation)."""
    return weight * weight.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()


def _modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool,
    padding: int,
    input_gain: torch.Tensor,
) -> torch.Tensor:
    """StyleGAN3's modulated convolution, as one grouped convolution over the batch (NVIDIA's form): the
    weight and the styles are pre-normalised (the styles by their RMS over the whole batch), modulated,
    demodulated and scaled by the input gain."""
    n, in_channels = styles.shape
    w = weight.to(styles.dtype)
    if demodulate:
        w = _rms_normalized(w)
        styles = styles * styles.square().mean().rsqrt()
    w = w.unsqueeze(0) * styles.reshape(n, 1, in_channels, 1, 1)  # [N, O, I, k, k]
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(n, -1, 1, 1, 1)
    w = w * input_gain.reshape(1, 1, 1, 1, 1)
    out = F.conv2d(
        x.reshape(1, -1, *x.shape[2:]),
        w.reshape(-1, in_channels, *w.shape[3:]).to(x.dtype),
        padding=padding,
        groups=n,
    )
    return out.reshape(n, -1, *out.shape[2:])


def _check_int(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    return int(value)


class SynthesisLayer(nn.Module):
    """Modulated convolution + filtered leaky ReLU at the layer's sampling rates (ToRGB when ``is_torgb``).

    The leaky ReLU runs at ``tmp_sampling_rate = max(in, out) * lrelu_upsampling``: the convolution output
    is upsampled by ``up_factor`` with ``up_filter`` (cutoff ``in_cutoff``), activated, low-pass filtered
    with ``down_filter`` (cutoff ``out_cutoff``; radial in config R except the critically sampled layers)
    and downsampled by ``down_factor``. ``padding`` aligns the samples as NVIDIA's (Appendix C.3).
    """

    def __init__(
        self,
        w_dim: int,
        is_torgb: bool,
        is_critically_sampled: bool,
        use_fp16: bool,
        in_channels: int,
        out_channels: int,
        in_size: int,
        out_size: int,
        in_sampling_rate: int,
        out_sampling_rate: int,
        in_cutoff: float,
        out_cutoff: float,
        in_half_width: float,
        out_half_width: float,
        conv_kernel: int = 3,
        filter_size: int = 6,
        lrelu_upsampling: int = 2,
        use_radial_filters: bool = False,
        conv_clamp: float | None = 256,
        magnitude_ema_beta: float = 0.999,
        *,
        generator: torch.Generator | None = None,
        impl: Impl = "auto",
    ) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.is_torgb = bool(is_torgb)
        self.is_critically_sampled = bool(is_critically_sampled)
        self.use_fp16 = bool(use_fp16)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.in_size = (int(in_size), int(in_size))
        self.out_size = (int(out_size), int(out_size))
        self.in_sampling_rate = in_sampling_rate
        self.out_sampling_rate = out_sampling_rate
        self.tmp_sampling_rate = max(in_sampling_rate, out_sampling_rate) * (
            1 if is_torgb else lrelu_upsampling
        )
        self.in_cutoff = float(in_cutoff)
        self.out_cutoff = float(out_cutoff)
        self.in_half_width = float(in_half_width)
        self.out_half_width = float(out_half_width)
        self.conv_kernel = 1 if is_torgb else _check_int(conv_kernel, "conv_kernel", 1)
        self.conv_clamp = conv_clamp
        self.magnitude_ema_beta = magnitude_ema_beta
        self.impl = impl

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1, generator=generator, impl=impl)
        k = self.conv_kernel
        self.weight = nn.Parameter(_randn([out_channels, in_channels, k, k], generator))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))

        self.up_factor = int(np.rint(self.tmp_sampling_rate / in_sampling_rate))
        self.down_factor = int(np.rint(self.tmp_sampling_rate / out_sampling_rate))
        if (
            in_sampling_rate * self.up_factor != self.tmp_sampling_rate
            or out_sampling_rate * self.down_factor != self.tmp_sampling_rate
        ):
            raise ValueError(
                f"sampling rates: {in_sampling_rate} -> {out_sampling_rate} do not divide the activation "
                "rate "
                f"{self.tmp_sampling_rate}"
            )
        self.up_taps = filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
        self.down_taps = filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
        self.down_radial = bool(use_radial_filters) and not self.is_critically_sampled
        fs = self.tmp_sampling_rate
        self.register_buffer(
            "up_filter", design_lowpass_filter(self.up_taps, in_cutoff, in_half_width * 2, fs)
        )
        self.register_buffer(
            "down_filter",
            design_lowpass_filter(
                self.down_taps, out_cutoff, out_half_width * 2, fs, radial=self.down_radial
            ),
        )
        # Padding of the upsampled image: the output before downsampling spans the input after the
        # convolution and upsampling, less what the two filters consume; shifted by up // 2 (symmetric
        # sample positions).
        total = (out_size - 1) * self.down_factor + 1
        total -= (in_size + k - 1) * self.up_factor
        total += self.up_taps + self.down_taps - 2
        lo = (total + self.up_factor) // 2
        self.padding = [int(lo), int(total - lo), int(lo), int(total - lo)]
        self.gain = 1.0 if is_torgb else math.sqrt(2)
        self.slope = 1.0 if is_torgb else 0.2

    def _styles(self, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)
        return styles * self._torgb_gain() if self.is_torgb else styles

    def _torgb_gain(self) -> float:
        return 1 / np.sqrt(self.in_channels * self.conv_kernel**2)

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        update_emas: bool = False,
        force_fp32: bool = True,
    ) -> torch.Tensor:
        """``x [N, in_channels, in_size, in_size]``, ``w [N, w_dim]`` -> ``[N, out_channels, out_size,
        out_size]``. ``update_emas`` (training only) moves ``magnitude_ema`` toward x's mean square."""
        if update_emas:
            with torch.no_grad():
                current = x.detach().to(torch.float32).square().mean()
                self.magnitude_ema.copy_(current.lerp(self.magnitude_ema, self.magnitude_ema_beta))
        compute = _compute_dtype(w)
        fp16 = self.use_fp16 and not force_fp32 and x.device.type == "cuda"
        dtype = torch.float16 if fp16 else compute
        input_gain = self.magnitude_ema.to(compute).rsqrt()
        x = _modulated_conv2d(
            x.to(dtype),
            self.weight,
            self._styles(w),
            demodulate=not self.is_torgb,
            padding=self.conv_kernel - 1,
            input_gain=input_gain,
        )
        return filtered_lrelu(
            x, self.up_filter, self.down_filter, self.bias.to(x.dtype), **self._act_kwargs()
        )

    def _act_kwargs(self) -> dict[str, Any]:
        """This layer's filtered_lrelu arguments besides the filters and the bias."""
        return dict(
            up=self.up_factor,
            down=self.down_factor,
            padding=self.padding,
            gain=self.gain,
            slope=self.slope,
            clamp=self.conv_clamp,
            impl=self.impl,
        )

    def forward_stacked(self, X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """``X [B, 1 + k, I, H, W]``, ``W [B, 1 + k, w_dim]`` -> the stacked output (forward_rules)."""
        S = self.affine.forward_stacked(W)
        weight = self.weight.to(X.dtype)
        demodulate = not self.is_torgb
        if demodulate:
            weight = _rms_normalized(weight)
            S = forward_rules.rms_normalize_stacked(S)
        else:
            S = S * self._torgb_gain()
        Y = forward_rules.modulated_conv2d_stacked(
            X, weight, S, demodulate=demodulate, padding=self.conv_kernel - 1
        )
        Y = Y * self.magnitude_ema.to(X.dtype).rsqrt()
        return forward_rules.filtered_lrelu_stacked(
            Y, self.up_filter, self.down_filter, self.bias.to(Y.dtype), **self._act_kwargs()
        )

    def extra_repr(self) -> str:
        return (
            f"w_dim={self.w_dim}, is_torgb={self.is_torgb}, "
            f"is_critically_sampled={self.is_critically_sampled}, "
            f"in_sampling_rate={self.in_sampling_rate:g}, out_sampling_rate={self.out_sampling_rate:g}, "
            f"in_size={list(self.in_size)}, out_size={list(self.out_size)}, in_channels={self.in_channels}, "
            f"out_channels={self.out_channels}, up={self.up_factor}, down={self.down_factor}"
        )


def _check_resolution(img_resolution: object) -> int:
    if (
        isinstance(img_resolution, bool)
        or not isinstance(img_resolution, int)
        or img_resolution < 16
        or img_resolution & (img_resolution - 1) != 0
    ):
        raise ValueError(f"img_resolution: expected a power of two >= 16, got {img_resolution!r}")
    return img_resolution


def layer_geometry(
    img_resolution: int,
    img_channels: int,
    channel_base: int,
    channel_max: int,
    num_layers: int,
    num_critical: int,
    first_cutoff: float,
    first_stopband: float,
    last_stopband_rel: float,
    margin_size: int,
) -> dict[str, np.ndarray]:
    """Per layer 0..num_layers (NVIDIA's progression): cutoffs f_c and minimum stopbands f_t grow
    geometrically from the first layer's to the last's (the last ``num_critical`` layers at the output's);
    sampling rates are the powers of two above 2 f_t (at most img_resolution); half-widths f_h; sizes add a
    margin except in the last two layers; channels ``min(channel_base / 2 / f_c, channel_max)``."""
    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + margin_size * 2
    sizes[-2:] = img_resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = img_channels
    return dict(
        cutoffs=cutoffs,
        sampling_rates=sampling_rates,
        half_widths=half_widths,
        sizes=sizes,
        channels=channels,
    )


class SynthesisNetwork(nn.Module):
    """ws ``[N, num_ws, w_dim]`` (``num_ws = num_layers + 2``) to images ``[N, img_channels, R, R]``: the
    Fourier input from ``ws[:, 0]``, layers ``L{i}_{size}_{channels}`` from ``ws[:, i + 1]``, the ToRGB
    layer last, times ``output_scale``. The top ``num_fp16_res`` sampling rates may run in float16 (CUDA,
    ``force_fp32=False``)."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_layers: int = 14,
        num_critical: int = 2,
        first_cutoff: float = 2,
        first_stopband: float = 2**2.1,
        last_stopband_rel: float = 2**0.3,
        margin_size: int = 10,
        output_scale: float = 0.25,
        num_fp16_res: int = 4,
        *,
        generator: torch.Generator | None = None,
        impl: Impl = "auto",
        **layer_kwargs: Any,
    ) -> None:
        super().__init__()
        _check_resolution(img_resolution)
        _check_int(num_layers, "num_layers", 1)
        if not 0 <= num_critical < num_layers:
            raise ValueError(
                f"num_critical: expected an int in [0, num_layers={num_layers}), got {num_critical}"
            )
        self.w_dim = w_dim
        self.num_ws = num_layers + 2
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.num_layers = num_layers
        self.num_critical = num_critical
        self.margin_size = margin_size
        self.output_scale = output_scale
        self.num_fp16_res = num_fp16_res
        geo = layer_geometry(
            img_resolution,
            img_channels,
            channel_base,
            channel_max,
            num_layers,
            num_critical,
            first_cutoff,
            first_stopband,
            last_stopband_rel,
            margin_size,
        )
        rates, cutoffs, widths = geo["sampling_rates"], geo["cutoffs"], geo["half_widths"]
        sizes, channels = geo["sizes"], geo["channels"]
        if channels.min() < 1:
            raise ValueError(f"channel_base: {channel_base} leaves a layer without channels")
        self.input = SynthesisInput(
            w_dim,
            int(channels[0]),
            int(sizes[0]),
            float(rates[0]),
            float(cutoffs[0]),
            generator=generator,
            impl=impl,
        )
        self.layer_names: list[str] = []
        for idx in range(num_layers + 1):
            prev = max(idx - 1, 0)
            layer = SynthesisLayer(
                w_dim,
                is_torgb=idx == num_layers,
                is_critically_sampled=idx >= num_layers - num_critical,
                use_fp16=bool(rates[idx] * 2**num_fp16_res > img_resolution),
                in_channels=int(channels[prev]),
                out_channels=int(channels[idx]),
                in_size=int(sizes[prev]),
                out_size=int(sizes[idx]),
                in_sampling_rate=int(rates[prev]),
                out_sampling_rate=int(rates[idx]),
                in_cutoff=float(cutoffs[prev]),
                out_cutoff=float(cutoffs[idx]),
                in_half_width=float(widths[prev]),
                out_half_width=float(widths[idx]),
                generator=generator,
                impl=impl,
                **layer_kwargs,
            )
            name = f"L{idx}_{layer.out_size[0]}_{layer.out_channels}"
            setattr(self, name, layer)
            self.layer_names.append(name)

    def layers(self) -> list[SynthesisLayer]:
        return [getattr(self, name) for name in self.layer_names]

    def _check_ws(self, ws: object, name: str = "ws") -> torch.Tensor:
        if (
            not isinstance(ws, torch.Tensor)
            or ws.ndim != 3
            or tuple(ws.shape[1:]) != (self.num_ws, self.w_dim)
        ):
            raise ValueError(
                f"{name}: expected shape [N, {self.num_ws}, {self.w_dim}], "
                f"got {tuple(getattr(ws, 'shape', ()))}"
            )
        return ws

    def forward(
        self,
        ws: torch.Tensor,
        noise_mode: str = "const",
        force_fp32: bool = True,
        update_emas: bool = False,
    ) -> torch.Tensor:
        """Images ``[N, img_channels, R, R]`` (float32, or float64 for float64 ws). ``noise_mode`` is
        accepted for NVIDIA's interface (StyleGAN3 has no noise inputs)."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode: expected one of {NOISE_MODES}, got {noise_mode!r}")
        ws = self._check_ws(ws)
        dtype = _compute_dtype(ws)
        w_list = ws.to(dtype).unbind(dim=1)
        x = self.input(w_list[0])
        for layer, w in zip(self.layers(), w_list[1:], strict=True):
            x = layer(x, w, update_emas=update_emas, force_fp32=force_fp32)
        if self.output_scale != 1:
            x = x * self.output_scale
        return x.to(dtype)

    def forward_jvp(self, ws: torch.Tensor, tws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and their tangents ``[N, k, C, R, R]`` along ``tws [N, k, num_ws, w_dim]`` in one stacked
        pass (primal and k tangents share each convolution's weight); the same maths as ``torch.func.jvp``
        of ``forward`` (float32 / float64)."""
        ws = self._check_ws(ws)
        if not isinstance(tws, torch.Tensor) or tws.ndim != 4 or tws.shape[0] != ws.shape[0]:
            raise ValueError(
                f"tws: expected shape [{ws.shape[0]}, k, {self.num_ws}, {self.w_dim}], "
                f"got {tuple(getattr(tws, 'shape', ()))}"
            )
        self._check_ws(tws[:, 0], "tws[:, i]")
        dtype = _compute_dtype(ws)
        WS = forward_rules.stack(ws.to(dtype), tws.to(dtype), tws.shape[1])
        X = self.input.forward_stacked(WS[:, :, 0])
        for i, layer in enumerate(self.layers()):
            X = layer.forward_stacked(X, WS[:, :, i + 1])
        if self.output_scale != 1:
            X = X * self.output_scale
        return forward_rules.unstack(X)

    def extra_repr(self) -> str:
        return (
            f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
            f"img_channels={self.img_channels}, num_layers={self.num_layers}, "
            f"num_critical={self.num_critical}"
        )


class StyleGAN3Generator(nn.Module):
    """StyleGAN3 generator ``G(z, c) = synthesis(mapping(z, c))`` with NVIDIA's ``G_ema`` interface and names.

    Args:
        z_dim, c_dim, w_dim, img_resolution, img_channels: as NVIDIA's (``img_resolution`` a power of two
            >= 16).
        config: ``"stylegan3-t"`` (3x3 convolutions) or ``"stylegan3-r"`` (1x1 convolutions, radial
            downsampling filters); ``synthesis_kwargs`` override what it sets.
        channel_base, channel_max, conv_clamp: the synthesis network's (NVIDIA's train.py doubles the first
            two for R; pass them doubled to match its networks).
        mapping_layers: depth of the mapping network (2 in StyleGAN3).
        seed: initialises every parameter and buffer from a local ``torch.Generator``.
        impl: ``filtered_lrelu`` and ``bias_act`` implementations ("auto", "native", "reference").
        mapping_kwargs: ``lr_multiplier`` (0.01), ``w_avg_beta`` (0.998).
        synthesis_kwargs: ``num_layers`` (14), ``num_critical`` (2), ``first_cutoff`` (2), ``first_stopband``
            (2**2.1), ``last_stopband_rel`` (2**0.3), ``margin_size`` (10), ``output_scale`` (0.25),
            ``num_fp16_res`` (4), ``conv_kernel``, ``filter_size`` (6), ``lrelu_upsampling`` (2),
            ``use_radial_filters``, ``magnitude_ema_beta`` (0.999).
    """

    def __init__(
        self,
        z_dim: int = 512,
        c_dim: int = 0,
        w_dim: int = 512,
        img_resolution: int = 256,
        img_channels: int = 3,
        *,
        config: Config = "stylegan3-t",
        channel_base: int = 32768,
        channel_max: int = 512,
        mapping_layers: int = 2,
        conv_clamp: float | None = 256,
        seed: int = 0,
        impl: Impl = "auto",
        mapping_kwargs: Mapping[str, Any] | None = None,
        synthesis_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if config not in CONFIGS:
            raise ValueError(f"config: expected one of {sorted(CONFIGS)}, got {config!r}")
        if impl not in ("auto", "native", "reference"):
            raise ValueError(f"impl: expected 'auto', 'native' or 'reference', got {impl!r}")
        _check_resolution(img_resolution)
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.config = config
        gen = torch.Generator(device="cpu").manual_seed(seed)
        syn = {**CONFIGS[config], "conv_clamp": conv_clamp, **(synthesis_kwargs or {})}
        self.synthesis = SynthesisNetwork(
            w_dim,
            img_resolution,
            img_channels,
            channel_base=channel_base,
            channel_max=channel_max,
            generator=gen,
            impl=impl,
            **syn,
        )
        self.num_ws = self.synthesis.num_ws
        mapping = {"w_avg_beta": 0.998, **(mapping_kwargs or {})}
        unknown = sorted(set(mapping) - {"lr_multiplier", "w_avg_beta"})
        if unknown:
            raise ValueError(
                f"mapping_kwargs: StyleGAN3's mapping takes lr_multiplier and w_avg_beta, got {unknown}"
            )
        self.mapping = MappingNetwork(
            z_dim, c_dim, w_dim, self.num_ws, num_layers=mapping_layers, generator=gen, impl=impl, **mapping
        )

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
        noise_mode: str = "const",
        force_fp32: bool = True,
    ) -> torch.Tensor:
        """Images ``[N, img_channels, R, R]`` from ``z [N, z_dim]`` and ``c [N, c_dim]``."""
        ws = self.mapping(
            z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas
        )
        return self.synthesis(ws, noise_mode=noise_mode, force_fp32=force_fp32, update_emas=update_emas)

    def forward_jvp(
        self,
        z: torch.Tensor,
        tz: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(G(z), J_z G v_k)`` for ``tz [N, k, z_dim]``: the mapping's JVPs by torch.func
        (:meth:`MappingNetwork.ws_and_tangents`), the synthesis network's by the stacked forward rules."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode: expected one of {NOISE_MODES}, got {noise_mode!r}")
        ws, tws = self.mapping.ws_and_tangents(z, tz, c, truncation_psi, truncation_cutoff)
        return self.synthesis.forward_jvp(ws, tws)
