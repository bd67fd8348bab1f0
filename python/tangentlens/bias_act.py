"""Fused bias + activation + gain + clamp with NVIDIA's ``bias_act`` interface (StyleGAN2/3).

``bias_act(x, b, dim=1, act="lrelu", alpha=None, gain=None, clamp=None)`` computes
``clamp(gain * act(x + b), -clamp, clamp)``; alpha and gain default per activation as in NVIDIA's code.
"""

from __future__ import annotations

import torch

from tangentlens._extension import Impl
from tangentlens.reference import bias_act as _ref

__all__ = ["ACTIVATIONS", "bias_act"]

ACTIVATIONS = tuple(_ref.ACTIVATIONS)


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    impl: Impl = "auto",
) -> torch.Tensor:
    """``clamp(gain * act(x + b), -clamp, clamp)``, b [x.shape[dim]] broadcast along ``dim``."""
    return _ref.bias_act(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
