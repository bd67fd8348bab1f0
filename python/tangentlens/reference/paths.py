"""Reference lerp / slerp with analytic tangents and the reference path sampler (SPEC section 4)."""

from __future__ import annotations

import torch

from tangentlens.reference.philox import philox_normal, philox_uniform53

STREAM_Z0, STREAM_Z1, STREAM_T = 0, 1, 2
DEGENERATE_NC = 1e-12


def _cast(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if dtype in (torch.float16, torch.bfloat16):
        return x.to(torch.float32).to(dtype)
    return x.to(dtype)


def slerp_frame(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit a, unit c orthogonal to a in the plane of (a, b), and theta, for rows of float64 [B, D].

    theta = 0 gives c = 0; antipodal rows use the circle through e_k, k = first argmin |a_k|. Written
    with safe denominators so that autograd never sees a 0/0 in an unselected branch.
    """
    na = a.norm(dim=-1, keepdim=True)
    nb = b.norm(dim=-1, keepdim=True)
    if bool((na == 0).any() or (nb == 0).any() or ~torch.isfinite(na).all() or ~torch.isfinite(nb).all()):
        bad = int(torch.nonzero((na == 0) | (nb == 0) | ~torch.isfinite(na) | ~torch.isfinite(nb))[0, 0])
        raise ValueError(
            f"slerp: a and b must be non-zero vectors; row {bad} has a zero (or non-finite) norm"
        )
    a = a / na
    b = b / nb
    d = (a * b).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    c_raw = b - d * a
    # Re-orthogonalise against a (rounding leaves a component along a when b is nearly +-a); below
    # DEGENERATE_NC the circle is numerically undetermined and the row counts as (anti)parallel.
    c_raw = c_raw - (a * c_raw).sum(-1, keepdim=True) * a
    nc = c_raw.norm(dim=-1, keepdim=True)
    ok = nc > DEGENERATE_NC
    c = torch.where(ok, c_raw / torch.where(ok, nc, torch.ones_like(nc)), torch.zeros_like(c_raw))
    antipodal = (~ok & (d < 0)).squeeze(-1)
    if bool(antipodal.any()):
        k = a.abs().argmin(dim=-1, keepdim=True)
        e_k = torch.zeros_like(a).scatter_(-1, k, 1.0)
        a_k = a.gather(-1, k)
        c_anti = (e_k - a * a_k) / torch.sqrt(1.0 - a_k * a_k)
        c = torch.where(antipodal[:, None], c_anti, c)
    theta = torch.atan2(nc, d)
    theta = torch.where(antipodal[:, None], torch.full_like(theta, torch.pi), theta)
    return a, c, theta


def interpolate(
    a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, mode: int, with_tangent: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Row-wise lerp (mode 0) or slerp (mode 1) of a, b [B, D] at t [B], computed in float64."""
    dtype = a.dtype
    a64, b64, t64 = a.to(torch.float64), b.to(torch.float64), t.to(torch.float64)[:, None]
    if mode == 0:
        diff = b64 - a64
        p, tan = a64 + t64 * diff, diff
    elif mode == 1:
        if a.shape[-1] < 2 and a.shape[0] > 0:
            raise ValueError(f"a: slerp needs vectors of dim >= 2, got {a.shape[-1]}")
        ua, c, theta = slerp_frame(a64, b64)
        ang = t64 * theta
        p = ua * torch.cos(ang) + c * torch.sin(ang)
        p = p / p.norm(dim=-1, keepdim=True)  # unit up to rounding already; SPEC: the output is normalised
        tan = theta * (c * torch.cos(ang) - ua * torch.sin(ang))
    else:
        raise ValueError(f"mode: expected 0 (lerp) or 1 (slerp), got {mode}")
    return _cast(p, dtype), (_cast(tan, dtype) if with_tangent else None)


def sample(
    seed: int,
    start: int,
    count: int,
    dim: int,
    *,
    mode: int,
    full: bool,
    eps: float,
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """z0, z1 (streams 0 and 1), t (stream 2, or 0 for "end") and, for slerp, p(t), p(t + eps), p'(t)."""
    z0 = philox_normal(seed, start, count, dim, stream=STREAM_Z0, dtype=torch.float64, device=device)
    z1 = philox_normal(seed, start, count, dim, stream=STREAM_Z1, dtype=torch.float64, device=device)
    if full:
        t = philox_uniform53(seed, start, count, STREAM_T, device)
    else:
        t = torch.zeros(count, dtype=torch.float64, device=device)
    out = {"z0": _cast(z0, dtype), "z1": _cast(z1, dtype), "t": t}
    if mode == 1:
        p0, tangent = interpolate(z0, z1, t, 1, True)
        p1, _ = interpolate(z0, z1, t + eps, 1, False)
        out.update(p0=_cast(p0, dtype), p1=_cast(p1, dtype), tangent=_cast(tangent, dtype))
    return out
