"""Latent paths for Perceptual Path Length (SPEC section 4): mass sampling and lerp / slerp with tangents.

``sample`` draws, for sample indices ``start .. start + count - 1``, the endpoints z0, z1 ~ N(0, I), the
position t (U[0, 1) for ``sampling="full"``, 0 for ``"end"``) and, for slerp, the points p(t), p(t + eps)
and the analytic tangent p'(t), in one fused pass. Sample ``i`` depends only on ``(seed, i)``: results do
not change with the batch size, the number of processes or a resume in the middle.

Counter streams: z0 = stream 0 (so ``sample(...).z0 == ops.philox_normal(seed, start, count, dim)``),
z1 = stream 1, t = stream 2. z0, z1 and t are bit-identical across CPU and CUDA; p(t), p(t + eps) and
p'(t) are computed in double on every device and agree to the output dtype's rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from tangentlens import reference
from tangentlens._checks import check_count, check_float_dtype, check_u64, check_u64_range
from tangentlens._extension import Impl, resolve_impl
from tangentlens.ops import as_i64

Interp = Literal["slerp", "lerp"]
Sampling = Literal["full", "end"]
_MODES = {"lerp": 0, "slerp": 1}

__all__ = [
    "PathSamples",
    "lerp",
    "lerp_with_tangent",
    "sample",
    "slerp",
    "slerp_raw_with_tangent",
    "slerp_with_tangent",
]


@dataclass
class PathSamples:
    """The output of :func:`sample`; fields that were not requested (or do not apply) are None."""

    z0: torch.Tensor | None
    z1: torch.Tensor | None
    t: torch.Tensor  # float64 [count]
    p0: torch.Tensor | None  # slerp: p(t)
    p1: torch.Tensor | None  # slerp: p(t + eps)
    tangent: torch.Tensor | None  # slerp: p'(t) = dp/dt
    interp: Interp
    sampling: Sampling
    eps: float
    start: int


def sample(
    seed: int,
    start: int,
    count: int,
    dim: int,
    *,
    interp: Interp = "slerp",
    sampling: Sampling = "full",
    eps: float = 1e-4,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    endpoints: bool = True,
    step: bool = True,
    tangent: bool = True,
    impl: Impl = "auto",
) -> PathSamples:
    """Sample ``count`` PPL paths of dimension ``dim`` starting at sample index ``start``.

    Args:
        interp: ``"slerp"`` (Z space: unit-normalised great-circle path, SPEC 4) or ``"lerp"`` (W space: only
            z0, z1 and t are produced; map them, then use :func:`lerp_with_tangent`).
        sampling: ``"full"`` (t ~ U[0, 1)) or ``"end"`` (t = 0).
        eps: the finite-difference step of p(t + eps).
        endpoints, step, tangent: which of (z0, z1), p(t + eps), p'(t) to materialise; skipping what a method
            does not need saves memory bandwidth (the exact JVP method needs p(t) and p'(t) only).
    """
    check_u64(seed, "seed")
    check_u64(start, "start")
    check_count(count, "count")
    check_count(dim, "dim")
    check_u64_range(start, count)
    check_float_dtype(dtype)
    if interp not in _MODES:
        raise ValueError(f"interp: expected 'slerp' or 'lerp', got {interp!r}")
    if sampling not in ("full", "end"):
        raise ValueError(f"sampling: expected 'full' or 'end', got {sampling!r}")
    if not isinstance(eps, (int, float)) or not float(eps) == float(eps) or abs(float(eps)) == float("inf"):
        raise ValueError(f"eps: expected a finite number, got {eps!r}")
    if dim < 1 or (interp == "slerp" and dim < 2):
        raise ValueError(f"dim: expected >= {2 if interp == 'slerp' else 1} for {interp}, got {dim}")
    mode, full, eps = _MODES[interp], sampling == "full", float(eps)
    device = torch.device(device) if device is not None else torch.device("cpu")
    is_slerp = mode == 1

    if resolve_impl(impl, device) == "reference":
        ref = reference.sample(
            seed, start, count, dim, mode=mode, full=full, eps=eps, dtype=dtype, device=device
        )
        return PathSamples(
            z0=ref["z0"] if endpoints else None,
            z1=ref["z1"] if endpoints else None,
            t=ref["t"],
            p0=ref.get("p0"),
            p1=ref.get("p1") if step else None,
            tangent=ref.get("tangent") if tangent else None,
            interp=interp,
            sampling=sampling,
            eps=eps,
            start=start,
        )

    def alloc(wanted: bool) -> torch.Tensor:
        return torch.empty((count, dim) if wanted else (0, dim), dtype=dtype, device=device)

    z0, z1 = alloc(endpoints), alloc(endpoints)
    p0, p1, tan = alloc(is_slerp), alloc(is_slerp and step), alloc(is_slerp and tangent)
    t = torch.empty(count, dtype=torch.float64, device=device)
    torch.ops.tangentlens.paths_sample_(
        z0, z1, t, p0, p1, tan, as_i64(seed), as_i64(start), dim, mode, full, eps
    )
    return PathSamples(
        z0=z0 if endpoints else None,
        z1=z1 if endpoints else None,
        t=t,
        p0=p0 if is_slerp else None,
        p1=p1 if is_slerp and step else None,
        tangent=tan if is_slerp and tangent else None,
        interp=interp,
        sampling=sampling,
        eps=eps,
        start=start,
    )


def _rows(
    a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flatten a, b to [B, D] rows and t to float64 [B].

    The batch dims are the leading ``t.ndim`` dims of ``a`` (a float or 0-d t: the first dim when
    ``a.ndim >= 2``, none for a single vector); everything after them is one vector.
    """
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise TypeError(f"a, b: expected tensors, got {type(a).__name__} and {type(b).__name__}")
    if a.shape != b.shape:
        raise ValueError(f"b: expected the shape of a {tuple(a.shape)}, got {tuple(b.shape)}")
    if a.dtype != b.dtype:
        raise TypeError(f"b: expected the dtype of a ({a.dtype}), got {b.dtype}")
    check_float_dtype(a.dtype, "a.dtype")
    if a.device != b.device:
        raise ValueError(f"b: expected the device of a ({a.device}), got {b.device}")
    if a.dim() == 0:
        raise ValueError("a: expected at least one dimension (a vector), got a scalar")
    t = torch.as_tensor(t, dtype=torch.float64, device=a.device)
    batch_dims = t.dim() if t.dim() > 0 else (1 if a.dim() >= 2 else 0)
    if batch_dims >= a.dim():
        raise ValueError(
            f"t: its {t.dim()} dims are the batch dims of a, which leaves no vector dims "
            f"in a of shape {tuple(a.shape)}"
        )
    batch = a.shape[:batch_dims]
    try:
        t = t.expand(batch)
    except RuntimeError:
        raise ValueError(
            f"t: shape {tuple(t.shape)} does not broadcast to the batch dims {tuple(batch)} of a"
        ) from None
    n = 1
    for s in batch:
        n *= s
    return a.reshape(n, -1), b.reshape(n, -1), t.reshape(n).contiguous()


def _interpolate(a, b, t, mode: int, with_tangent: bool, impl: Impl):  # noqa: ANN001, ANN202
    shape = a.shape if isinstance(a, torch.Tensor) else None
    a2, b2, t2 = _rows(a, b, t)
    if a2.shape[1] > 1 and a2.stride(1) != 1:
        a2, b2 = a2.contiguous(), b2.contiguous()
    if resolve_impl(impl, a2.device, backward_only=(a2, b2, t2)) == "reference":
        p, tan = reference.interpolate(a2, b2, t2, mode, with_tangent)
    else:
        if b2.shape[1] > 1 and b2.stride(1) != 1:
            b2 = b2.contiguous()
        p, tan = torch.ops.tangentlens.interpolate(a2, b2, t2, mode, with_tangent)
    p = p.reshape(shape)
    return (p, tan.reshape(shape)) if with_tangent else p


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | float, *, impl: Impl = "auto") -> torch.Tensor:
    """Spherical interpolation of the directions of ``a`` and ``b`` at ``t``; the result is a unit vector.

    ``a = b`` gives ``a/|a|`` for every t; ``a = -b`` uses the great circle through ``e_k`` (k = the first
    index of the smallest ``|a_k|``); a zero vector raises ``ValueError``. Computed in float64.
    """
    return _interpolate(a, b, t, 1, False, impl)


def slerp_with_tangent(
    a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | float, *, impl: Impl = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(slerp(a, b, t), d/dt slerp(a, b, t))``; the tangent has length theta = angle(a, b)."""
    return _interpolate(a, b, t, 1, True, impl)


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | float, *, impl: Impl = "auto") -> torch.Tensor:
    """Linear interpolation ``a + t (b - a)`` (computed in float64, rounded once)."""
    return _interpolate(a, b, t, 0, False, impl)


def lerp_with_tangent(
    a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | float, *, impl: Impl = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lerp(a, b, t), b - a)``."""
    return _interpolate(a, b, t, 0, True, impl)


def slerp_raw_with_tangent(
    a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | float, *, unit: bool = False, eps: float = 1e-7
) -> tuple[torch.Tensor, torch.Tensor]:
    """torchmetrics' spherical interpolation of the raw vectors and its t-derivative, over the last dim.

    ``p(t) = (sin((1 - t) w) a + sin(t w) b) / sin w`` with ``w`` the angle between a and b: the vectors
    are not normalised, so the norm moves between ``|a|`` and ``|b|`` (torchmetrics' ``"slerp_any"``);
    ``p'(t) = w (cos(t w) b - cos((1 - t) w) a) / sin w``. Where a or b is zero or they are collinear
    (``|cos w| > 1 - eps``) it is the lerp ``a + t (b - a)``, as torchmetrics does. ``unit=True`` gives
    ``q = p / |p|`` and ``q' = (p' - q <q, p'>) / |p|`` (torchmetrics' ``"slerp_unit"``). Pure PyTorch in
    the inputs' dtype (a handful of elementwise ops: no kernel needed).
    """
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        raise TypeError("a, b: expected tensors")
    if a.shape != b.shape:
        raise ValueError(f"b: expected the shape of a {tuple(a.shape)}, got {tuple(b.shape)}")
    tt = torch.as_tensor(t, dtype=a.dtype, device=a.device)
    if tt.dim() > 0:
        tt = tt.reshape(*tt.shape, *([1] * (a.dim() - tt.dim())))
    ua = a / a.norm(dim=-1, keepdim=True).clamp_min(eps)
    ub = b / b.norm(dim=-1, keepdim=True).clamp_min(eps)
    cos = (ua * ub).sum(dim=-1, keepdim=True)
    zero = (ua.norm(dim=-1, keepdim=True) < eps) | (ub.norm(dim=-1, keepdim=True) < eps)
    lerp_rows = zero | (cos > 1 - eps) | (cos < -1 + eps)
    w = cos.clamp(-1.0, 1.0).acos()
    sw = w.sin().clamp_min(eps)
    p = (((1 - tt) * w).sin() * a + (tt * w).sin() * b) / sw
    dp = w * ((tt * w).cos() * b - ((1 - tt) * w).cos() * a) / sw
    p = torch.where(lerp_rows, a + tt * (b - a), p)
    dp = torch.where(lerp_rows, (b - a).expand_as(dp), dp)
    if not unit:
        return p, dp
    n = p.norm(dim=-1, keepdim=True).clamp_min(eps)
    q = p / n
    return q, (dp - q * (q * dp).sum(dim=-1, keepdim=True)) / n
