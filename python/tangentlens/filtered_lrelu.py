"""Filtered leaky ReLU (StyleGAN3) with NVIDIA's ``filtered_lrelu`` interface.

``filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter)``: bias, upsampling FIR
filter, ``clamp(gain * lrelu(., slope))``, downsampling FIR filter (:mod:`tangentlens.reference.
filtered_lrelu` states the contract).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from tangentlens._extension import Impl
from tangentlens.reference.filtered_lrelu import filtered_lrelu as _reference

__all__ = ["filtered_lrelu"]


def filtered_lrelu(
    x: torch.Tensor,
    fu: torch.Tensor | None = None,
    fd: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: float | None = None,
    flip_filter: bool = False,
    impl: Impl = "auto",
) -> torch.Tensor:
    return _reference(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter)


def filtered_lrelu_jvp(
    x: torch.Tensor,
    fu: torch.Tensor | None,
    fd: torch.Tensor | None,
    b: torch.Tensor | None,
    tx: torch.Tensor,
    tb: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: float | None = None,
    flip_filter: bool = False,
    impl: Impl = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    from tangentlens.reference.filtered_lrelu import filtered_lrelu_jvp as ref

    return ref(x, fu, fd, b, tx, tb, up, down, padding, gain, slope, clamp, flip_filter)
