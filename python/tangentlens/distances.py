"""Distances for the geometry engine: ``d(x0, x1) -> [N]`` that are squared Euclidean distances of an
embedding, ``d = |e(x0) - e(x1)|^2`` (SPEC 1, 2).

``make_distance`` turns a name, a module or a callable into one:

- ``"lpips-vgg16"`` / ``"lpips-alex"`` / ``"lpips-squeeze"``: :class:`tangentlens.LPIPS` with weights
  found along its search path (an error naming the file and how to get it if they are missing);
- ``"l2"``: pixel space, ``sum (x0 - x1)^2`` (embedding = the flattened image). It needs no weights and is
  the light default, but it is NOT a perceptual distance: PPL values in pixel space are not comparable
  with published LPIPS-based numbers;
- ``"auto"``: LPIPS-VGG16 when its weights are found, else ``"l2"`` with a warning saying so;
- an ``nn.Module`` or callable: used as it is.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from tangentlens.lpips import LPIPS, WeightsNotFoundError

__all__ = ["DistanceOutputError", "L2Distance", "check_distance_output", "evaluate", "make_distance"]

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
DistanceSpec = str | nn.Module | Distance


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
        except WeightsNotFoundError as exc:
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
