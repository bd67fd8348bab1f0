"""Distances for the geometry engine: ``d(x0, x1) -> [N]`` that are squared Euclidean distances of an
embedding, ``d = |e(x0) - e(x1)|^2`` (SPEC 1, 2).

``make_distance`` turns a name, a module or a callable into one:

- ``"lpips-vgg16"`` / ``"lpips-alex"`` / ``"lpips-squeeze"``: :class:`tangentlens.LPIPS` with weights
  found along its search path or downloaded (:mod:`tangentlens.weights`; offline, an error naming the
  files and where to put them);
- ``"l2"``: pixel space, ``sum (x0 - x1)^2`` (embedding = the flattened image). It needs no weights and is
  the light default, but it is NOT a perceptual distance: PPL values in pixel space are not comparable
  with published LPIPS-based numbers;
- ``"auto"``: LPIPS-VGG16 when its weights are found or can be downloaded, else ``"l2"`` with a warning
  saying so (a file whose digest does not match is an error, never a fallback);
- an ``nn.Module`` or callable: used as it is.

``preset_distance`` is the distance of a PPL preset that promises a peer's number: LPIPS, never a silent
fallback to pixels.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from tangentlens import weights
from tangentlens.lpips import LPIPS, NvidiaTorchScriptLPIPS
from tangentlens.weights import WeightsDownloadError, WeightsNotFoundError

__all__ = [
    "PEER_PRESETS",
    "DistanceOutputError",
    "L2Distance",
    "PresetDistanceWarning",
    "check_distance_output",
    "evaluate",
    "make_distance",
    "preset_distance",
]

#: PPL presets that promise a peer's number: measured with LPIPS, never silently with pixel distances
PEER_PRESETS = ("stylegan2", "stylegan2_crop", "torchmetrics", "torch_fidelity")
_UNAVAILABLE = (WeightsNotFoundError, WeightsDownloadError)

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
DistanceSpec = str | nn.Module | Distance


class PresetDistanceWarning(RuntimeWarning):
    """A preset measures with another LPIPS implementation than its peer's own (said why)."""


class DistanceOutputError(ValueError):
    """A distance returned something other than one value per sample."""


def check_distance_output(d: object, rows: int, name: str = "distance") -> torch.Tensor:
    """The distance's output for ``rows`` pairs as a float tensor [rows] (``[rows, 1, 1, 1]``, the lpips
    package's shape, is flattened). Shape and dtype only: works on torch.func's wrapped tensors."""
    if not isinstance(d, torch.Tensor):
        raise DistanceOutputError(
            f"{name}: expected one value per sample, a tensor [{rows}], got {type(d).__name__}"
        )
    if d.dim() == 0:
        raise DistanceOutputError(
            f"{name}: expected one value per sample, a tensor [{rows}], got a scalar: it reduced over the "
            "batch; return the per-sample values (no .mean() or .sum() over the samples)"
        )
    if d.shape[0] != rows or d.numel() != rows:
        raise DistanceOutputError(
            f"{name}: expected one value per sample, a tensor [{rows}], got shape {tuple(d.shape)}"
        )
    if not d.is_floating_point():
        raise DistanceOutputError(f"{name}: expected floating-point values, got {d.dtype}")
    return d.reshape(rows)


def evaluate(distance: Distance, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """``distance(x0, x1)`` checked to be one float per sample [N]."""
    return check_distance_output(distance(x0, x1), x0.shape[0])


class L2Distance(nn.Module):
    """Squared Euclidean distance in pixel space: ``forward(x0, x1) = |x0 - x1|^2`` per sample."""

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        if x0.shape != x1.shape:
            raise ValueError(f"x1: expected the shape of x0 {tuple(x0.shape)}, got {tuple(x1.shape)}")
        return (x0 - x1).flatten(1).square().sum(1)


def make_distance(spec: DistanceSpec = "auto", **lpips_kwargs: object) -> Distance:
    """A distance from a name (``"lpips-vgg16"``, ``"lpips-alex"``, ``"lpips-squeeze"``, ``"l2"``,
    ``"auto"``), an ``nn.Module`` or a callable; ``lpips_kwargs`` go to :class:`LPIPS`."""
    if isinstance(spec, nn.Module) or (callable(spec) and not isinstance(spec, str)):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"distance: expected a name, an nn.Module or a callable, got {type(spec).__name__}")
    if spec == "l2":
        return L2Distance()
    if spec.startswith("lpips-") and spec[6:] in ("vgg16", "alex", "squeeze"):
        return LPIPS(spec[6:], **lpips_kwargs)  # type: ignore[arg-type]
    if spec == "auto":
        try:
            return LPIPS("vgg16", **lpips_kwargs)  # type: ignore[arg-type]
        except _UNAVAILABLE as exc:
            warnings.warn(
                f"distance='auto': LPIPS-VGG16 weights are not available ({exc}); using 'l2' (pixel space), "
                "which is not a perceptual distance",
                RuntimeWarning,
                stacklevel=2,
            )
            return L2Distance()
    raise ValueError(
        f"distance: expected 'lpips-vgg16', 'lpips-alex', 'lpips-squeeze', 'l2' or 'auto', got {spec!r}"
    )


def preset_distance(
    preset: str,
    *,
    eps_mode: str = "lpips",
    method: str = "fd",
    download: bool | None = None,
    progress: bool = True,
) -> Distance:
    """The LPIPS a peer preset measures with under ``distance="auto"``.

    ``stylegan2`` / ``stylegan2_crop`` under finite differences: NVIDIA's own ``vgg16.pt`` (found or
    downloaded; :meth:`LPIPS.from_nvidia_torchscript`), else tangentlens' LPIPS-VGG16 with torchvision's and
    lpips' weights and a :class:`PresetDistanceWarning` (NVIDIA's module is a TorchScript port of the same
    metric; the two have not been compared number for number). TorchScript has no forward-mode rules, so
    ``method="jvp"`` takes tangentlens' LPIPS-VGG16. The other presets: LPIPS-VGG16 with ``eps_mode``.
    No weights at all: :class:`WeightsNotFoundError` naming the files; never pixel distances."""
    if preset not in PEER_PRESETS:
        raise ValueError(f"preset: expected one of {PEER_PRESETS}, got {preset!r}")
    nvidia_error = None
    if preset.startswith("stylegan2") and method == "fd":
        try:
            return NvidiaTorchScriptLPIPS(download=download, progress=progress)
        except _UNAVAILABLE as exc:
            nvidia_error = exc
    try:
        lp = LPIPS("vgg16", eps_mode=eps_mode, download=download, progress=progress)  # type: ignore[arg-type]
    except _UNAVAILABLE as exc:
        preface = (
            f"preset {preset!r} measures with LPIPS-VGG16 (a preset that promises a peer's number does not "
            "fall back to pixel distances; distance='l2' measures those explicitly): "
        )
        if isinstance(exc, WeightsNotFoundError) and exc.keys:
            keys = list(exc.keys)
            if isinstance(nvidia_error, WeightsNotFoundError):  # either NVIDIA's module or the two files
                preface += "NVIDIA's vgg16.pt, or torchvision's and lpips' files; "
                keys = ["nvidia-vgg16", *keys]
            elif nvidia_error is not None:
                preface += f"NVIDIA's vgg16.pt: {nvidia_error}; "
            raise weights.not_found_error(keys, exc.why, "distance=LPIPS(...)", preface) from exc
        also = f"NVIDIA's vgg16.pt: {nvidia_error}; " if nvidia_error is not None else ""
        raise WeightsNotFoundError(f"{preface}{also}{exc}") from exc
    if nvidia_error is not None:
        warnings.warn(
            f"preset {preset!r}: NVIDIA's vgg16.pt is not available ({nvidia_error}); measuring with "
            f"tangentlens' LPIPS-VGG16 ({lp.weights_label()}), a port of the same metric not compared with "
            "NVIDIA's module number for number. Get vgg16.pt (`tangentlens weights --download nvidia-vgg16`) "
            "for NVIDIA's own numbers",
            PresetDistanceWarning,
            stacklevel=3,
        )
    return lp
