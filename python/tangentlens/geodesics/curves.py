"""Discrete curves between two latents: the interpolation paths, the parametrisation of the free points
(in the latent space, or on a shell of given radii), the discrete energy and length of a curve's
embedding, and the refinement that doubles the resolution.

A curve of n points ``c_0 .. c_{n-1}`` (``c_0 = z0``, ``c_{n-1} = z1`` fixed) with embeddings
``e_i = F(c_i)`` has segment distances ``d_i = |e_{i+1} - e_i|²`` (the squared embedding distance: LPIPS or
pixels), energy ``E = (n - 1) Σ_i d_i`` and length ``L = Σ_i sqrt(d_i)``; ``L² <= E`` with equality when
all segments are equally long (Cauchy-Schwarz), so the minimiser of E is a constant-speed shortest path.
"""

from __future__ import annotations

from typing import Literal

import torch

from tangentlens.paths import slerp_raw_with_tangent

Init = Literal["lerp", "slerp"]
Constrain = Literal["none", "sphere"]

__all__ = ["Constrain", "Init", "Shell", "energy", "interpolation_path", "length", "refine", "segments"]


def interpolation_path(x0: torch.Tensor, x1: torch.Tensor, n: int, init: Init) -> torch.Tensor:
    """The interpolation path at ``t_i = i / (n - 1)``, float64 ``[B, n, d]``, endpoints exactly x0, x1:
    ``"lerp"`` ``x0 + t (x1 - x0)``; ``"slerp"`` the spherical interpolation of the raw vectors (their
    angle swept at constant rate, the norm moving between |x0| and |x1|; collinear or zero rows fall back
    to lerp, :func:`tangentlens.paths.slerp_raw_with_tangent`)."""
    a, b = x0.double(), x1.double()
    B, d = a.shape
    t = torch.linspace(0.0, 1.0, n, dtype=torch.float64, device=a.device)
    if init == "lerp":
        path = a[:, None] + t[None, :, None] * (b - a)[:, None]
    else:
        A, Bv = a[:, None].expand(B, n, d), b[:, None].expand(B, n, d)
        path = slerp_raw_with_tangent(A, Bv, t.expand(B, n), eps=1e-12)[0]
    path = path.clone()
    path[:, 0], path[:, -1] = a, b
    return path


def refine(path: torch.Tensor) -> torch.Tensor:
    """``[B, n, d] -> [B, 2n - 1, d]``: the midpoint of every segment inserted (the old points keep their
    places, so the finer curve nests the coarser one)."""
    B, n, d = path.shape
    out = path.new_empty(B, 2 * n - 1, d)
    out[:, 0::2] = path
    out[:, 1::2] = 0.5 * (path[:, 1:] + path[:, :-1])
    return out


def segments(emb: torch.Tensor) -> torch.Tensor:
    """Squared distances ``d_i = |e_{i+1} - e_i|²`` [B, n - 1] of embeddings ``[B, n, D]``: differences in
    the embeddings' dtype, squares summed in float64."""
    return (emb[:, 1:] - emb[:, :-1]).double().square().sum(-1)


def energy(seg: torch.Tensor) -> torch.Tensor:
    """``E = (n - 1) Σ d_i`` [B] from the segments [B, n - 1]."""
    return seg.shape[1] * seg.sum(1)


def length(seg: torch.Tensor) -> torch.Tensor:
    """``L = Σ sqrt(d_i)`` [B] from the segments [B, n - 1]."""
    return seg.clamp_min(0.0).sqrt().sum(1)


class Shell:
    """The free points' parametrisation. Without radii the points are the parameters themselves. With
    radii ``[B, n]`` (``constrain="sphere"``), point i is ``ρ_i u_i / |u_i|``: it stays on the sphere of
    radius ρ_i whatever the unconstrained parameter u_i, and the energy's gradient in u is the tangential
    part of the gradient in c, scaled by ρ_i / |u_i|."""

    def __init__(self, radii: torch.Tensor | None) -> None:
        self.radii = radii  # float64 [B, n] (endpoints included) or None

    @staticmethod
    def for_endpoints(x0: torch.Tensor, x1: torch.Tensor, n: int, constrain: Constrain) -> Shell:
        """``"none"``: free points; ``"sphere"``: radius ρ(t) = (1 - t) |x0| + t |x1| at t_i = i / (n - 1)."""
        if constrain == "none":
            return Shell(None)
        r0, r1 = x0.double().norm(dim=1), x1.double().norm(dim=1)
        t = torch.linspace(0.0, 1.0, n, dtype=torch.float64, device=x0.device)
        return Shell(r0[:, None] + t[None] * (r1 - r0)[:, None])

    def subset(self, idx: torch.Tensor) -> Shell:
        return Shell(None if self.radii is None else self.radii[idx])

    def refined(self) -> Shell:
        """The radii of the curve at twice the resolution (ρ is linear in t: midpoints are exact)."""
        if self.radii is None:
            return self
        return Shell(refine(self.radii.unsqueeze(-1)).squeeze(-1))

    def points(self, u: torch.Tensor) -> torch.Tensor:
        """Interior points ``[b, m, d]`` from parameters ``u [b, m, d]`` (differentiable)."""
        if self.radii is None:
            return u
        rho = self.radii[:, 1:-1, None].to(u.dtype)
        return rho * u / u.norm(dim=-1, keepdim=True)

    def project(self, c: torch.Tensor) -> torch.Tensor:
        """Parameters that give the interior points c (the points themselves, onto their spheres)."""
        return self.points(c) if self.radii is not None else c

    def tangent_basis(self, u: torch.Tensor) -> torch.Tensor | None:
        """``dc/du`` blocks ``[b, m, d, d]`` at parameters on their spheres (|u_i| = ρ_i): the projector
        ``I - û ûᵀ``; None for free points (the identity)."""
        if self.radii is None:
            return None
        uh = u / u.norm(dim=-1, keepdim=True)
        eye = torch.eye(u.shape[-1], dtype=u.dtype, device=u.device)
        return eye - uh.unsqueeze(-1) * uh.unsqueeze(-2)
