"""The PPL protocols: what a run computes (space, path, method, crop, resize, trimming, batch,
precision, the arithmetic of the path points), the peers' presets and NVIDIA's metric names, and the checks of
user overrides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from tangentlens._checks import (
    check_bool,
    check_choice,
    check_int,
    check_number,
)
from tangentlens.jvp import PRECISIONS, Precision
from tangentlens.ppl.statistics import Percentile, _check_percentile

Space = Literal["w", "z"]
Sampling = Literal["end", "full"]
Method = Literal["fd", "jvp"]
Interp = Literal["slerp", "lerp", "slerp_any", "slerp_any_unit"]
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
