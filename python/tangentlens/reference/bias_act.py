"""Reference fused bias + activation + gain + clamp: NVIDIA's ``bias_act`` contract (StyleGAN2/3).

``y = clamp(gain * act(x + b), -clamp, clamp)`` with ``b`` broadcast along ``dim``. Plain torch ops, so
autograd and ``torch.func`` differentiate it; it is the oracle of the native kernels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Activation:
    code: int  # the kernels' activation id
    func: Callable[[torch.Tensor, float], torch.Tensor]
    def_alpha: float
    def_gain: float


ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation(0, lambda x, a: x, 0.0, 1.0),
    "relu": Activation(1, lambda x, a: F.relu(x), 0.0, math.sqrt(2)),
    "lrelu": Activation(2, lambda x, a: F.leaky_relu(x, a), 0.2, math.sqrt(2)),
    "tanh": Activation(3, lambda x, a: torch.tanh(x), 0.0, 1.0),
    "sigmoid": Activation(4, lambda x, a: torch.sigmoid(x), 0.0, 1.0),
    "elu": Activation(5, lambda x, a: F.elu(x), 0.0, 1.0),
    "selu": Activation(6, lambda x, a: F.selu(x), 0.0, 1.0),
    "softplus": Activation(7, lambda x, a: F.softplus(x), 0.0, 1.0),
    "swish": Activation(8, lambda x, a: torch.sigmoid(x) * x, 0.0, math.sqrt(2)),
}


def resolve_args(
    act: str, alpha: float | None, gain: float | None, clamp: float | None
) -> tuple[Activation, float, float, float]:
    """NVIDIA's defaults: alpha and gain per activation; clamp < 0 (or None) means no clamping."""
    if act not in ACTIVATIONS:
        raise ValueError(f"act: expected one of {sorted(ACTIVATIONS)}, got {act!r}")
    spec = ACTIVATIONS[act]
    alpha = float(spec.def_alpha if alpha is None else alpha)
    gain = float(spec.def_gain if gain is None else gain)
    clamp = float(-1 if clamp is None else clamp)
    return spec, alpha, gain, clamp


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    spec, alpha, gain, clamp = resolve_args(act, alpha, gain, clamp)
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def act_derivative(act: str, v: torch.Tensor, alpha: float) -> torch.Tensor:
    """``act'(v)`` by its explicit formula, with autograd's values at the kinks (relu'(0) = 0,
    lrelu'(0) = alpha, elu'(0) = 1)."""
    one = torch.ones_like(v)
    if act == "linear":
        return one
    if act == "relu":
        return (v > 0).to(v.dtype)
    if act == "lrelu":
        return torch.where(v > 0, one, alpha * one)
    if act == "tanh":
        return 1 - torch.tanh(v) ** 2
    if act == "sigmoid":
        s = torch.sigmoid(v)
        return s * (1 - s)
    if act == "elu":
        return torch.where(v <= 0, torch.exp(v), one)
    if act == "selu":
        lam, a = 1.0507009873554804934193349852946, 1.6732632423543772848170429916717
        return torch.where(v <= 0, lam * a * torch.exp(v), lam * one)
    if act == "softplus":  # beta 1, threshold 20: linear above
        return torch.where(v > 20, one, torch.sigmoid(v))
    if act == "swish":
        s = torch.sigmoid(v)
        return s + v * s * (1 - s)
    raise ValueError(f"act: expected one of {sorted(ACTIVATIONS)}, got {act!r}")


def bias_act_jvp(
    x: torch.Tensor,
    b: torch.Tensor | None,
    tx: torch.Tensor,
    tb: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, ty)``: bias_act and its tangents ``ty_k = gain act'(x + b) (tx_k + tb_k)`` for tx [K, *x.shape]
    and tb [K, C] (or None), 0 where the clamp is active (``|gain act(x + b)| > clamp``; the boundary
    passes, NaN does not, as in autograd of torch.clamp). Written with the explicit derivative."""
    spec, alpha, gain, clamp = resolve_args(act, alpha, gain, clamp)
    bshape = [-1 if i == dim else 1 for i in range(x.ndim)]
    v = x if b is None else x + b.reshape(bshape)
    pre = spec.func(v, alpha) * gain
    d = gain * act_derivative(act, v, alpha)
    y = pre
    if clamp >= 0:
        d = torch.where((pre >= -clamp) & (pre <= clamp), d, torch.zeros_like(d))
        y = pre.clamp(-clamp, clamp)
    t = tx if tb is None else tx + tb.reshape([tb.shape[0], *bshape])
    ty = torch.where(d == 0, torch.zeros_like(t), d * t)
    return y, ty
