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
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tangentlens import _streaming, ops, paths
from tangentlens._checks import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_positive,
    check_tensor,
    check_u64,
    check_u64_range,
)
from tangentlens._fingerprint import fingerprint_of
from tangentlens.bf16 import auto_precision, native_bf16
from tangentlens.distances import (
    PEER_PRESETS,
    L2Distance,
    check_distance_output,
    evaluate,
    make_distance,
    preset_distance,
)
from tangentlens.generators.adapters import GeneratorAdapter, OutputRange, adapt
from tangentlens.generators.outputs import (
    TO_UNIT,
    GeneratorOutputError,
    RangeMonitor,
    check_determinism,
    check_finite_images,
    check_images,
)
from tangentlens.jvp import PRECISIONS, Precision, _precision
from tangentlens.jvp import jvp as _engine_jvp
from tangentlens.lpips import LPIPS, NvidiaTorchScriptLPIPS, as_rgb, unchecked_range

__all__ = [
    "NVIDIA_METRICS",
    "PRESETS",
    "DegenerateResultWarning",
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
Replay = Literal["tangentlens", "nvidia", "torch_fidelity", "torchmetrics"]
#: a precision, or "auto": bf16 for the exact mode where bf16 is native and fast and this model's probe
#: samples stay within AUTO_BF16_MAX_ERROR of float32, else fp32 (see _resolve_auto)
PPLPrecision = Literal[Precision, "auto"]

# precision="auto": the exact mode's probe samples computed in both precisions (median per-sample relative
# error of bf16 against float32 at most this, else float32 runs). On the bench StyleGAN2 the median is
# ~0.5 % (docs/ppl.md); a model that bf16 does not suit is off by far more.
AUTO_BF16_PROBE_SAMPLES = 8
AUTO_BF16_PROBE_SEED = 0xBF16
AUTO_BF16_MAX_ERROR = 0.02


class FiniteDifferenceWarning(RuntimeWarning):
    """eps = 1e-4 finite differences that the precision or the image dtype make inexact."""


class DegenerateResultWarning(RuntimeWarning):
    """Every tangent or distance of the first batch is exactly 0 while the images vary: the generator's output
    does not move differentiably along the paths (quantised, detached)."""


@dataclass(frozen=True)
class PPLProtocol:
    """Everything that defines a PPL number (SPEC 4). ``resize``: ``"box256"`` (box-downsample by
    ``resolution // 256``, NVIDIA), ``"area_or_bilinear:S"`` (area when both sides are larger than S, else
    bilinear: torchmetrics and torch-fidelity), ``"bilinear:S"`` or ``"none"``. ``replay``: whose arithmetic
    computes the finite-difference points, so that a peer's latents replay its samples bit for bit:
    ``"nvidia"`` (``torch.lerp`` in W, NVIDIA's slerp expression in the latents' dtype in Z),
    ``"torch_fidelity"`` / ``"torchmetrics"`` (``a + (b - a) * t``; torchmetrics' raw-vector slerp
    expression; the first point is z0 itself), ``"tangentlens"`` (slerp in float64 rounded once,
    ``torch.lerp``)."""

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
    replay: Replay = "tangentlens"


DEFAULT = PPLProtocol(name="tangentlens")
# the default protocol's batch on a CPU is picked from the measured cost of one forward pass (generator and
# distance on CPU_BATCH_SIZE samples): the largest power of two whose pass takes at most CPU_BATCH_SECONDS,
# within [CPU_BATCH_SIZE, CPU_BATCH_MAX]. Costly passes stay at 4 (a layer's activations stay in cache: at
# 64² with 128 channels, 4 samples per batch ran 1.2x faster than 16 on 2 cores); cheap generators get large
# batches (the per-call overhead dominates: the demo VAE ran 124 samples/s at 4, 1300-1600 at 256). The
# batch size changes the result only at float rounding (the kernels round differently per batch shape).
CPU_BATCH_SIZE = 4
CPU_BATCH_MAX = 256
CPU_BATCH_SECONDS = 0.05
PRESETS: dict[str, PPLProtocol] = {
    # NVIDIA stylegan2-ada-pytorch `ppl2_wend`: W, end, no crop, box to 256, fp32, batch 2 per GPU.
    "stylegan2": PPLProtocol(name="stylegan2", method="fd", batch_size=2, replay="nvidia"),
    # NVIDIA `ppl_{z,w}{full,end}` (the StyleGAN paper's metric): the face crop; space/sampling as given.
    "stylegan2_crop": PPLProtocol(
        name="stylegan2_crop", method="fd", crop=True, batch_size=2, replay="nvidia"
    ),
    # NVIDIA stylegan3's `ppl2_wend`, the only PPL it registers: the same protocol (W, end, no crop, box to
    # 256, fp32, batch 2 per GPU; labels drawn uniformly from the dataset's: pass them as `labels`); the
    # StyleGAN3 synthesis has no noise buffers.
    "stylegan3": PPLProtocol(name="stylegan3", method="fd", batch_size=2, replay="nvidia"),
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
        replay="torchmetrics",
    ),
    # torch-fidelity calculate_ppl: lerp of z at t = 0, uint8 images, to 64 by area when both sides are
    # larger, else bilinear (SampleSimilarityLPIPS.resize); num_samples required.
    "torch_fidelity": PPLProtocol(
        name="torch_fidelity",
        space="z",
        z_interp="lerp",
        method="fd",
        resize="area_or_bilinear:64",
        quantize_uint8=True,
        num_samples=None,
        batch_size=64,
        replay="torch_fidelity",
    ),
}


#: NVIDIA's metric names (stylegan2-ada-pytorch metrics/metric_main.py): the preset and the fields the name
#: sets; each is 50 000 samples, epsilon 1e-4, batch 2 per GPU, like the presets
NVIDIA_METRICS: dict[str, tuple[str, dict[str, str]]] = {
    "ppl2_wend": ("stylegan2", {"space": "w", "sampling": "end"}),  # full image
    "ppl_zfull": ("stylegan2_crop", {"space": "z", "sampling": "full"}),  # the face crop
    "ppl_wfull": ("stylegan2_crop", {"space": "w", "sampling": "full"}),
    "ppl_zend": ("stylegan2_crop", {"space": "z", "sampling": "end"}),
    "ppl_wend": ("stylegan2_crop", {"space": "w", "sampling": "end"}),
}


def _seconds_per_sample(engine: _Engine, seed: int) -> float:
    """Seconds per sample of one forward pass (generator, image pipeline, distance) on CPU_BATCH_SIZE
    samples, timed after a warm-up pass (first calls pay one-off set-up)."""
    gen, n = engine.gen, CPU_BATCH_SIZE
    z = ops.philox_normal(seed, 0, n, gen.z_dim, dtype=gen.dtype, device=engine.device)
    c = gen.labels(seed, 0, n, None, engine.device)
    noise = gen.noise(seed, 0, n, engine.device)
    elapsed = math.inf
    for _ in range(2):
        t0 = time.perf_counter()
        with torch.no_grad(), unchecked_range():
            img = gen.image(gen.transform_z(z), c, noise, "z")
            x = engine.pipe.linear(img.to(torch.float32) if not img.is_floating_point() else img)
            evaluate(engine.distance, x, x)
        elapsed = time.perf_counter() - t0
    return elapsed / n


def _auto_cpu_batch(engine: _Engine, seed: int, checkpoint: str | Path | None, config: dict[str, Any]) -> int:
    """The default protocol's CPU batch (see CPU_BATCH_SECONDS), the same on every rank (rank 0's) and the
    checkpoint's when resuming one (a batch size changes the distances at float rounding)."""
    saved = _streaming.checkpoint_batch_size(checkpoint) if checkpoint is not None else None
    if saved is not None:
        config["batch_size_auto"] = {"batch_size": saved, "from_checkpoint": str(checkpoint)}
        return saved
    per_sample = _seconds_per_sample(engine, seed)
    fits = CPU_BATCH_SECONDS / per_sample if per_sample > 0 else math.inf
    bs = CPU_BATCH_SIZE
    while bs * 2 <= min(fits, CPU_BATCH_MAX):
        bs *= 2
    bs = _streaming.broadcast_int(bs)
    config["batch_size_auto"] = {
        "batch_size": bs,
        "seconds_per_sample": per_sample,
        "target_seconds_per_pass": CPU_BATCH_SECONDS,
    }
    return bs


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

    @property
    def distance(self) -> str:
        """What the distances were measured with: ``"lpips-vgg16 v0.1 (torchvision vgg16-397923af.pth +
        lpips v0.1 vgg.pth)"``, ``"lpips-vgg16 (NVIDIA vgg16.pt)"``, ``"l2 (pixels)"``, ..."""
        d = self.config.get("distance") or {}
        return str(d.get("label") or d.get("name") or "unknown")

    def __str__(self) -> str:
        half = (self.ci_high - self.ci_low) / 2
        c = self.config
        return (
            f"PPL {self.mean:.4g} (95% CI {self.ci_low:.4g} .. {self.ci_high:.4g}, +-{half:.3g}; "
            f"std {self.std:.4g}; {self.num_kept}/{self.num_samples} samples kept; "
            f"preset {c.get('preset')}, {c.get('space')}/{c.get('sampling')}, method {c.get('method')}, "
            f"precision {c.get('precision')}; distance {self.distance})"
        )

    def to_json(self, path: str | Path | None = None, *, include_distances: bool = True) -> str:
        data = {k: v for k, v in asdict(self).items() if k not in ("distances", "kept")}
        data["samples_per_second"] = self.samples_per_second
        data["summary"] = str(self)  # names the distance, the precision, the method and the preset
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
        data.pop("summary", None)
        d = torch.tensor(data.pop("distances", []), dtype=torch.float64)
        k = torch.tensor(data.pop("kept", []), dtype=torch.bool)
        return cls(distances=d, kept=k, **data)

    def plot_histogram(self, ax: Any = None, bins: int = 100, log: bool = False) -> Any:
        """Histogram of the per-sample distances with the trimming thresholds and the mean (matplotlib)."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")  # axis labels stay inside when saved
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
    monitor: RangeMonitor | None = None  # the values against the declared range, one warning per run

    def check(
        self, x: torch.Tensor, start: int, what: str = "generator output", pairs: bool = False
    ) -> torch.Tensor:
        """Images for the distance (the adapter checked the type, rows and dtype): [N, 1 or 3, H, W],
        finite (NaN and inf named, with the sample indices; ``pairs``: the two images of each sample)."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise GeneratorOutputError(
                f"{what}: expected images [N, 1 or 3, H, W], got shape {tuple(x.shape)}"
            )
        check_finite_images(x, start, what, pairs)
        return x

    def to_unit(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Native range -> [-1, 1] (float, at least float32: a float16 generator's images are not rounded
        again by the distance), quantised to uint8 levels first when the protocol says so."""
        if self.monitor is not None:
            self.monitor.observe(x, start)
        if x.dtype == torch.uint8:
            return x.to(self.float_dtype) / 127.5 - 1.0
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        a, b = TO_UNIT[self.output_range]
        x = x * a + b if (a, b) != (1.0, 0.0) else x
        if self.protocol.quantize_uint8:
            x = ((x + 1.0) * 127.5).round().clamp(0, 255) / 127.5 - 1.0
        return x

    def tangent_scale(self) -> float:
        return TO_UNIT[self.output_range][0]

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """Channels, crop and resize: linear maps applied alike to images and tangents."""
        if self.rgb:
            x = as_rgb(x)  # the one rule for grey images (LPIPS applies it too)
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
        return check_distance_output(distance(x, x + s.reshape(-1, 1, 1, 1) * v), x.shape[0])

    def first(s: torch.Tensor) -> torch.Tensor:
        return torch.func.jvp(along, (s,), (torch.ones_like(s),))[1]

    s0 = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    return 0.5 * torch.func.jvp(first, (s0,), (torch.ones_like(s0),))[1]


def _resolve_distance(
    distance: object, protocol: PPLProtocol, device: torch.device, preset: str | None
) -> Callable:
    if distance == "auto" and preset in PEER_PRESETS:  # a peer's number: its LPIPS, never pixels
        d = preset_distance(preset, eps_mode=protocol.lpips_eps_mode, method=protocol.method)
    elif isinstance(distance, str) and (distance.startswith("lpips-") or distance == "auto"):
        d = make_distance(distance, eps_mode=protocol.lpips_eps_mode)
    else:
        d = make_distance(distance)  # type: ignore[arg-type]
    if isinstance(d, nn.Module):
        d = d.to(device)
    return d


def _describe_distance(distance: Callable) -> dict[str, Any]:
    """The distance in a result's config and a checkpoint: its name, eps convention, which weights (and a
    ``label`` saying both in a few words) and the fingerprint of its parameters (a module) or code,
    defaults and closure (a function)."""
    if isinstance(distance, L2Distance):
        return {"name": "l2", "label": "l2 (pixels)"}
    fp = fingerprint_of(distance)
    if isinstance(distance, LPIPS):
        out = {"name": f"lpips-{distance.net}", "eps": distance.eps, "eps_mode": distance.eps_mode}
        out["label"] = f"lpips-{distance.net} v0.1 ({distance.weights_label()})"
        out["weights"] = distance.weights_info
    elif isinstance(distance, NvidiaTorchScriptLPIPS):
        out = {"name": "lpips-vgg16-nvidia", "label": f"lpips-vgg16 ({distance.weights_label()})"}
        out["weights"] = distance.weights_info
    else:
        out = {"name": f"{type(distance).__module__}.{type(distance).__qualname__}"}
        out["label"] = out["name"]
    out["fingerprint"] = fp.digest
    if fp.unverified is not None:
        out["fingerprint_unverified"] = fp.unverified
    return out


# ---- the per-batch computation ----------------------------------------------------------------------------


def _nvidia_slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """NVIDIA's slerp of z (metrics/perceptual_path_length.py) in the latents' dtype, operation for
    operation: unit a and b, the angle's fraction t of the great circle through c = unit(b - <a, b> a),
    the result normalised again. ``t`` [N, 1]."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    cos = (a * b).sum(dim=-1, keepdim=True)
    angle = t * torch.acos(cos)
    c = b - cos * a
    c = c / c.norm(dim=-1, keepdim=True)
    p = a * torch.cos(angle) + c * torch.sin(angle)
    return p / p.norm(dim=-1, keepdim=True)


def _torchmetrics_slerp(a: torch.Tensor, b: torch.Tensor, s: torch.Tensor, unit: bool) -> torch.Tensor:
    """torchmetrics' raw-vector slerp (``_interpolate``, "slerp_any" / "slerp_unit") at positions s [N]
    (float64), in its operation order: coefficients sin((1 - s) w) / sin w and sin(s w) / sin w on the raw
    vectors, the lerp ``a + (b - a) s`` where a or b is zero or they are collinear."""
    tiny = 1e-7

    def unit_rows(x: torch.Tensor) -> torch.Tensor:
        return x / (x**2).sum(dim=-1, keepdim=True).sqrt().clamp_min(tiny)

    ua, ub = unit_rows(a), unit_rows(b)
    cos = (ua * ub).sum(dim=-1, keepdim=True)
    lerp_rows = (ua.norm(dim=-1, keepdim=True) < tiny) | (ub.norm(dim=-1, keepdim=True) < tiny)
    lerp_rows = lerp_rows | (cos > 1 - tiny) | (cos < -1 + tiny)
    omega = cos.acos()
    denom = omega.sin().clamp_min(tiny)
    w1, w0 = s.to(a.dtype).reshape(-1, 1), (1 - s).to(a.dtype).reshape(-1, 1)
    out = (w0 * omega).sin() / denom * a + (w1 * omega).sin() / denom * b
    out = torch.where(lerp_rows, a + (b - a) * w1, out)
    return unit_rows(out) if unit else out


@dataclass
class _Engine:
    gen: GeneratorAdapter
    protocol: PPLProtocol
    distance: Callable
    pipe: _Pipeline
    device: torch.device
    notes: list[str] = field(default_factory=list)
    first: bool = True  # the first batch is probed (determinism, quantisation, zero tangents)

    def _points(
        self, z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor, eps: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(p(t), p(t + eps))`` of the latent path in the arithmetic of the protocol's ``replay`` (the
        class docstring of :class:`PPLProtocol`): a peer's latents replay its samples bit for bit."""
        p, replay = self.protocol, self.protocol.replay
        peer_lerp = replay in ("torch_fidelity", "torchmetrics")
        if p.space == "z" and p.z_interp == "slerp":
            if replay == "nvidia":
                tt = t.to(z0.dtype).reshape(-1, 1)
                return _nvidia_slerp(z0, z1, tt), _nvidia_slerp(z0, z1, tt + eps)
            return paths.slerp(z0, z1, t), paths.slerp(z0, z1, t + eps)
        if p.space == "z" and p.z_interp in ("slerp_any", "slerp_any_unit"):  # torchmetrics' raw slerp
            unit = p.z_interp == "slerp_any_unit"
            if replay == "torchmetrics":
                at = _torchmetrics_slerp(z0, z1, t, unit)
                if not unit:  # torchmetrics' first image is G(z0) itself
                    at = torch.where((t == 0).reshape(-1, 1), z0, at)
                return at, _torchmetrics_slerp(z0, z1, t + eps, unit)
            return (
                paths.slerp_raw_with_tangent(z0, z1, t, unit=unit)[0],
                paths.slerp_raw_with_tangent(z0, z1, t + eps, unit=unit)[0],
            )
        shape = (-1, *([1] * (z0.ndim - 1)))
        if peer_lerp:  # a + (b - a) * t, the first point z0 itself at t = 0
            diff = z1 - z0
            return z0 + diff * t.to(z0.dtype).reshape(shape), z0 + diff * (t + eps).to(z0.dtype).reshape(
                shape
            )
        tt = t.to(z0.dtype).reshape(shape)
        return z0.lerp(z1, tt), z0.lerp(z1, tt + eps)

    def _path(
        self, z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor, c: torch.Tensor | None, eps: float | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(p(t), p(t + eps))``, or with ``eps=None`` ``(p(t), p'(t))``: the slerp of unit z, torchmetrics'
        slerp of raw z (``slerp_any``, normalised for ``slerp_any_unit``), else the lerp of z or of
        w = f(z) (over the whole [num_ws, w_dim] tensor), whose tangent is the difference."""
        if self.protocol.space == "w":
            z0, z1 = self.gen.mapping(torch.cat([z0, z1]), _cat2(c)).chunk(2)
        if eps is not None:
            return self._points(z0, z1, t, eps)
        if self.protocol.space == "z" and self.protocol.z_interp == "slerp":
            return paths.slerp_with_tangent(z0, z1, t)
        if self.protocol.space == "z" and self.protocol.z_interp in ("slerp_any", "slerp_any_unit"):
            return paths.slerp_raw_with_tangent(z0, z1, t, unit=self.protocol.z_interp == "slerp_any_unit")
        tt = t.to(z0.dtype).reshape(-1, *([1] * (z0.ndim - 1)))
        return z0.lerp(z1, tt), z1 - z0

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
                args = (torch.cat([a, b]), _cat2(c), _cat2(noise), p.space)
                img = pipe.check(gen.image(*args), start, pairs=True)
                if self.first:
                    self._probe_fd(img, args)
                x = pipe.linear(pipe.to_unit(img, start))
                x0, x1 = x.chunk(2)
                with unchecked_range():  # the range was checked above, against the declared one
                    d = evaluate(self.distance, x0, x1).to(torch.float64) / eps**2
        else:
            with torch.no_grad():
                a, tan = self._path(z0, z1, t, c, None)
                if self.first:  # a plain call first: a failure names z_dim, uint8 output is refused here
                    probe = gen.image(a, c, noise, p.space)
                    check_images(probe, a.shape[0], gen.kind, differentiable=True)
            img, timg = gen.image_jvp(a, tan, c, noise, p.space, precision=p.precision)
            img = pipe.check(img, start)
            pipe.check(timg, start, "generator tangent")
            with torch.no_grad(), _precision(p.precision, self.device), unchecked_range():
                x = pipe.linear(pipe.to_unit(img, start))
                v = pipe.linear(timg.to(x.dtype) * pipe.tangent_scale())
                d = _distance_tangent_sq(self.distance, x, v).to(torch.float64)
            if self.first:
                self._probe_jvp(img, timg)
        bad = ~torch.isfinite(d)
        if bool(bad.any()):
            idx = (torch.nonzero(bad).flatten() + start).tolist()
            kind = "NaN" if bool(torch.isnan(d).any()) else "inf"
            raise FloatingPointError(
                f"distance: {kind} for sample indices {idx[:20]} (the images are finite: the distance "
                "overflowed or divided by zero)"
            )
        quantised = p.quantize_uint8 or any("quantised images" in n for n in self.notes)
        if self.first and p.method == "fd" and d.numel() > 1 and not bool(d.any()) and not quantised:
            x0 = x.chunk(2)[0]
            if not bool((x0 == x0[:1]).all()):
                self._warn(
                    "every distance of the first batch is exactly 0 while the images differ between "
                    f"samples: an eps={eps:g} step does not change the images (quantised or detached "
                    "output); this is not the path length. Return float images that move with the latents",
                    DegenerateResultWarning,
                )
        self.first = False
        return d

    def _warn(self, msg: str, category: type[Warning]) -> None:
        self.notes.append(msg)
        warnings.warn(msg, category, stacklevel=5)

    def _probe_fd(self, img: torch.Tensor, args: tuple) -> None:
        """First batch under finite differences: the same latents again must give the same images, and a
        quantised output (uint8, or integral values in [0, 255]) is worth one warning."""
        again = self.gen.image(*args)
        a_img, b_img = img.chunk(2)
        note = check_determinism(img, again, b_img.double() - a_img.double(), self.gen.kind)
        if note is not None:
            self.notes.append(note)
        if self.protocol.quantize_uint8:
            return  # the protocol's own quantisation, warned about when it was resolved
        quantised = img.dtype == torch.uint8 or (
            self.gen.output_range == "0_255" and img.is_floating_point() and torch.equal(img, img.round())
        )
        if quantised:
            self._warn(
                f"method='fd': the generator returns quantised images ({img.dtype}, 256 levels): an eps="
                f"{self.protocol.epsilon:g} step mostly rounds to the same level (distances 0, or 37-118x "
                "off); this reproduces a uint8 protocol such as torch-fidelity's, not the path length. For "
                "the exact limit return the float images before the quantisation (declare their range with "
                "output_range=) and use method='jvp'",
                FiniteDifferenceWarning,
            )

    def _probe_jvp(self, img: torch.Tensor, timg: torch.Tensor) -> None:
        """First batch under the JVP: tangents that are exactly 0 for every sample while the images vary
        mean the output does not move differentiably (rounding or a detach inside the generator)."""
        if bool(timg.any()) or img.shape[0] < 2 or bool((img == img[:1]).all()):
            return
        self._warn(
            "method='jvp': the generator's image tangents are exactly 0 for every sample of the first batch "
            "while its images vary: the output does not depend differentiably on the latents (rounding, "
            "quantisation or a detach inside it), so the exact path length comes out 0. Return float images "
            "that carry the derivative, or use method='fd' to measure the quantised output",
            DegenerateResultWarning,
        )

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


_LOW_PRECISION = {torch.float16: "fp16", torch.bfloat16: "bf16"}


def _warn_fd(protocol: PPLProtocol, gen: GeneratorAdapter, notes: list[str]) -> None:
    """Finite differences at eps = 1e-4 need the full float32 mantissa (SPEC 4)."""
    if protocol.method != "fd":
        return
    low = _LOW_PRECISION.get(gen.param_dtype)  # type: ignore[arg-type]
    if protocol.precision in ("fp16", "bf16") or low is not None:
        what = (
            f"precision={protocol.precision!r}"
            if low is None
            else f"a {str(gen.param_dtype).removeprefix('torch.')} generator (its parameters)"
        )
        raise ValueError(
            f"{what} with method='fd': finite differences at epsilon={protocol.epsilon:g} cancel "
            f"catastrophically in {low or protocol.precision} (errors of 10^2-10^4x per sample); use "
            "method='jvp', which has no cancellation"
            + ("" if low is None else ", or the generator in float32 (.float())")
        )
    reasons = []
    if protocol.precision == "tf32":
        reasons.append(
            (
                "TF32 convolutions/matmuls (10-bit mantissa) make eps=1e-4 differences ~100x off",
                "method='jvp' computes the exact limit",
            )
        )
    if protocol.quantize_uint8:
        reasons.append(
            (
                "uint8 images round away most of an eps=1e-4 step (distances ~37-118x off)",
                "method='jvp' computes the exact limit; it needs float images from the generator: a uint8 "
                "output has no derivative",
            )
        )
    for why, fix in reasons:
        msg = f"method='fd': {why}; this reproduces the protocol {protocol.name!r}, not the path length"
        notes.append(msg)
        warnings.warn(f"{msg} ({fix})", FiniteDifferenceWarning, stacklevel=3)


def _check_protocol_overrides(given: dict[str, Any]) -> dict[str, Any]:
    if "resize" in given:
        given["resize"] = _check_resize(given["resize"])
    for key, allowed in (
        ("space", ("w", "z")),
        ("sampling", ("end", "full")),
        ("method", ("fd", "jvp")),
        ("z_interp", get_args(Interp)),
        ("precision", (*PRECISIONS, "auto")),
    ):
        if key in given:
            check_choice(given[key], key, allowed)
    if "epsilon" in given:
        given["epsilon"] = check_number(given["epsilon"], "epsilon", 0, 1, lo_open=True, hi_open=True)
    if "crop" in given:
        check_bool(given["crop"], "crop")
    for key in ("batch_size", "num_samples"):
        if key in given:
            check_int(given[key], key, 1)
    for key in ("lower", "upper"):
        if key in given:
            given[key] = _check_percentile(given[key], key)
    return given


def _resolve(
    generator: object,
    preset: str | None,
    overrides: Mapping[str, Any],
    distance: object,
    device: torch.device | str | None,
    *,
    z_dim: int | None = None,
    output_range: OutputRange | None = None,
    check_range: bool = True,
    z_dim_hint: int | None = None,
) -> tuple[_Engine, dict[str, Any]]:
    if preset is not None:
        check_choice(preset, "preset", [None, *sorted(PRESETS)])
    check_bool(check_range, "check_range")
    protocol = PRESETS[preset] if preset is not None else DEFAULT
    given = _check_protocol_overrides({k: v for k, v in overrides.items() if v is not None})
    protocol = replace(protocol, **given)
    if protocol.name == "torchmetrics" and protocol.sampling != "end":
        raise ValueError("sampling: the torchmetrics protocol only defines 'end' (t = 0)")
    gen = adapt(generator, z_dim=z_dim, output_range=output_range, z_dim_hint=z_dim_hint)
    if isinstance(gen.module, nn.Module):
        gen.module.eval()
    dev = torch.device(device) if device is not None else gen.device
    if isinstance(gen.module, nn.Module) and gen.device != dev:
        gen.module.to(dev)
    if preset is None and "batch_size" not in given and dev.type == "cpu":
        protocol = replace(protocol, batch_size=CPU_BATCH_SIZE)
    if protocol.space == "w" and not gen.has_w:
        raise ValueError(f"space='w': the generator ({gen.kind}) has no mapping network; use space='z'")
    dist = _resolve_distance(distance, protocol, dev, preset)
    notes: list[str] = []
    requested = protocol.precision
    if requested == "auto" and protocol.method == "fd":
        protocol = replace(protocol, precision="fp32")
        notes.append("precision='auto': fp32 (finite differences need the full float32 mantissa)")
    _warn_fd(protocol, gen, notes)
    if protocol.method == "jvp" and protocol.quantize_uint8:
        notes.append("method='jvp': the uint8 quantisation has no derivative and is left out (exact limit)")
    if protocol.method == "jvp" and "epsilon" in given:
        notes.append(
            f"epsilon={given['epsilon']:g}: unused, method='jvp' computes the eps -> 0 limit (no step)"
        )
    if protocol.precision == "tf32" and dev.type != "cuda":
        notes.append(f"precision='tf32' on {dev.type}: tensor-core rounding emulated (tangentlens.tf32)")
    if protocol.precision == "bf16" and dev.type == "cpu" and not native_bf16(dev):
        notes.append(
            "precision='bf16' on a CPU without native bf16 kernels: bf16 arithmetic emulated by float32 "
            "kernels (tangentlens.bf16): native bf16's numbers, not its speed"
        )
    resolution = getattr(gen.module, "img_resolution", None)
    float_dtype = gen.dtype if gen.dtype == torch.float64 else torch.float32
    if isinstance(dist, nn.Module) and not isinstance(dist, LPIPS):
        float_dtype = next((t.dtype for t in dist.buffers() if t.is_floating_point()), float_dtype)
    elif isinstance(dist, LPIPS):
        float_dtype = dist.lin0.dtype if gen.dtype != torch.float64 else torch.float64
    rgb = isinstance(dist, (LPIPS, NvidiaTorchScriptLPIPS)) or hasattr(dist, "net")
    pipe = _Pipeline(
        protocol,
        gen.output_range,
        resolution,
        rgb=rgb,
        float_dtype=float_dtype,
        monitor=RangeMonitor(gen.output_range, check_range, notes),
    )
    engine = _Engine(gen, protocol, dist, pipe, dev, notes)
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
    low = _LOW_PRECISION.get(gen.param_dtype)  # type: ignore[arg-type]
    if low is not None and engine.protocol.precision == "fp32":
        config["precision"] = low
        notes.append(
            f"precision: the generator's parameters are {str(gen.param_dtype).removeprefix('torch.')}, so "
            f"it runs in {low}; the images are taken to float32 for the distance"
        )
    config["preset"] = preset or "tangentlens (default)"
    config.update(described)
    config["notes"] = notes
    return engine, config


def _check_t(t: object, n: int) -> torch.Tensor:
    """Path positions: a number or a tensor of 1 or N values, finite, in [0, 1] -> float64 [N]."""
    if isinstance(t, bool) or not isinstance(t, (int, float, torch.Tensor)):
        raise TypeError(
            f"t: expected a number or a tensor [N={n}] of positions in [0, 1], got {type(t).__name__}"
        )
    tt = torch.as_tensor(t).detach()
    if tt.is_complex() or tt.dtype == torch.bool or tt.numel() not in (1, n) or tt.dim() > 1:
        raise ValueError(
            f"t: expected a number or a tensor [N={n}] of positions in [0, 1], got shape {tuple(tt.shape)} "
            f"({tt.dtype})"
        )
    tt = tt.to(torch.float64).reshape(-1).expand(n)
    bad = ~torch.isfinite(tt) | (tt < 0) | (tt > 1)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        raise ValueError(
            f"t: expected positions in [0, 1], got {float(tt[i])!r} for sample {i}"
            + (f" (and {int(bad.sum()) - 1} more)" if int(bad.sum()) > 1 else "")
        )
    return tt


def _check_rows(x: object, name: str, n: int) -> None:
    if x is None:
        return
    tensors = [x] if isinstance(x, torch.Tensor) else x
    if not isinstance(tensors, (list, tuple)) or not all(isinstance(v, torch.Tensor) for v in tensors):
        raise TypeError(
            f"{name}: expected {'a tensor' if name == 'labels' else 'a list of tensors'} with "
            f"{n} rows, got {type(x).__name__}"
        )
    for i, v in enumerate(tensors):
        if v.dim() == 0 or v.shape[0] != n:
            where = name if isinstance(x, torch.Tensor) else f"{name}[{i}]"
            raise ValueError(f"{where}: expected {n} rows (one per sample), got shape {tuple(v.shape)}")


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
    z_dim: int | None = None,
    output_range: OutputRange | None = None,
    check_range: bool = True,
) -> torch.Tensor:
    """Per-sample path lengths [N] (float64) for EXPLICIT latents ``z0, z1 [N, z_dim]`` and positions ``t``
    (a float or [N], in [0, 1]); ``labels`` and ``noise`` are given per sample or omitted (no labels;
    constant noise). With a preset and the peer's latents this replays the peer's samples one for one: the
    path points are computed with the peer's own arithmetic (``PPLProtocol.replay``). ``z_dim`` /
    ``output_range``: for plain callables (default: z0's width, ``"-1_1"``); ``check_range``: see
    :func:`ppl`."""
    for name, z in (("z0", z0), ("z1", z1)):
        check_tensor(z, name, ndim=2, shape="[N, z_dim]", floating=True, finite=True)
    if z0.shape != z1.shape:
        raise ValueError(f"z1: expected the shape of z0 {tuple(z0.shape)}, got {tuple(z1.shape)}")
    n = z0.shape[0]
    tt = _check_t(t, n)
    _check_rows(labels, "labels", n)
    _check_rows(noise, "noise", n)
    if batch_size is not None:
        check_int(batch_size, "batch_size", 1)
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
        z_dim=z_dim,
        output_range=output_range,
        check_range=check_range,
        z_dim_hint=z0.shape[1],
    )
    if z0.shape[1] != engine.gen.z_dim:
        raise ValueError(f"z0: expected z_dim = {engine.gen.z_dim} columns, got {z0.shape[1]}")
    tt = tt.to(engine.device)
    bs = batch_size or engine.protocol.batch_size
    dt = engine.gen.param_dtype or z0.dtype
    out = []
    for s in range(0, n, bs):
        sl = slice(s, min(n, s + bs))
        c = labels[sl].to(engine.device) if labels is not None else None
        nz = [x[sl].to(engine.device, dt) for x in noise] if noise is not None else None
        out.append(
            engine.distances(z0[sl].to(engine.device, dt), z1[sl].to(engine.device, dt), tt[sl], c, nz, s)
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
    z_dim: int | None = None,
    output_range: OutputRange | None = None,
    check_range: bool = True,
    resume_unverified: bool = False,
) -> PPLResult:
    """Perceptual Path Length of ``generator`` (any object :func:`tangentlens.generators.as_generator`
    accepts).

    Args:
        preset: ``None`` (tangentlens' protocol: W, end, exact JVP, NVIDIA's resize and trimming, per-sample
            noise) or a peer's: ``"stylegan2"`` (NVIDIA ppl2_wend), ``"stylegan2_crop"``
            (ppl_{z,w}{full,end}), ``"stylegan3"`` (NVIDIA stylegan3's ppl2_wend), ``"torchmetrics"``,
            ``"torch_fidelity"``. Arguments given explicitly
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
        batch_size: samples per forward pass. Default: the preset's, and for tangentlens' protocol 16 on a
            GPU; on a CPU the largest power of two in [4, 256] whose forward pass (generator and distance,
            timed once on 4 samples) takes at most ``CPU_BATCH_SECONDS`` (the config records the choice as
            ``batch_size_auto``; a resumed checkpoint keeps its batch). Each sample's inputs do not
            depend on it, but the kernels round differently per batch shape: other batch sizes agree to
            float rounding (about 1e-4 relative per sample in float32), the same batch size bit for bit
            (also on resume, and on any number of processes at that batch per process).
        distance: ``"auto"`` (LPIPS-VGG16 when its weights are found, else pixels with a warning),
            ``"lpips-vgg16"``, ``"l2"``, an LPIPS module or a callable ``d(x0, x1) -> [N]``.
        seed: sample i's latents, t, labels and noise derive from (seed, i) only, whatever the batch size,
            the number of processes or a resume.
        labels: conditional generators: None (uniform classes), a tensor [L, c_dim] of labels to draw from
            (e.g. the dataset's), or ``labels(indices) -> [n, ...]``.
        target_rel_ci: stop once the 95 % CI half-width (normal approximation on the trimmed mean) is below
            this fraction of the mean; checked every 1000 samples and cut there.
        checkpoint: file to resume from and to write atomically every ``checkpoint_every`` seconds. It
            refuses to resume a different run: the protocol, the seed, and fingerprints of the generator
            (a module's parameters and buffers; a function's code, constants, defaults and closure) and of
            the distance must match. ``resume_unverified=True`` resumes when a fingerprint cannot be
            computed reliably (the result's config says why); otherwise that is refused too.
        bootstrap: bootstrap replicates for the reported CI (trimming re-applied in each); 0 gives the
            normal approximation ``mean +- 1.96 sem`` instead.
        progress: a progress bar with samples/s and the running mean +- CI (rank 0).
        device: where to run (default: the generator's device).
        z_dim, output_range: for a plain callable ``z -> images`` (its latent size; its image range
            ``"-1_1"`` (default), ``"0_1"`` or ``"0_255"``), as :func:`tangentlens.generators.as_generator`.
        check_range: compare the images with the declared range (values far outside it; on the first batch
            images never negative under ``"-1_1"``, and the like) and warn once per run saying what each fix
            would change; False silences it. It never stops a run.

    Under finite differences the first batch is computed twice: a generator whose images differ for the
    same latents (noise drawn inside its forward) is refused, since eps = 1e-4 steps would measure its
    randomness. Quantised images (uint8) under ``method="fd"``, and tangents that are exactly 0 under
    ``method="jvp"``, give one warning each.

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
        z_dim=z_dim,
        output_range=output_range,
        check_range=check_range,
    )
    if preset is None and batch_size is None and engine.device.type == "cpu":
        engine.protocol = replace(
            engine.protocol, batch_size=_auto_cpu_batch(engine, seed, checkpoint, config)
        )
        config["batch_size"] = engine.protocol.batch_size
    p = engine.protocol
    if p.num_samples is None:
        raise ValueError(f"num_samples: the preset {preset!r} has no default; pass num_samples")
    n_total, bs = p.num_samples, p.batch_size
    check_int(n_total, "num_samples", 2)  # a CI needs two samples
    check_u64(seed, "seed")
    check_u64_range(0, n_total, "num_samples")
    check_int(bootstrap, "bootstrap", 0)
    checkpoint_every = check_number(checkpoint_every, "checkpoint_every", 0)
    check_bool(resume_unverified, "resume_unverified")
    if target_rel_ci is not None:
        check_positive(target_rel_ci, "target_rel_ci")
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
    ckpt_config = {k: v for k, v in config.items() if k not in ("num_samples", "notes", "batch_size_auto")}
    ckpt_config["generator"] = {k: v for k, v in config["generator"].items() if k != "notes"}
    # where the weights were found may change between runs (downloaded, then cached); the fingerprint stays
    ckpt_config["distance"] = {k: v for k, v in config["distance"].items() if k not in ("weights", "label")}
    unverified = [
        f"{what}: {part['fingerprint_unverified']}"
        for what, part in (("generator", config["generator"]), ("distance", config["distance"]))
        if "fingerprint_unverified" in part
    ]
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
        unverified=unverified,
        resume_unverified=resume_unverified,
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
    config["notes"] = engine.notes  # with what the run itself found (range, determinism, quantisation)
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
