"""Validation and batched linear-algebra helpers shared by the linear-Gaussian modules."""

from __future__ import annotations

from typing import Any

import numpy as np


def _check_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_cov(cov: Any, name: str = "cov", size: int | None = None) -> np.ndarray:
    """Float64 array of shape (..., k, k), finite and symmetric; SPD-ness is checked by the Cholesky users."""
    S = np.asarray(cov, dtype=np.float64)
    if S.ndim < 2 or S.shape[-1] != S.shape[-2]:
        raise ValueError(f"{name}: expected a square matrix of shape (..., k, k), got shape {S.shape}")
    if size is not None and S.shape[-1] != size:
        raise ValueError(f"{name}: expected a {size}x{size} matrix, got shape {S.shape}")
    if not np.all(np.isfinite(S)):
        raise ValueError(f"{name}: expected finite entries, got NaN or inf")
    scale = max(float(np.max(np.abs(S), initial=0.0)), 1e-300)
    asym = float(np.max(np.abs(S - np.swapaxes(S, -1, -2)), initial=0.0))
    if asym > 1e-9 * scale:
        raise ValueError(f"{name}: expected a symmetric matrix, got max |S - S^T| = {asym:.3g}")
    return S


def _chol_logdet(mats: np.ndarray, name: str) -> np.ndarray:
    """log det of a stack of SPD matrices through Cholesky; a clear error when one is not SPD."""
    try:
        L = np.linalg.cholesky(mats)
    except np.linalg.LinAlgError:
        low = float(np.min(np.linalg.eigvalsh(mats)))
        raise ValueError(
            f"{name}: expected a symmetric positive-definite covariance (every block used must be SPD), "
            f"got a block with smallest eigenvalue {low:.3g}"
        ) from None
    return 2.0 * np.sum(np.log(np.diagonal(L, axis1=-2, axis2=-1)), axis=-1)


def _spd_inverse(M: np.ndarray) -> np.ndarray:
    """Inverse of a stack of SPD matrices via Cholesky, symmetrised."""
    L = np.linalg.cholesky(M)
    eye = np.broadcast_to(np.eye(M.shape[-1]), M.shape)
    Linv = np.linalg.solve(L, eye)
    inv = np.swapaxes(Linv, -1, -2) @ Linv
    return 0.5 * (inv + np.swapaxes(inv, -1, -2))


def _sym(M: np.ndarray) -> np.ndarray:
    return 0.5 * (M + np.swapaxes(M, -1, -2))


def _T(M: np.ndarray) -> np.ndarray:
    return np.swapaxes(M, -1, -2)


def _index_list(idx: Any, k: int, name: str) -> list[int]:
    if isinstance(idx, (int, np.integer)):
        idx = [idx]
    out = [int(i) for i in idx]
    for i in out:
        if not 0 <= i < k:
            raise ValueError(f"{name}: expected indices in [0, {k}), got {i}")
    if len(set(out)) != len(out):
        raise ValueError(f"{name}: expected distinct indices, got {out}")
    return out


def _sub_logdet(S: np.ndarray, idx: list[int], name: str) -> np.ndarray | float:
    if not idx:
        return np.zeros(S.shape[:-2]) if S.ndim > 2 else 0.0
    block = S[..., idx, :][..., :, idx]
    ld = _chol_logdet(block, name)
    return ld if S.ndim > 2 else float(ld)


def _grid(values: Any, name: str, *, allow_negative: bool = False) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    ok = arr.ndim == 1 and arr.size > 0 and bool(np.all(np.isfinite(arr)))
    if not ok or (not allow_negative and np.any(arr < 0)):
        kind = "finite" if allow_negative else "non-negative finite"
        raise ValueError(f"{name}: expected a {kind} scalar or 1-d sequence, got {values!r}")
    return arr


def _json_array(a: np.ndarray) -> Any:
    """ndarray -> nested lists with NaN/inf as None (strict JSON)."""
    obj = np.asarray(a, dtype=object)
    obj[~np.isfinite(np.asarray(a, dtype=np.float64))] = None
    return obj.tolist()


class IndefiniteQError(ValueError):
    """Q = γΣ_Z⁻¹ + 2λI is not positive definite, so the encoder update (and the loss's minimum over A) is
    undefined: λ < 0 makes the reconstruction term reward errors once 2|λ| exceeds γ / Σ_Z,ii."""


def _check_q(q: np.ndarray, gamma: Any, lam: Any, sigma_z: np.ndarray, *, axis: int = -1) -> None:
    """Raise IndefiniteQError naming γ, λ and the smallest eigenvalue where the diagonal ``q`` of Q has a
    finite
    entry <= 0 (NaN entries come from a diverging state and are left to the callers' finiteness checks)."""
    q = np.asarray(q, dtype=np.float64)
    bad = np.isfinite(q) & (q <= 0)
    if not np.any(bad):
        return
    member = np.any(np.moveaxis(bad, axis, -1), axis=-1)
    first = np.unravel_index(int(np.flatnonzero(member.ravel())[0]), member.shape) if member.ndim else ()
    qm = np.moveaxis(q, axis, -1)[first]
    zm = np.moveaxis(np.broadcast_to(sigma_z, q.shape), axis, -1)[first]
    g = (
        float(np.broadcast_to(gamma, member.shape)[first])
        if member.ndim
        else float(np.asarray(gamma).ravel()[0])
    )
    lm = (
        float(np.broadcast_to(lam, member.shape)[first]) if member.ndim else float(np.asarray(lam).ravel()[0])
    )
    raise IndefiniteQError(
        f"gamma, lam: the encoder update needs Q = γΣ_Z⁻¹ + 2λI positive definite, got smallest eigenvalue "
        f"{float(np.min(qm)):.6g} at γ = {g:g}, λ = {lm:g} (largest Σ_Z entry {float(np.max(zm)):.6g}); "
        f"λ must exceed −γ / (2 max Σ_Z,ii)"
    )
