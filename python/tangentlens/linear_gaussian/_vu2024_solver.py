"""The Vu–Wei–Wan alternating solver, batched over many runs (the ``vu2024`` protocol).

The notebooks run one (γ, λ, restart) at a time with ``np.linalg.inv`` on 3×3 to 5×5 matrices; here every run
is one member of a batch and the matrices are stored batch-last, ``(rows, cols, N)``, so that each
small-matrix operation is a few vectorised numpy calls over all members (``np.linalg`` on stacks of tiny
matrices costs ~0.5 µs per matrix and call, ten times more). The algebra is the notebooks', in their order:

* decoder: ``P = (Σ_Y⁻¹ + Bᵀ Σ_W⁻¹ B)⁻¹``, ``A = P Bᵀ Σ_W⁻¹``, ``Σ_Z = diag(P)``;
* encoder: ``Q = γ Σ_Z⁻¹ + 2λ I``, ``M = I + Aᵀ Q A``, ``B = M⁻¹ Aᵀ Q``, ``Σ_W = M⁻¹`` (full) or
  ``diag(1 / diag M)`` (mean-field);

with symmetric inverses through a batched Cholesky factorisation instead of LAPACK's LU, and ``Σ_W⁻¹ = M``
from the encoder step before (the notebooks invert the inverse). On the notebooks' own initialisations the
final B agrees with theirs to ~1e-12 relative, also for γ > 1 where Σ_W shrinks to ~1e-42 (measured, see
``docs/linear_gaussian.md``).

The stopping rule is theirs: after a half-step, the run stops when the Frobenius change of the block just
updated (B and Σ_W, or A and Σ_Z) is ≤ ``tol``, the change of their objective since the previous half-step
rounds to 0 at 8 decimals and the reconstruction error is ≤ ``recon_tol``. The objective (their expression,
evaluated in float64 with ``np.linalg``) and the reconstruction error are only computed for the runs whose
parameter changes already pass, which are the only ones the rule can stop."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tangentlens.linear_gaussian._common import _check_q

__all__ = ["ProtocolRuns", "notebook_objective", "reconstruction_error", "solve_protocol"]


# ----------------------------------------------------------------------------------------------------------
# Batch-last small-matrix helpers: a matrix stack is an array (rows, cols, N)
# ----------------------------------------------------------------------------------------------------------
def _mm(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """(r, k, N) @ (k, c, N) -> (r, c, N)."""
    return np.einsum("ikn,kjn->ijn", X, Y)


def _t(X: np.ndarray) -> np.ndarray:
    return X.transpose(1, 0, 2)


def _spd_inv(M: np.ndarray) -> np.ndarray:
    """Inverse of a stack of symmetric positive-definite (k, k, N) matrices (lower triangle read), symmetric.

    Cholesky M = L Lᵀ, T = L⁻¹, M⁻¹ = Tᵀ T: a Gram matrix, so the result is positive semi-definite even when M
    is badly conditioned. A non-positive pivot gives NaN (caught by the callers' finiteness checks)."""
    k = M.shape[0]
    L: list[list[np.ndarray]] = [[None] * k for _ in range(k)]  # type: ignore[list-item]
    with np.errstate(invalid="ignore", divide="ignore"):
        for j in range(k):
            d = M[j, j].copy()
            for p in range(j):
                d -= L[j][p] * L[j][p]
            L[j][j] = np.sqrt(d)
            inv_d = 1.0 / L[j][j]
            for i in range(j + 1, k):
                v = M[i, j].copy()
                for p in range(j):
                    v -= L[i][p] * L[j][p]
                L[i][j] = v * inv_d
        T: list[list[np.ndarray]] = [[None] * k for _ in range(k)]  # type: ignore[list-item]
        for i in range(k):
            T[i][i] = 1.0 / L[i][i]
            for j in range(i - 1, -1, -1):
                v = L[i][j] * T[j][j]
                for p in range(j + 1, i):
                    v += L[i][p] * T[p][j]
                T[i][j] = -v * T[i][i]
        out = np.empty_like(M)
        for i in range(k):
            for j in range(i + 1):
                v = T[i][i] * T[i][j]
                for p in range(i + 1, k):
                    v += T[p][i] * T[p][j]
                out[i, j] = v
                out[j, i] = v
    return out


def _nonfinite(change: np.ndarray, *new: np.ndarray) -> np.ndarray:
    """Members whose update is not finite. ``change`` (a sum of squared changes, N) is finite for nearly all;
    only where it is not are the new blocks themselves inspected (a huge but finite change is not a
    failure)."""
    bad = ~np.isfinite(change)
    if np.any(bad):
        idx = np.flatnonzero(bad)
        ok = np.ones(idx.size, dtype=bool)
        for X in new:
            ok &= np.isfinite(X[..., idx]).all(axis=tuple(range(X.ndim - 1)))
        bad[idx] = ~ok
    return bad


def _fro2(X: np.ndarray) -> np.ndarray:
    """Squared Frobenius norm of each member of a (r, c, N) stack."""
    return np.einsum("ijn,ijn->n", X, X)


# ----------------------------------------------------------------------------------------------------------
# The notebooks' objective and reconstruction error (batch-first, np.linalg: only evaluated for a few runs)
# ----------------------------------------------------------------------------------------------------------
def notebook_objective(
    sigma_y: np.ndarray,
    gamma: np.ndarray,
    lam: np.ndarray,
    A: np.ndarray,
    B: np.ndarray,
    sigma_z: np.ndarray,
    sigma_w: np.ndarray,
) -> np.ndarray:
    """The notebooks' objective ``KL − γ E log p(y|x) + λ E‖Y − AX‖²``, in their own expression (traces of
    products with ``Σ_Z⁻¹``), batched: sigma_y (N, n, n), A (N, n, m), B (N, m, n), sigma_z (N, n) (diagonal),
    sigma_w (N, m, m), gamma and lam (N,). NaN where a determinant is not positive, as theirs."""
    n, m = A.shape[-2], A.shape[-1]
    Zi = np.zeros(sigma_z.shape + (n,))
    idx = np.arange(n)
    with np.errstate(all="ignore"):
        Zi[:, idx, idx] = 1.0 / sigma_z
        Z = np.zeros_like(Zi)
        Z[:, idx, idx] = sigma_z
        Bt, At = np.swapaxes(B, -1, -2), np.swapaxes(A, -1, -2)
        X = B @ sigma_y @ Bt + sigma_w
        tr = lambda M: np.trace(M, axis1=-2, axis2=-1)  # noqa: E731
        reg = 0.5 * (tr(X) - np.log(np.linalg.det(sigma_w)) - m)
        rec = 0.5 * (
            tr(X)
            + tr(At @ Zi @ sigma_y @ Bt)
            + tr(Zi @ A @ B @ sigma_y)
            - tr(Zi @ sigma_y)
            - tr((np.eye(m) + At @ Zi @ A) @ X)
            - n * np.log(2 * math.pi)
            - np.log(np.linalg.det(Z))
        )
        R = np.eye(n) - A @ B
        lam_term = lam * tr(R @ sigma_y @ np.swapaxes(R, -1, -2) + A @ sigma_w @ At)
        return reg - gamma * rec + lam_term


def reconstruction_error(sigma_y: np.ndarray, A: np.ndarray, sigma_z: np.ndarray) -> np.ndarray:
    """``‖Σ_Y − (A Aᵀ + Σ_Z)‖₂ / ‖Σ_Y‖₂`` (spectral norms), batched: sigma_y (N, n, n), A (N, n, m), sigma_z
    (N, n)."""
    n = A.shape[-2]
    model = A @ np.swapaxes(A, -1, -2) + sigma_z[:, :, None] * np.eye(n)
    with np.errstate(invalid="ignore"):
        return np.linalg.norm(sigma_y - model, 2, axis=(-2, -1)) / np.linalg.norm(sigma_y, 2, axis=(-2, -1))


# ----------------------------------------------------------------------------------------------------------
# The solver
# ----------------------------------------------------------------------------------------------------------
@dataclass
class ProtocolRuns:
    """Final state of every run (batch-first): ``half_steps`` = half-steps done (their ``len(cf_arr)``),
    ``stopped`` = the stopping rule ended it before the cap, ``nonfinite`` = an update stopped being finite
    (the state is the last finite one)."""

    B: np.ndarray
    sigma_w: np.ndarray
    A: np.ndarray
    sigma_z: np.ndarray
    recon_error: np.ndarray
    half_steps: np.ndarray
    stopped: np.ndarray
    nonfinite: np.ndarray


def solve_protocol(
    sigma_y: np.ndarray,
    gamma: np.ndarray,
    lam: np.ndarray,
    B0: np.ndarray,
    W0: np.ndarray,
    *,
    diagonal: bool = False,
    half_steps: int = 10_000,
    tol: float = 1e-8,
    recon_tol: float = 1e-6,
) -> ProtocolRuns:
    """Run the notebooks' alternating solver for N runs at once.

    sigma_y (N, n, n) (a broadcast view is fine), gamma and lam (N,), B0 (N, m, n), W0 (N, m, m) SPD.
    Half-step 0 is a decoder step; the runs that meet the stopping rule leave the batch."""
    N, m, n = B0.shape
    gamma = np.asarray(gamma, dtype=np.float64)
    lam = np.asarray(lam, dtype=np.float64)
    out = ProtocolRuns(
        B=np.array(B0, dtype=np.float64),
        sigma_w=np.array(W0, dtype=np.float64),
        A=np.zeros((N, n, m)),
        sigma_z=np.zeros((N, n)),
        recon_error=np.full(N, np.nan),
        half_steps=np.zeros(N, dtype=np.int64),
        stopped=np.zeros(N, dtype=bool),
        nonfinite=np.zeros(N, dtype=bool),
    )
    if N == 0:
        return out
    to_last = lambda X: np.ascontiguousarray(np.moveaxis(X, 0, -1))  # noqa: E731
    Sy = to_last(np.broadcast_to(sigma_y, (N, n, n)))
    Syi = to_last(np.linalg.inv(np.broadcast_to(sigma_y, (N, n, n))))
    # ‖E‖_F / √n ≤ ‖E‖₂: a run whose ‖E‖_F exceeds this cannot pass recon ≤ recon_tol (no SVD needed)
    recon_bound = (
        recon_tol
        * (1.0 + 1e-9)
        * np.sqrt(n)
        * np.linalg.norm(np.broadcast_to(sigma_y, (N, n, n)), 2, axis=(-2, -1))
    )
    may_fit = np.zeros(N, dtype=bool)
    B, W = to_last(out.B), to_last(out.sigma_w)
    W = 0.5 * (W + _t(W))  # make_spd_matrix is symmetric only to rounding; read the lower triangle alike
    Winv = _spd_inv(W)
    A = np.zeros((n, m, N))
    Z = np.zeros((n, N))
    g, lm = gamma.copy(), lam.copy()
    ids = np.arange(N)
    eye_m = np.eye(m)[:, :, None]
    diag_m, diag_n = np.arange(m), np.arange(n)
    tol2 = tol * tol

    def retire(sel: np.ndarray, steps: int, stopped: bool, nonfinite: bool) -> None:
        k = ids[sel]
        out.B[k] = np.moveaxis(B[..., sel], -1, 0)
        out.sigma_w[k] = np.moveaxis(W[..., sel], -1, 0)
        out.A[k] = np.moveaxis(A[..., sel], -1, 0)
        out.sigma_z[k] = Z[:, sel].T
        out.half_steps[k] = steps
        out.stopped[k] = stopped
        out.nonfinite[k] = nonfinite

    def candidates_stop(sel: np.ndarray, prev: tuple, cur: tuple) -> np.ndarray:
        """For the runs in sel (parameter changes within tol, reconstruction error possibly ≤ recon_tol): the
        exact reconstruction error ≤ recon_tol and the objective change rounding to 0 at 8 decimals.
        prev / cur = (A, B, Z, W) batch-last before / after the half-step."""
        first = lambda X: np.moveaxis(X[..., sel], -1, 0)  # noqa: E731
        rec = reconstruction_error(first(Sy), first(cur[0]), cur[2][:, sel].T)
        ok = rec <= recon_tol
        if np.any(ok):
            sel3 = sel[ok]
            first = lambda X: np.moveaxis(X[..., sel3], -1, 0)  # noqa: E731
            args = lambda st: (first(st[0]), first(st[1]), st[2][:, sel3].T, first(st[3]))  # noqa: E731
            sy3 = first(Sy)
            f_prev = notebook_objective(sy3, g[sel3], lm[sel3], *args(prev))
            f_cur = notebook_objective(sy3, g[sel3], lm[sel3], *args(cur))
            with np.errstate(invalid="ignore"):
                ok[ok] = np.round(f_prev - f_cur, 8) == 0
        return ok

    def compact(keep: np.ndarray) -> None:
        # np.take keeps the batch axis last in memory (x[..., idx] would return it with stride rows·cols,
        # making every later operation strided: measured 3× slower)
        nonlocal Sy, Syi, recon_bound, B, W, Winv, A, Z, g, lm, ids, may_fit
        idx = np.flatnonzero(keep)
        Sy, Syi, B, W, Winv, A, Z = (np.take(X, idx, axis=-1) for X in (Sy, Syi, B, W, Winv, A, Z))
        recon_bound, may_fit, g, lm, ids = (X[idx] for X in (recon_bound, may_fit, g, lm, ids))

    for step in range(half_steps):
        if ids.size == 0:
            break
        if step % 2 == 0:  # decoder half-step
            BtWi = _mm(_t(B), Winv)
            P = _spd_inv(Syi + _mm(BtWi, B))
            A_new = _mm(P, BtWi)  # P Bᵀ Σ_W⁻¹
            Z_new = P[diag_n, diag_n]
            dA, dZ = _fro2(A_new - A), np.einsum("in,in->n", Z_new - Z, Z_new - Z)
            bad = _nonfinite(dA + dZ, A_new, Z_new[None])
            E = Sy - _mm(A_new, _t(A_new))
            E[diag_n, diag_n] -= Z_new
            may_fit = np.sqrt(_fro2(E)) <= recon_bound  # A, Z stay until the next decoder step
            moved = (dA <= tol2) & (dZ <= tol2) if step >= 2 else np.zeros(ids.size, dtype=bool)
            prev = (A, B, Z, W)
            A, Z = A_new, Z_new
        else:  # encoder half-step
            q = g * (1.0 / Z) + 2.0 * lm
            _check_q(q, g, lm, Z, axis=0)
            AtQ = _t(A) * q[None]
            M = eye_m + _mm(AtQ, A)
            Minv = _spd_inv(M)
            B_new = _mm(Minv, _t(A)) * q[None]
            if diagonal:
                W_new = np.zeros_like(M)
                W_new[diag_m, diag_m] = 1.0 / M[diag_m, diag_m]
                Winv_new = np.zeros_like(M)
                Winv_new[diag_m, diag_m] = M[diag_m, diag_m]
            else:
                W_new, Winv_new = Minv, M
            dB, dW = _fro2(B_new - B), _fro2(W_new - W)
            bad = _nonfinite(dB + dW, B_new, W_new)
            moved = (dB <= tol2) & (dW <= tol2)
            prev = (A, B, Z, W)
            B, W, Winv = B_new, W_new, Winv_new
        cand = np.flatnonzero(moved & may_fit & ~bad)
        done = None
        if cand.size:
            done = np.zeros(ids.size, dtype=bool)
            done[cand] = candidates_stop(cand, prev, (A, B, Z, W))
        if np.any(bad):
            # keep the last finite state of those runs (the notebooks would stop on a NaN objective here)
            A_keep, Z_keep, B_keep, W_keep = prev
            A, Z, B, W = A.copy(), Z.copy(), B.copy(), W.copy()
            A[..., bad], Z[:, bad], B[..., bad], W[..., bad] = (
                A_keep[..., bad],
                Z_keep[:, bad],
                B_keep[..., bad],
                W_keep[..., bad],
            )
            retire(bad, step, stopped=False, nonfinite=True)
        if done is not None and np.any(done):
            retire(done, step + 1, stopped=True, nonfinite=False)
        gone = bad if done is None else (bad | done)
        if np.any(gone):
            compact(~gone)
    if ids.size:
        everything = np.ones(ids.size, dtype=bool)
        retire(everything, half_steps, stopped=False, nonfinite=False)
    out.recon_error = reconstruction_error(np.broadcast_to(sigma_y, (N, n, n)), out.A, out.sigma_z)
    return out
