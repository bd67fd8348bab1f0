"""Perceptual Path Length (SPEC section 4): peer-exact presets, the exact JVP mode, statistics, streaming.

``ppl(generator, ...)`` draws sample i's latents, position t, labels and noise from ``(seed, i)`` only
(counter-based RNG), computes one distance per sample, trims and reports the mean with a bootstrap CI.
``ppl_distances(generator, z0, z1, t, ...)`` computes the per-sample distances of explicit latents, so a
peer's own samples can be replayed number for number.

One sample, for a path p (slerp of unit z in Z, lerp of w = f(z) in W, or torchmetrics' lerp of raw z):

* ``method="fd"``: ``d(G(p(t)), G(p(t + eps))) / eps**2`` (the peers' definition);
* ``method="jvp"``: the eps -> 0 limit ``|d/dt e(G(p(t)))|**2``: one JVP along the analytic path tangent
  through G and the distance's embedding e (LPIPS is a squared Euclidean distance of e), no eps, and no
  cancellation, so it survives fp16/bf16/TF32 where finite differences do not.

Images pass, in this order, through: conversion to [-1, 1] from the generator's range; uint8 quantisation
(torch-fidelity's protocol); 1 -> 3 channels for LPIPS; the centre crop; the resize; then the distance. All
steps but the quantisation are linear, so the JVP mode applies them to the tangent as well.
"""

from __future__ import annotations

import json
import math
import platform
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tangentlens import _streaming, paths
from tangentlens.bf16 import auto_precision, native_bf16
from tangentlens.distances import L2Distance, make_distance
from tangentlens.generators.adapters import TO_UNIT, GeneratorAdapter, as_generator, fingerprint
from tangentlens.jvp import PRECISIONS, Precision, _precision
from tangentlens.jvp import jvp as _engine_jvp
from tangentlens.lpips import LPIPS

__all__ = [
    "PRESETS",
    "FiniteDifferenceWarning",
    "PPLProtocol",
    "PPLResult",
    "bootstrap_ci",
    "ppl",
    "ppl_distances",
    "trim",
    "trimmed_stats",
]

Space = Literal["w", "z"]
Sampling = Literal["end", "full"]
Method = Literal["fd", "jvp"]
Interp = Literal["slerp", "lerp", "slerp_any", "slerp_any_unit"]
Percentile = tuple[float, Literal["lower", "higher", "linear", "nearest", "midpoint"]]
#: a precision, or "auto": bf16 for the exact mode where bf16 is native and fast and this model's probe
#: samples stay within AUTO_BF16_MAX_ERROR of float32, else fp32 (see _resolve_auto)
PPLPrecision = Literal[Precision, "auto"]

# precision="auto": the exact mode's probe samples computed in both precisions (median per-sample relative
# error of bf16 against float32 at most this, else float32 runs). On the bench StyleGAN2 the median is
# ~0.5 % (docs/ppl.md); a model that bf16 does not suit is off by far more.
AUTO_BF16_PROBE_SAMPLES = 8
AUTO_BF16_PROBE_SEED = 0xBF16
AUTO_BF16_MAX_ERROR = 0.02

# A generator output farther than this from [-1, 1] (after the range conversion) is a range error, e.g.
# [0, 255] images declared as [-1, 1]. Untrained networks reach a few units, so the bound is loose.
RANGE_LIMIT = 16.0


class FiniteDifferenceWarning(RuntimeWarning):
    """eps = 1e-4 finite differences that the precision or the image dtype make inexact."""


@dataclass(frozen=True)
class PPLProtocol:
    """Everything that defines a PPL number (SPEC 4). ``resize``: ``"box256"`` (box-downsample by
    ``resolution // 256``, NVIDIA), ``"area_or_bilinear:S"`` (area when larger than S, else bilinear,
    torchmetrics), ``"bilinear:S"`` (torch-fidelity) or ``"none"``."""

    name: str
    space: Space = "w"
    sampling: Sampling = "end"
    z_interp: Interp = "slerp"
    method: Method = "jvp"
    epsilon: float = 1e-4
    crop: bool = False
    resize: str = "box256"
    quantize_uint8: bool = False
    lpips_eps_mode: Literal["lpips", "torchmetrics"] = "lpips"
    lower: Percentile = (1.0, "lower")
    upper: Percentile = (99.0, "higher")
    num_samples: int | None = 50_000
    batch_size: int = 16
    precision: PPLPrecision = "fp32"


DEFAULT = PPLProtocol(name="tangentlens")
# the default protocol's batch on a CPU: small batches keep a layer's activations in cache (at 64² with 128
# channels, 4 samples per batch ran 1.2x faster than 16 on 2 cores); the batch never changes the result
CPU_BATCH_SIZE = 4
PRESETS: dict[str, PPLProtocol] = {
    # NVIDIA stylegan2-ada-pytorch `ppl2_wend`: W, end, no crop, box to 256, fp32, batch 2 per GPU.
    "stylegan2": PPLProtocol(name="stylegan2", method="fd", batch_size=2),
    # NVIDIA `ppl_{z,w}{full,end}` (the StyleGAN paper's metric): the face crop; space/sampling as given.
    "stylegan2_crop": PPLProtocol(name="stylegan2_crop", method="fd", crop=True, batch_size=2),
    # torchmetrics.image.PerceptualPathLength: lerp of raw z at t = 0, area/bilinear to 64, LPIPS with
    # eps inside the sqrt, both percentiles 'lower', 10 000 samples.
    "torchmetrics": PPLProtocol(
        name="torchmetrics",
        space="z",
        z_interp="lerp",
        method="fd",
        resize="area_or_bilinear:64",
        lpips_eps_mode="torchmetrics",
        upper=(99.0, "lower"),
        num_samples=10_000,
        batch_size=64,
    ),
    # torch-fidelity calculate_ppl: lerp of z at t = 0, uint8 images, bilinear to 64; num_samples required.
    "torch_fidelity": PPLProtocol(
        name="torch_fidelity",
        space="z",
        z_interp="lerp",
        method="fd",
        resize="bilinear:64",
        quantize_uint8=True,
        num_samples=None,
        batch_size=64,
    ),
}


# ---- statistics -----------------------------------------------------------------------------------------


def _check_percentile(p: object, name: str) -> Percentile:
    methods = ("lower", "higher", "linear", "nearest", "midpoint")
    if (
        not isinstance(p, (tuple, list))
        or len(p) != 2
        or not isinstance(p[0], (int, float))
        or not 0 <= float(p[0]) <= 100
        or p[1] not in methods
    ):
        raise ValueError(f"{name}: expected (percent in [0, 100], one of {methods}), got {p!r}")
    return (float(p[0]), p[1])  # type: ignore[return-value]


def trim(
    distances: np.ndarray | torch.Tensor,
    lower: Percentile | None = (1.0, "lower"),
    upper: Percentile | None = (99.0, "higher"),
) -> tuple[np.ndarray, float, float]:
    """``(kept mask, lo, hi)``: samples with ``lo <= d <= hi`` (inclusive), lo/hi the percentiles computed
    with the given numpy method (NumPy >= 2.4 removed the ``interpolation=`` spelling the peers use)."""
    d = np.asarray(distances.cpu() if isinstance(distances, torch.Tensor) else distances, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"distances: expected a non-empty 1-d array, got shape {d.shape}")
    lo = float(np.percentile(d, lower[0], method=lower[1])) if lower is not None else -math.inf
    hi = float(np.percentile(d, upper[0], method=upper[1])) if upper is not None else math.inf
    return (d >= lo) & (d <= hi), lo, hi


def trimmed_stats(
    distances: np.ndarray | torch.Tensor,
    lower: Percentile | None = (1.0, "lower"),
    upper: Percentile | None = (99.0, "higher"),
) -> dict[str, float]:
    """Trimmed mean, std of the kept samples (ddof = 1) and the trimmed mean's standard error from the
    winsorised variance (Tukey-McLaughlin: ``s_w / ((1 - g) sqrt(n))``, g = the trimmed fraction)."""
    d = np.asarray(distances.cpu() if isinstance(distances, torch.Tensor) else distances, dtype=np.float64)
    kept, lo, hi = trim(d, lower, upper)
    x = d[kept]
    n = d.size
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else math.nan
    if n > 1:
        w = np.clip(d, x.min(), x.max())
        frac = x.size / n
        sem = float(w.std(ddof=1) / (frac * math.sqrt(n)))
    else:
        sem = math.nan
    return {"mean": mean, "std": std, "sem": sem, "lo": lo, "hi": hi, "num_kept": int(x.size)}


def bootstrap_ci(
    distances: np.ndarray | torch.Tensor,
    lower: Percentile | None = (1.0, "lower"),
    upper: Percentile | None = (99.0, "higher"),
    *,
    replicates: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the trimmed mean, the trimming re-applied in every replicate.

    Works on the sorted sample with multinomial counts (each replicate O(n), no re-sort): the replicate's
    order statistics come from the cumulative counts, its kept range is contiguous in the sorted order."""
    d = np.sort(np.asarray(distances.cpu() if isinstance(distances, torch.Tensor) else distances, np.float64))
    n = d.size
    if n < 2:
        return (math.nan, math.nan)
    if not 0 < level < 1:
        raise ValueError(f"level: expected a value in (0, 1), got {level!r}")
    rng = np.random.default_rng(seed)
    means = np.empty(replicates)

    def order_stat(cum: np.ndarray, q: float, method: str) -> float:
        pos = q / 100.0 * (n - 1)
        lo_i, hi_i = math.floor(pos), math.ceil(pos)
        v_lo = d[np.searchsorted(cum, lo_i, side="right")]
        v_hi = d[np.searchsorted(cum, hi_i, side="right")]
        if method == "lower":
            return v_lo
        if method == "higher":
            return v_hi
        if method == "nearest":
            return v_lo if pos - lo_i < 0.5 or (pos - lo_i == 0.5 and lo_i % 2 == 0) else v_hi
        if method == "midpoint":
            return 0.5 * (v_lo + v_hi)
        return v_lo + (pos - lo_i) * (v_hi - v_lo)

    for r in range(replicates):
        counts = np.bincount(rng.integers(0, n, n), minlength=n)
        cum = np.cumsum(counts)
        lo = order_stat(cum, lower[0], lower[1]) if lower is not None else -math.inf
        hi = order_stat(cum, upper[0], upper[1]) if upper is not None else math.inf
        a, b = np.searchsorted(d, lo, side="left"), np.searchsorted(d, hi, side="right")
        c = counts[a:b]
        means[r] = float(np.dot(c, d[a:b]) / c.sum())
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


# ---- result ---------------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    import tangentlens

    return {
        "tangentlens": tangentlens.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


@dataclass
class PPLResult:
    """A PPL run: the trimmed mean and its uncertainty, every sample's distance (index = sample index), the
    kept mask and the resolved configuration."""

    mean: float
    std: float
    sem: float
    ci_low: float
    ci_high: float
    num_samples: int
    num_kept: int
    lo: float
    hi: float
    distances: torch.Tensor  # float64 [num_samples]
    kept: torch.Tensor  # bool [num_samples]
    config: dict[str, Any]
    versions: dict[str, str] = field(default_factory=_versions)
    ci_level: float = 0.95
    stopped_early: bool = False
    resumed_from: int = 0
    seconds: float = 0.0

    @property
    def samples_per_second(self) -> float:
        return (self.num_samples - self.resumed_from) / self.seconds if self.seconds > 0 else math.nan

    def __str__(self) -> str:
        half = (self.ci_high - self.ci_low) / 2
        return (
            f"PPL {self.mean:.4g} (95% CI {self.ci_low:.4g} .. {self.ci_high:.4g}, +-{half:.3g}; "
            f"std {self.std:.4g}; {self.num_kept}/{self.num_samples} samples kept; "
            f"{self.config.get('preset')}, {self.config.get('space')}/{self.config.get('sampling')}, "
            f"{self.config.get('method')})"
        )

    def to_json(self, path: str | Path | None = None, *, include_distances: bool = True) -> str:
        data = {k: v for k, v in asdict(self).items() if k not in ("distances", "kept")}
        data["samples_per_second"] = self.samples_per_second
        if include_distances:
            data["distances"] = self.distances.tolist()
            data["kept"] = self.kept.tolist()
        text = json.dumps(data, indent=1, default=str)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> PPLResult:
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text()
        data = json.loads(text)
        data.pop("samples_per_second", None)
        d = torch.tensor(data.pop("distances", []), dtype=torch.float64)
        k = torch.tensor(data.pop("kept", []), dtype=torch.bool)
        return cls(distances=d, kept=k, **data)

    def plot_histogram(self, ax: Any = None, bins: int = 100, log: bool = False) -> Any:
        """Histogram of the per-sample distances with the trimming thresholds and the mean (matplotlib)."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        d = self.distances.numpy()
        if d.size == 0:
            raise ValueError(
                "plot_histogram: this result holds no per-sample distances (to_json without them)"
            )
        ax.hist(d, bins=np.geomspace(max(d.min(), 1e-12), d.max(), bins) if log else bins, color="0.6")
        if log:
            ax.set_xscale("log")
        for x, s in ((self.lo, "--"), (self.hi, "--"), (self.mean, "-")):
            ax.axvline(x, color="C3", linestyle=s)
        ax.set_xlabel("per-sample path length")
        ax.set_ylabel("samples")
        ax.set_title(f"PPL {self.mean:.4g} [{self.ci_low:.4g}, {self.ci_high:.4g}]")
        return ax


# ---- images ---------------------------------------------------------------------------------------------


@dataclass
class _Pipeline:
    """Generator output -> the distance's input, and the same linear map for tangents."""

    protocol: PPLProtocol
    output_range: str
    resolution: int | None
    rgb: bool  # repeat 1 channel to 3 (LPIPS)
    float_dtype: torch.dtype = torch.float32  # uint8 images become this (the distance's dtype)

    def check(self, x: object, start: int, what: str = "generator output") -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{what}: expected a tensor of images, got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"{what}: expected images [N, 1 or 3, H, W], got shape {tuple(x.shape)}")
        if not (x.is_floating_point() or x.dtype == torch.uint8):
            raise TypeError(f"{what}: expected a float or uint8 tensor, got {x.dtype}")
        if x.is_floating_point():
            bad = ~torch.isfinite(x.flatten(1)).all(dim=1)
            if bool(bad.any()):
                idx = (torch.nonzero(bad).flatten() + start).tolist()
                raise FloatingPointError(
                    f"{what}: non-finite values (NaN/Inf) for sample indices {idx[:20]}"
                    + (" ..." if len(idx) > 20 else "")
                )
        return x

    def to_unit(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Native range -> [-1, 1] (float), quantised to uint8 levels first when the protocol says so."""
        if x.dtype == torch.uint8:
            x = x.to(self.float_dtype) / 127.5 - 1.0
        else:
            a, b = TO_UNIT[self.output_range]
            x = x * a + b if (a, b) != (1.0, 0.0) else x
            if self.protocol.quantize_uint8:
                x = ((x + 1.0) * 127.5).round().clamp(0, 255) / 127.5 - 1.0
        m = float(x.detach().abs().max()) if x.numel() else 0.0
        if m > RANGE_LIMIT:
            raise ValueError(
                f"generator output: values up to {m:.4g} after mapping the declared output_range "
                f"{self.output_range!r} to [-1, 1] (samples {start}..{start + x.shape[0] - 1}); declare the "
                "generator's range with as_generator(..., output_range='0_255' | '0_1' | '-1_1')"
            )
        return x

    def tangent_scale(self) -> float:
        return TO_UNIT[self.output_range][0]

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """Channels, crop and resize: linear maps applied alike to images and tangents."""
        if self.rgb and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        full_res = self.resolution or x.shape[2]
        if self.protocol.crop:
            if x.shape[2] != x.shape[3]:
                raise ValueError(f"crop: expected square images, got {tuple(x.shape[2:])}")
            c = x.shape[2] // 8
            x = x[:, :, c * 3 : c * 7, c * 2 : c * 6]
        r = self.protocol.resize
        if r == "box256":
            # NVIDIA: factor from the generator's resolution (also after the crop)
            factor = full_res // 256
            if factor > 1:
                n, ch, h, w = x.shape
                x = x.reshape(n, ch, h // factor, factor, w // factor, factor).mean(dim=(3, 5))
        elif r.startswith("area_or_bilinear:"):
            s = int(r.split(":")[1])
            if x.shape[-1] > s and x.shape[-2] > s:
                x = F.interpolate(x, size=(s, s), mode="area")
            else:
                x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        elif r.startswith("bilinear:"):
            s = int(r.split(":")[1])
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        return x


def _check_resize(resize: object) -> str:
    if resize is None:
        return "none"
    if isinstance(resize, int) and not isinstance(resize, bool):
        return f"bilinear:{resize}"
    if isinstance(resize, str):
        if resize in ("box256", "none"):
            return resize
        kind, _, size = resize.partition(":")
        if kind in ("area_or_bilinear", "bilinear") and size.isdigit() and int(size) > 0:
            return resize
    raise ValueError(
        "resize: expected 'box256', 'none', 'area_or_bilinear:S', 'bilinear:S', an int S or None, "
        f"got {resize!r}"
    )


# ---- distances ------------------------------------------------------------------------------------------


def _distance_tangent_sq(distance: Callable, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``|d/ds e(x + s v)|^2`` at s = 0 per sample: the eps -> 0 limit of ``d(x, x + eps v) / eps^2``."""
    if isinstance(distance, LPIPS):
        return distance.tangent_norms(x, v.unsqueeze(1))[:, 0]
    if isinstance(distance, L2Distance):
        return v.flatten(1).square().sum(1)
    embed = getattr(distance, "embed", None)
    if callable(embed):
        _, te = _engine_jvp(embed, x, v.unsqueeze(1), chunk_size=1)
        return te.flatten(2).square().sum(2)[:, 0]

    # A distance without an embedding: half its second directional derivative at x1 = x (exact for a
    # squared Euclidean distance of any embedding).
    def along(s: torch.Tensor) -> torch.Tensor:
        return distance(x, x + s.reshape(-1, 1, 1, 1) * v)

    def first(s: torch.Tensor) -> torch.Tensor:
        return torch.func.jvp(along, (s,), (torch.ones_like(s),))[1]

    s0 = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    return 0.5 * torch.func.jvp(first, (s0,), (torch.ones_like(s0),))[1]


def _resolve_distance(distance: object, protocol: PPLProtocol, device: torch.device) -> Callable:
    if isinstance(distance, str) and (distance.startswith("lpips-") or distance == "auto"):
        d = make_distance(distance, eps_mode=protocol.lpips_eps_mode)
    else:
        d = make_distance(distance)  # type: ignore[arg-type]
    if isinstance(d, nn.Module):
        d = d.to(device)
    return d


def _describe_distance(distance: Callable) -> dict[str, Any]:
    if isinstance(distance, LPIPS):
        return {
            "name": f"lpips-{distance.net}",
            "eps": distance.eps,
            "eps_mode": distance.eps_mode,
            "fingerprint": fingerprint(distance),
        }
    if isinstance(distance, L2Distance):
        return {"name": "l2"}
    return {
        "name": f"{type(distance).__module__}.{type(distance).__qualname__}",
        "fingerprint": fingerprint(distance),
    }


# ---- the per-batch computation ----------------------------------------------------------------------------


@dataclass
class _Engine:
    gen: GeneratorAdapter
    protocol: PPLProtocol
    distance: Callable
    pipe: _Pipeline
    device: torch.device

    def _path(
        self, z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor, c: torch.Tensor | None, eps: float | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(p(t), p(t + eps))``, or with ``eps=None`` ``(p(t), p'(t))``: the slerp of unit z, torchmetrics'
        slerp of raw z (``slerp_any``, normalised for ``slerp_any_unit``), else the lerp of z or of
        w = f(z) (over the whole [num_ws, w_dim] tensor), whose tangent is the difference."""
        if self.protocol.space == "w":
            z0, z1 = self.gen.mapping(torch.cat([z0, z1]), _cat2(c)).chunk(2)
        elif self.protocol.z_interp == "slerp":
            if eps is None:
                return paths.slerp_with_tangent(z0, z1, t)
            return paths.slerp(z0, z1, t), paths.slerp(z0, z1, t + eps)
        elif self.protocol.z_interp in ("slerp_any", "slerp_any_unit"):  # torchmetrics' raw-vector slerp
            unit = self.protocol.z_interp == "slerp_any_unit"
            p, tangent = paths.slerp_raw_with_tangent(z0, z1, t, unit=unit)
            if eps is None:
                return p, tangent
            return p, paths.slerp_raw_with_tangent(z0, z1, t + eps, unit=unit)[0]
        tt = t.to(z0.dtype).reshape(-1, *([1] * (z0.ndim - 1)))
        if eps is None:
            return z0.lerp(z1, tt), z1 - z0
        return z0.lerp(z1, tt), z0.lerp(z1, tt + eps)

    def distances(
        self,
        z0: torch.Tensor,
        z1: torch.Tensor,
        t: torch.Tensor,
        c: torch.Tensor | None,
        noise: Sequence[torch.Tensor] | None,
        start: int,
    ) -> torch.Tensor:
        p, gen, pipe = self.protocol, self.gen, self.pipe
        eps = p.epsilon
        z0, z1 = gen.transform_z(z0), gen.transform_z(z1)
        if p.method == "fd":
            with torch.no_grad(), _precision(p.precision, self.device):
                a, b = self._path(z0, z1, t, c, eps)
                img = gen.image(torch.cat([a, b]), _cat2(c), _cat2(noise), p.space)
                img = pipe.check(img, start)
                x = pipe.linear(pipe.to_unit(img, start))
                x0, x1 = x.chunk(2)
                d = self.distance(x0, x1).to(torch.float64) / eps**2
        else:
            with torch.no_grad():
                a, tan = self._path(z0, z1, t, c, None)
            img, timg = gen.image_jvp(a, tan, c, noise, p.space, precision=p.precision)
            img = pipe.check(img, start)
            pipe.check(timg, start, "generator tangent")
            with torch.no_grad(), _precision(p.precision, self.device):
                x = pipe.linear(pipe.to_unit(img, start))
                v = pipe.linear(timg.to(x.dtype) * pipe.tangent_scale())
                d = _distance_tangent_sq(self.distance, x, v).to(torch.float64)
        bad = ~torch.isfinite(d)
        if bool(bad.any()):
            idx = (torch.nonzero(bad).flatten() + start).tolist()
            raise FloatingPointError(f"distance: non-finite values for sample indices {idx[:20]}")
        return d

    def sample_distances(
        self, seed: int, start: int, count: int, labels: torch.Tensor | Callable | None = None
    ) -> torch.Tensor:
        """The distances of samples ``start .. start + count - 1``: latents, t, labels and noise of sample i
        from (seed, i) only."""
        p, gen, dev = self.protocol, self.gen, self.device
        s = paths.sample(
            seed,
            start,
            count,
            gen.z_dim,
            interp="slerp" if p.space == "z" and p.z_interp == "slerp" else "lerp",
            sampling=p.sampling,
            eps=p.epsilon,
            dtype=gen.dtype,
            device=dev,
            step=False,
            tangent=False,
        )
        assert s.z0 is not None and s.z1 is not None
        c = gen.labels(seed, start, count, labels, dev)
        nz = gen.noise(seed, start, count, dev)
        return self.distances(s.z0, s.z1, s.t, c, nz, start)


def _cat2(x: Any) -> Any:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return torch.cat([x, x])
    return [torch.cat([n, n]) for n in x]


def _warn_fd(protocol: PPLProtocol, gen: GeneratorAdapter, notes: list[str]) -> None:
    """Finite differences at eps = 1e-4 need the full float32 mantissa (SPEC 4)."""
    if protocol.method != "fd":
        return
    if protocol.precision in ("fp16", "bf16"):
        raise ValueError(
            f"precision={protocol.precision!r} with method='fd': finite differences at epsilon="
            f"{protocol.epsilon:g} cancel catastrophically in {protocol.precision} (errors of 10^2-10^4x "
            "per sample); use method='jvp', which has no cancellation"
        )
    reasons = []
    if protocol.precision == "tf32":
        reasons.append("TF32 convolutions/matmuls (10-bit mantissa) make eps=1e-4 differences ~100x off")
    if protocol.quantize_uint8 or gen.output_range == "0_255" and gen.kind.startswith("torch-fidelity"):
        reasons.append("uint8 images round away most of an eps=1e-4 step (distances ~37-118x off)")
    for r in reasons:
        msg = f"method='fd': {r}; this reproduces the protocol {protocol.name!r}, not the path length"
        notes.append(msg)
        warnings.warn(msg + " (method='jvp' computes the exact limit)", FiniteDifferenceWarning, stacklevel=3)


def _resolve(
    generator: object,
    preset: str | None,
    overrides: Mapping[str, Any],
    distance: object,
    device: torch.device | str | None,
    z_dim_hint: int | None = None,
) -> tuple[_Engine, dict[str, Any]]:
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"preset: expected None or one of {sorted(PRESETS)}, got {preset!r}")
    protocol = PRESETS[preset] if preset is not None else DEFAULT
    given = {k: v for k, v in overrides.items() if v is not None}
    if "resize" in given:
        given["resize"] = _check_resize(given["resize"])
    for key, allowed in (
        ("space", ("w", "z")),
        ("sampling", ("end", "full")),
        ("method", ("fd", "jvp")),
        ("z_interp", get_args(Interp)),
        ("precision", (*PRECISIONS, "auto")),
    ):
        if key in given and given[key] not in allowed:
            raise ValueError(f"{key}: expected one of {allowed}, got {given[key]!r}")
    if "epsilon" in given and not (isinstance(given["epsilon"], (int, float)) and 0 < given["epsilon"] < 1):
        raise ValueError(f"epsilon: expected a number in (0, 1), got {given['epsilon']!r}")
    if "crop" in given and not isinstance(given["crop"], bool):
        raise ValueError(f"crop: expected a bool, got {given['crop']!r}")
    for key in ("lower", "upper"):
        if key in given:
            given[key] = _check_percentile(given[key], key)
    protocol = replace(protocol, **given)
    if protocol.name == "torchmetrics" and protocol.sampling != "end":
        raise ValueError("sampling: the torchmetrics protocol only defines 'end' (t = 0)")
    try:
        gen = as_generator(generator)
    except ValueError as exc:
        if z_dim_hint is None or "z_dim" not in str(exc):
            raise
        gen = as_generator(generator, z_dim=z_dim_hint)  # a plain callable: z_dim from the given latents
    if isinstance(gen.module, nn.Module):
        gen.module.eval()
    dev = torch.device(device) if device is not None else gen.device
    if isinstance(gen.module, nn.Module) and gen.device != dev:
        gen.module.to(dev)
    if preset is None and "batch_size" not in given and dev.type == "cpu":
        protocol = replace(protocol, batch_size=CPU_BATCH_SIZE)
    if protocol.space == "w" and not gen.has_w:
        raise ValueError(f"space='w': the generator ({gen.kind}) has no mapping network; use space='z'")
    dist = _resolve_distance(distance, protocol, dev)
    notes: list[str] = []
    requested = protocol.precision
    if requested == "auto" and protocol.method == "fd":
        protocol = replace(protocol, precision="fp32")
        notes.append("precision='auto': fp32 (finite differences need the full float32 mantissa)")
    _warn_fd(protocol, gen, notes)
    if protocol.method == "jvp" and protocol.quantize_uint8:
        notes.append("method='jvp': the uint8 quantisation has no derivative and is left out (exact limit)")
    if protocol.precision == "tf32" and dev.type != "cuda":
        notes.append(f"precision='tf32' on {dev.type}: tensor-core rounding emulated (tangentlens.tf32)")
    if protocol.precision == "bf16" and dev.type == "cpu" and not native_bf16(dev):
        notes.append(
            "precision='bf16' on a CPU without native bf16 kernels: bf16 arithmetic emulated by float32 "
            "kernels (tangentlens.bf16): native bf16's numbers, not its speed"
        )
    resolution = getattr(gen.module, "img_resolution", None)
    float_dtype = gen.dtype
    if isinstance(dist, nn.Module):
        float_dtype = next((t.dtype for t in dist.buffers() if t.is_floating_point()), float_dtype)
    rgb = isinstance(dist, LPIPS) or hasattr(dist, "net")
    pipe = _Pipeline(protocol, gen.output_range, resolution, rgb=rgb, float_dtype=float_dtype)
    engine = _Engine(gen, protocol, dist, pipe, dev)
    described = {"generator": gen.describe(), "distance": _describe_distance(dist)}
    if protocol.precision == "auto":
        key = (
            described["generator"]["fingerprint"],
            described["distance"].get("fingerprint", described["distance"]["name"]),
            str(dev),
            replace(protocol, num_samples=None, batch_size=1),
        )
        engine = _resolve_auto(engine, notes, key)
    config = asdict(engine.protocol)
    config["precision_requested"] = requested
    config["preset"] = preset or "tangentlens (default)"
    config.update(described)
    config["notes"] = notes
    return engine, config


# precision="auto" decisions of this process, per (generator, distance, device, protocol)
_AUTO_DECISIONS: dict[tuple, tuple[str, str]] = {}


def _resolve_auto(engine: _Engine, notes: list[str], key: tuple) -> _Engine:
    """precision="auto" for the exact mode: bf16 where :func:`tangentlens.bf16.auto_precision` finds it native
    and fast and ``AUTO_BF16_PROBE_SAMPLES`` probe samples of this model (fixed seed) computed in bf16 and
    in float32 differ by at most ``AUTO_BF16_MAX_ERROR`` (median per-sample relative error); float32
    otherwise. Decided once per process for a generator, distance (by their fingerprints), device and
    protocol; under torch.distributed every rank takes rank 0's decision."""
    if key in _AUTO_DECISIONS:
        choice, reason = _AUTO_DECISIONS[key]
        notes.append(f"precision='auto': {choice} ({reason}; decided earlier in this process)")
        return replace(engine, protocol=replace(engine.protocol, precision=choice))
    choice, reason = auto_precision(engine.device)
    if choice == "bf16":
        n, d = AUTO_BF16_PROBE_SAMPLES, {}
        for prec in ("fp32", "bf16"):
            probe = replace(engine, protocol=replace(engine.protocol, precision=prec))
            d[prec] = probe.sample_distances(AUTO_BF16_PROBE_SEED, 0, n)
        err = float(((d["bf16"] - d["fp32"]).abs() / d["fp32"].abs()).median())
        within = err <= AUTO_BF16_MAX_ERROR
        choice = "bf16" if within else "fp32"
        reason += (
            f"; {n} probe samples of this model: bf16 {100 * err:.2g} % from float32 (median), "
            f"{'within' if within else 'beyond'} the {100 * AUTO_BF16_MAX_ERROR:g} % bound"
        )
    if _streaming._dist()[1] > 1:
        choice, reason = _streaming._all_gather_json([choice, reason], engine.device)[0]
    _AUTO_DECISIONS[key] = (choice, reason)
    notes.append(f"precision='auto': {choice} ({reason})")
    return replace(engine, protocol=replace(engine.protocol, precision=choice))


def ppl_distances(
    generator: object,
    z0: torch.Tensor,
    z1: torch.Tensor,
    t: torch.Tensor | float = 0.0,
    *,
    preset: str | None = None,
    space: Space | None = None,
    method: Method | None = None,
    z_interp: Interp | None = None,
    distance: object = "auto",
    epsilon: float | None = None,
    crop: bool | None = None,
    resize: str | int | None = None,
    precision: PPLPrecision | None = None,
    labels: torch.Tensor | None = None,
    noise: Sequence[torch.Tensor] | None = None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Per-sample path lengths [N] (float64) for EXPLICIT latents ``z0, z1 [N, z_dim]`` and positions ``t``
    (a float or [N]); ``labels`` and ``noise`` are given per sample or omitted (no labels; constant noise).
    With a preset and the peer's latents this replays the peer's samples one for one."""
    for name, z in (("z0", z0), ("z1", z1)):
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or not z.is_floating_point():
            raise ValueError(
                f"{name}: expected a float tensor [N, z_dim], got {getattr(z, 'shape', type(z))}"
            )
    if z0.shape != z1.shape:
        raise ValueError(f"z1: expected the shape of z0 {tuple(z0.shape)}, got {tuple(z1.shape)}")
    engine, _ = _resolve(
        generator,
        preset,
        dict(
            space=space,
            method=method,
            z_interp=z_interp,
            epsilon=epsilon,
            crop=crop,
            resize=resize,
            precision=precision,
        ),
        distance,
        device,
        z_dim_hint=z0.shape[1],
    )
    if z0.shape[1] != engine.gen.z_dim:
        raise ValueError(f"z0: expected z_dim = {engine.gen.z_dim} columns, got {z0.shape[1]}")
    n = z0.shape[0]
    t = torch.as_tensor(t, dtype=torch.float64).expand(n).to(engine.device)
    if labels is not None and (not isinstance(labels, torch.Tensor) or labels.shape[0] != n):
        raise ValueError(f"labels: expected [{n}, ...] labels, got {getattr(labels, 'shape', labels)}")
    bs = batch_size or engine.protocol.batch_size
    dt = engine.gen.param_dtype or z0.dtype
    out = []
    for s in range(0, n, bs):
        sl = slice(s, min(n, s + bs))
        c = labels[sl].to(engine.device) if labels is not None else None
        nz = [x[sl].to(engine.device, dt) for x in noise] if noise is not None else None
        out.append(
            engine.distances(z0[sl].to(engine.device, dt), z1[sl].to(engine.device, dt), t[sl], c, nz, s)
        )
    return torch.cat(out).cpu()


def ppl(
    generator: object,
    *,
    preset: str | None = None,
    space: Space | None = None,
    sampling: Sampling | None = None,
    method: Method | None = None,
    num_samples: int | None = None,
    batch_size: int | None = None,
    distance: object = "auto",
    epsilon: float | None = None,
    crop: bool | None = None,
    resize: str | int | None = None,
    precision: PPLPrecision | None = None,
    z_interp: Interp | None = None,
    seed: int = 0,
    labels: torch.Tensor | Callable | None = None,
    target_rel_ci: float | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: float = 60.0,
    bootstrap: int = 1000,
    progress: bool = True,
    device: torch.device | str | None = None,
) -> PPLResult:
    """Perceptual Path Length of ``generator`` (any object :func:`tangentlens.generators.as_generator`
    accepts).

    Args:
        preset: ``None`` (tangentlens' protocol: W, end, exact JVP, NVIDIA's resize and trimming, per-sample
            noise) or a peer's: ``"stylegan2"`` (NVIDIA ppl2_wend), ``"stylegan2_crop"``
            (ppl_{z,w}{full,end}), ``"torchmetrics"``, ``"torch_fidelity"``. Arguments given explicitly
            override the preset.
        space, sampling, method, epsilon, crop, resize, precision, z_interp: the protocol (SPEC 4); ``method``
            ``"jvp"`` is the exact eps -> 0 limit, ``"fd"`` the peers' finite difference. ``precision``
            ``"fp32"`` (default), ``"tf32"``, ``"fp16"``, ``"bf16"`` (the exact mode only; emulated on CPUs
            without native bf16) or ``"auto"``: bf16 for the exact mode where it is native and fast and
            probe samples of this model stay within ``AUTO_BF16_MAX_ERROR`` of float32, else fp32; the
            result's ``config["precision"]`` says what ran and ``config["notes"]`` why. ``z_interp`` (Z
            space): ``"slerp"`` (unit vectors, NVIDIA / torch-fidelity), ``"lerp"``, ``"slerp_any"``
            (torchmetrics': slerp of the raw vectors, their norm interpolated) or ``"slerp_any_unit"``
            (that path normalised: torchmetrics' ``"slerp_unit"``).
        num_samples: samples to draw (the maximum with ``target_rel_ci``).
        batch_size: samples per forward pass; changes the speed, never the result. Default: the preset's,
            and for tangentlens' protocol 16 on a GPU, ``CPU_BATCH_SIZE`` (4) on a CPU.
        distance: ``"auto"`` (LPIPS-VGG16 when its weights are found, else pixels with a warning),
            ``"lpips-vgg16"``, ``"l2"``, an LPIPS module or a callable ``d(x0, x1) -> [N]``.
        seed: sample i's latents, t, labels and noise derive from (seed, i) only: the result does not depend
            on the batch size, the number of processes or a resume.
        labels: conditional generators: None (uniform classes), a tensor [L, c_dim] of labels to draw from
            (e.g. the dataset's), or ``labels(indices) -> [n, ...]``.
        target_rel_ci: stop once the 95 % CI half-width (normal approximation on the trimmed mean) is below
            this fraction of the mean; checked every 1000 samples and cut there.
        checkpoint: file to resume from and to write atomically every ``checkpoint_every`` seconds.
        bootstrap: bootstrap replicates for the reported CI (trimming re-applied in each); 0 gives the
            normal approximation ``mean +- 1.96 sem`` instead.
        progress: a progress bar with samples/s and the running mean +- CI (rank 0).
        device: where to run (default: the generator's device).

    Under torch.distributed (torchrun), every rank calls this with the same arguments; sample ranges are
    sharded over ranks, distances gathered, and every rank returns the same result.
    """
    engine, config = _resolve(
        generator,
        preset,
        dict(
            space=space,
            sampling=sampling,
            method=method,
            epsilon=epsilon,
            crop=crop,
            resize=resize,
            precision=precision,
            z_interp=z_interp,
            batch_size=batch_size,
            num_samples=num_samples,
        ),
        distance,
        device,
    )
    p = engine.protocol
    if p.num_samples is None:
        raise ValueError(f"num_samples: the preset {preset!r} has no default; pass num_samples")
    n_total, bs = p.num_samples, p.batch_size
    for name, v in (("num_samples", n_total), ("batch_size", bs)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    if n_total < 2:
        raise ValueError(f"num_samples: expected at least 2 (a CI needs two samples), got {n_total}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"seed: expected an int in [0, 2**64), got {seed!r}")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise ValueError(f"bootstrap: expected a non-negative int (replicates), got {bootstrap!r}")
    if target_rel_ci is not None and not (isinstance(target_rel_ci, (int, float)) and target_rel_ci > 0):
        raise ValueError(f"target_rel_ci: expected a positive number, got {target_rel_ci!r}")
    if labels is not None and engine.gen.label_kind == "none":
        raise ValueError(f"labels: the generator ({engine.gen.kind}) is unconditional, got labels")
    config["seed"] = seed
    config["labels"] = (
        "uniform classes"
        if labels is None
        else ("given rows" if isinstance(labels, torch.Tensor) else "callable")
    )
    dev = engine.device

    def compute(start: int, count: int) -> dict[str, torch.Tensor]:
        return {"distance": engine.sample_distances(seed, start, count, labels)}

    keep = (p.lower, p.upper)

    def postfix(rows: dict[str, torch.Tensor], n: int) -> str:
        st = trimmed_stats(rows["distance"], *keep)
        return f"ppl {st['mean']:.4g} +- {1.96 * st['sem']:.2g}"

    def stop(rows: dict[str, torch.Tensor], n: int) -> bool:
        st = trimmed_stats(rows["distance"], *keep)
        return n > 1 and 1.96 * st["sem"] <= target_rel_ci * abs(st["mean"])  # type: ignore[operator]

    # what determines the rows (a checkpoint must match it); num_samples may grow on resume
    ckpt_config = {k: v for k, v in config.items() if k not in ("num_samples", "notes")}
    res = _streaming.stream(
        compute,
        num_samples=n_total,
        batch_size=bs,
        config=ckpt_config,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        progress=progress,
        desc=f"ppl ({config['preset']}, {p.method})",
        postfix=postfix,
        stop=stop if target_rel_ci is not None else None,
        device=dev,
    )
    d = res.rows["distance"]
    st = trimmed_stats(d, *keep)
    if bootstrap > 0:
        lo_ci, hi_ci = bootstrap_ci(d, *keep, replicates=bootstrap, seed=seed)
    else:  # the normal approximation on the winsorised standard error
        lo_ci, hi_ci = st["mean"] - 1.96 * st["sem"], st["mean"] + 1.96 * st["sem"]
    kept, _, _ = trim(d, *keep)
    config["num_samples"] = n_total
    config["target_rel_ci"] = target_rel_ci
    config["device"] = str(dev)
    config["world_size"] = _streaming._dist()[1]
    config["bootstrap"] = bootstrap
    config = json.loads(json.dumps(config, default=str))  # JSON-plain (tuples -> lists), as from_json gives
    return PPLResult(
        mean=st["mean"],
        std=st["std"],
        sem=st["sem"],
        ci_low=lo_ci,
        ci_high=hi_ci,
        num_samples=res.num_done,
        num_kept=st["num_kept"],
        lo=st["lo"],
        hi=st["hi"],
        distances=d,
        kept=torch.from_numpy(kept),
        config=config,
        stopped_early=res.stopped_early,
        resumed_from=res.resumed_from,
        seconds=res.seconds,
    )
