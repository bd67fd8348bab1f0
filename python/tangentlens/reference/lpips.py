"""Reference LPIPS layer head (SPEC section 3): channel normalisation, per-layer distance, and the
tangents of the normalised, weighted embedding. Textbook formulas, computed in float64.

``eps_mode`` 0 is the lpips package's ``f / (sqrt(sum f^2) + eps)``, 1 is torchmetrics'
``f / sqrt(sum f^2 + eps)``. Results are float32 (float64 for float64 inputs), like the kernels.
"""

from __future__ import annotations

import torch

EPS_OUTSIDE, EPS_INSIDE = 0, 1


def _out_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def normalize_channels(f: torch.Tensor, eps: float, eps_mode: int) -> torch.Tensor:
    """``f_hat`` of a feature map [N, C, H, W] (in f's dtype; float64 in, float64 out)."""
    s = (f * f).sum(dim=1, keepdim=True)
    if eps_mode == EPS_OUTSIDE:
        return f / (torch.sqrt(s) + eps)
    if eps_mode == EPS_INSIDE:
        return f / torch.sqrt(s + eps)
    raise ValueError(f"eps_mode: expected 0 (outside the sqrt) or 1 (inside), got {eps_mode}")


def layer_distance(
    f0: torch.Tensor, f1: torch.Tensor, weight: torch.Tensor, eps: float, eps_mode: int
) -> torch.Tensor:
    """Mean over pixels of ``sum_c w_c (f0_hat - f1_hat)^2`` -> [N]."""
    out = _out_dtype(f0.dtype)
    d0 = normalize_channels(f0.to(torch.float64), eps, eps_mode)
    d1 = normalize_channels(f1.to(torch.float64), eps, eps_mode)
    w = weight.to(torch.float64).reshape(1, -1, 1, 1)
    return (w * (d0 - d1) ** 2).sum(dim=1).mean(dim=(1, 2)).to(out)


def normalization_tangent(f: torch.Tensor, t: torch.Tensor, eps: float, eps_mode: int) -> torch.Tensor:
    """``d f_hat`` [N, K, C, H, W] for f [N, C, H, W] along tangents t [N, K, C, H, W] (the formula of
    SPEC 3, written out; at f = 0 with eps outside the sqrt it is the one-sided derivative t / eps)."""
    f = f[:, None]
    s = (f * f).sum(dim=2, keepdim=True)
    dot = (f * t).sum(dim=2, keepdim=True)
    if eps_mode == EPS_INSIDE:
        a = 1.0 / torch.sqrt(s + eps)
        c = a**3 * dot
    elif eps_mode == EPS_OUTSIDE:
        norm = torch.sqrt(s)
        a = 1.0 / (norm + eps)
        safe = torch.where(s > 0, norm, torch.ones_like(norm))
        c = torch.where(s > 0, a * a * dot / safe, torch.zeros_like(dot))
    else:
        raise ValueError(f"eps_mode: expected 0 (outside the sqrt) or 1 (inside), got {eps_mode}")
    return a * t - c * f


def tangent_norm(
    f: torch.Tensor, tangents: torch.Tensor, weight: torch.Tensor, eps: float, eps_mode: int, gram: bool
) -> torch.Tensor:
    """Squared norms [N, K] (or inner products [N, K, K]) of the tangents of ``sqrt(w / (H W)) f_hat``."""
    out = _out_dtype(f.dtype)
    g = normalization_tangent(f.to(torch.float64), tangents.to(torch.float64), eps, eps_mode)
    n, k = g.shape[:2]
    hw = g.shape[-1] * g.shape[-2]
    g = g * torch.sqrt(weight.to(torch.float64) / max(hw, 1)).reshape(1, 1, -1, 1, 1)
    g = g.reshape(n, k, -1)
    res = g @ g.transpose(1, 2) if gram else (g * g).sum(-1)
    return res.to(out)
