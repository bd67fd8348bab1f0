"""The SPEC §6 loss, its closed-form block updates and the batched alternating solver."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tangentlens.linear_gaussian._common import (
    _T,
    IndefiniteQError,
    _check_int,
    _check_q,
    _chol_logdet,
    _grid,
    _json_array,
    _spd_inverse,
    _sym,
)
from tangentlens.linear_gaussian.scenarios import Scenario

__all__ = [
    "STATUSES",
    "SolveResult",
    "decoder_update",
    "encoder_update",
    "joint_covariance",
    "solve",
    "vae_objective",
]

_LOG_2PI = math.log(2.0 * math.pi)

STATUSES = ("converged", "max_iters", "collapsed", "diverging")
_CONVERGED, _MAX_ITERS, _COLLAPSED, _DIVERGING = range(4)


def _recon_diag(sigma_y: np.ndarray, B: np.ndarray, sigma_w: np.ndarray, A: np.ndarray) -> np.ndarray:
    """diag E[(Y − AX)(Y − AX)ᵀ] = diag[(I − AB)Σ_Y(I − AB)ᵀ + AΣ_WAᵀ]."""
    R = np.eye(sigma_y.shape[-1]) - A @ B
    return np.einsum("...ij,...jk,...ik->...i", R, sigma_y, R) + np.einsum(
        "...ij,...jk,...ik->...i", A, sigma_w, A
    )


def vae_objective(
    sigma_y: Any, gamma: Any, lam: Any, B: Any, sigma_w: Any, A: Any, sigma_z: Any
) -> np.ndarray | float:
    """The loss L of SPEC §6 (with the ``n/2 log 2π`` of −E log p(y|x)), batched over leading dimensions.

    Shapes: sigma_y (..., n, n), B (..., m, n), sigma_w (..., m, m), A (..., n, m), sigma_z (..., n) (the
    diagonal of Σ_Z); gamma and lam broadcast against the batch shape. At γ = 0 the Σ_Z term is dropped (it
    has weight 0).
    """
    Sy, B, W, A = (np.asarray(x, dtype=np.float64) for x in (sigma_y, B, sigma_w, A))
    Z = np.asarray(sigma_z, dtype=np.float64)
    g = np.asarray(gamma, dtype=np.float64)
    lm = np.asarray(lam, dtype=np.float64)
    m, n = B.shape[-2], B.shape[-1]
    kl = 0.5 * (
        np.einsum("...ij,...jk,...ik->...", B, Sy, B)
        + np.trace(W, axis1=-2, axis2=-1)
        - _chol_logdet(W, "sigma_w")
        - m
    )
    e = _recon_diag(Sy, B, W, A)
    with np.errstate(divide="ignore", invalid="ignore"):
        nll = 0.5 * (np.sum(e / Z, -1) + np.sum(np.log(Z), -1) + n * _LOG_2PI)
    out = kl + np.where(g == 0, 0.0, g * nll) + lm * e.sum(-1)
    return float(out) if np.ndim(out) == 0 else out


def decoder_update(sigma_y: Any, B: Any, sigma_w: Any) -> tuple[np.ndarray, np.ndarray]:
    """Exact minimiser over (A, Σ_Z) given the encoder: ``A = Σ_YBᵀ(BΣ_YBᵀ + Σ_W)⁻¹ (= PBᵀΣ_W⁻¹)``,
    ``Σ_Z = diag(P)`` with ``P = (Σ_Y⁻¹ + BᵀΣ_W⁻¹B)⁻¹`` in Joseph form. Returns (A, diag Σ_Z)."""
    Sy, B, W = (np.asarray(x, dtype=np.float64) for x in (sigma_y, B, sigma_w))
    BSy = B @ Sy
    C = _sym(BSy @ _T(B) + W)
    A = _T(np.linalg.solve(C, BSy))  # C symmetric: (C⁻¹BΣ_Y)ᵀ = Σ_YBᵀC⁻¹
    return A, _recon_diag(Sy, B, W, A)


def encoder_update(
    A: Any, sigma_z: Any, gamma: Any, lam: Any, *, diagonal: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Exact minimiser over (B, Σ_W) given the decoder, with ``Q = γΣ_Z⁻¹ + 2λI`` and ``M = I + AᵀQA``:
    ``B = M⁻¹AᵀQ``; ``Σ_W = M⁻¹`` (full) or ``diag(1/diag M)`` (mean-field). Returns (B, Σ_W).

    Raises :class:`IndefiniteQError` (a ``ValueError``) naming γ, λ and the smallest eigenvalue of Q when Q is
    not positive definite (λ < 0 with 2|λ| ≥ γ / Σ_Z,ii): the update is then undefined."""
    A = np.asarray(A, dtype=np.float64)
    Z = np.asarray(sigma_z, dtype=np.float64)
    g = np.asarray(gamma, dtype=np.float64)[..., None]
    lm = np.asarray(lam, dtype=np.float64)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(g == 0, 0.0, g / Z) + 2.0 * lm  # diagonal of Q
    _check_q(q, gamma, lam, Z)
    AtQ = _T(A) * q[..., None, :]
    m = A.shape[-1]
    M = _sym(np.eye(m) + AtQ @ A)
    Minv = _spd_inverse(M)
    B = Minv @ AtQ
    if diagonal:
        W = np.eye(m) / np.diagonal(M, axis1=-2, axis2=-1)[..., None, :]
    else:
        W = Minv
    return B, W


def joint_covariance(scenario: Scenario, B: Any, sigma_w: Any) -> np.ndarray:
    """Covariance of (X, V) for ``X = B(ΓV + N) + W``: [[BΣ_YBᵀ + Σ_W, BΓΣ_V], [Σ_VΓᵀBᵀ, Σ_V]], batched."""
    B = np.asarray(B, dtype=np.float64)
    W = np.asarray(sigma_w, dtype=np.float64)
    Sv = scenario.sigma_v
    xx = _sym(B @ scenario.sigma_y @ _T(B) + W)
    xv = B @ scenario.gamma_matrix @ Sv
    batch = xx.shape[:-2]
    top = np.concatenate([xx, xv], -1)
    bottom = np.concatenate([_T(xv), np.broadcast_to(Sv, batch + Sv.shape)], -1)
    return np.concatenate([top, bottom], -2)


# ----------------------------------------------------------------------------------------------------------
# Batched alternating solver
# ----------------------------------------------------------------------------------------------------------
@dataclass
class _RunOut:
    B: np.ndarray
    W: np.ndarray
    A: np.ndarray
    Z: np.ndarray
    objective: np.ndarray
    status: np.ndarray
    n_iter: np.ndarray
    history: np.ndarray
    history_half: np.ndarray


def _run(
    sigma_y: np.ndarray,
    gamma: np.ndarray,
    lam: np.ndarray,
    B0: np.ndarray,
    W0: np.ndarray,
    *,
    diagonal: bool,
    max_iters: int,
    tol: float,
    param_tol: float,
    sigma_w_floor: float,
    collapse_tol: float,
    record_history: bool,
) -> _RunOut:
    """Flat batch of N problems; finished problems are frozen and dropped from the working set."""
    N, m, n = B0.shape
    B, W = B0.copy(), W0.copy()
    A = np.zeros((N, n, m))
    Z = np.ones((N, n))
    obj = np.full(N, np.nan)
    status = np.full(N, _MAX_ITERS, dtype=np.int64)
    n_iter = np.zeros(N, dtype=np.int64)
    T = max_iters if record_history else 0
    hist = np.full((N, T), np.nan)
    hist_half = np.full((N, T), np.nan)
    active = np.arange(N)
    for t in range(max_iters):
        if active.size == 0:
            break
        Sy, g, lm = sigma_y[active], gamma[active], lam[active]
        with np.errstate(all="ignore"):
            try:
                A1, Z1 = decoder_update(Sy, B[active], W[active])
                f_half = vae_objective(Sy, g, lm, B[active], W[active], A1, Z1)
                B1, W1 = encoder_update(A1, Z1, g, lm, diagonal=diagonal)
                f_new = vae_objective(Sy, g, lm, B1, W1, A1, Z1)
                ok = np.isfinite(f_new) & np.isfinite(f_half)
                ok &= np.all(np.isfinite(B1), axis=(-2, -1)) & np.all(np.isfinite(A1), axis=(-2, -1))
            except IndefiniteQError:
                raise
            except (np.linalg.LinAlgError, ValueError):
                # A numerically singular member: redo one by one to isolate it (rare; only when diverging).
                ok = np.zeros(active.size, dtype=bool)
                A1, Z1, B1, W1 = A[active], Z[active], B[active], W[active]
                f_half = np.full(active.size, np.nan)
                f_new = np.full(active.size, np.nan)
                for r in range(active.size):
                    try:
                        a1, z1 = decoder_update(Sy[r], B[active[r]], W[active[r]])
                        fh = vae_objective(Sy[r], g[r], lm[r], B[active[r]], W[active[r]], a1, z1)
                        b1, w1 = encoder_update(a1, z1, g[r], lm[r], diagonal=diagonal)
                        fn = vae_objective(Sy[r], g[r], lm[r], b1, w1, a1, z1)
                    except IndefiniteQError:
                        raise
                    except (np.linalg.LinAlgError, ValueError):
                        continue
                    A1[r], Z1[r], B1[r], W1[r], f_half[r], f_new[r] = a1, z1, b1, w1, fh, fn
                    ok[r] = np.isfinite(fn) and np.isfinite(fh)
        upd = active[ok]
        # largest change of the encoder, relative to max(1, its size): the objective alone is too flat near an
        # optimum approached slowly (EM-like rates), so both must settle.
        move = np.full(active.size, np.inf)
        scale = np.maximum(1.0, np.abs(B1[ok]).max(axis=(-2, -1)))
        move[ok] = (
            np.maximum(np.abs(B1[ok] - B[upd]).max(axis=(-2, -1)), np.abs(W1[ok] - W[upd]).max(axis=(-2, -1)))
            / scale
        )
        B[upd], W[upd], A[upd], Z[upd] = B1[ok], W1[ok], A1[ok], Z1[ok]
        prev = obj[upd]
        obj[upd] = f_new[ok]
        n_iter[upd] = t + 1
        if record_history:
            hist[upd, t] = f_new[ok]
            hist_half[upd, t] = f_half[ok]
        wmin = np.full(active.size, -np.inf)
        if diagonal:
            wmin[ok] = np.min(np.diagonal(W1[ok], axis1=-2, axis2=-1), -1)
        elif ok.any():
            wmin[ok] = np.linalg.eigvalsh(W1[ok])[..., 0]
        diverging = ~ok | (wmin < sigma_w_floor)
        fn = np.where(ok, f_new, 0.0)
        step = np.full(active.size, np.inf)
        step[ok] = np.abs(np.where(np.isnan(prev), np.inf, prev - fn[ok]))
        converged = ~diverging & (step <= tol * np.maximum(1.0, np.abs(fn))) & (move <= param_tol)
        status[active[diverging]] = _DIVERGING
        status[active[converged]] = _CONVERGED
        active = active[~(diverging | converged)]
    # Collapse: the encoder carries (almost) no signal, tr(BΣ_YBᵀ) ~ 0 (B → 0 is a fixed point).
    signal = np.einsum("...ij,...jk,...ik->...", B, sigma_y, B)
    status[(status != _DIVERGING) & (signal < collapse_tol)] = _COLLAPSED
    return _RunOut(B, W, A, Z, obj, status, n_iter, hist, hist_half)


def _random_init(
    rng: np.random.Generator, shape: tuple[int, ...], m: int, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """B0 with i.i.d. N(0, 1/n) entries and diagonal Σ_W0 with entries U(0.2, 1) (valid for both variants)."""
    B0 = rng.standard_normal(shape + (m, n)) / math.sqrt(n)
    W0 = np.eye(m) * rng.uniform(0.2, 1.0, size=shape + (1, m))
    return B0, W0


def _pca_init(sigma_y: np.ndarray, shape: tuple[int, ...], m: int) -> tuple[np.ndarray, np.ndarray]:
    """B0 = top-m whitened principal directions of Σ_Y (identical for all restarts), Σ_W0 = I/2."""
    evals, evecs = np.linalg.eigh(sigma_y)
    order = np.argsort(evals)[::-1][:m]
    B = (evecs[:, order] / np.sqrt(evals[order])).T
    if B.shape[0] < m:
        raise ValueError(f"init: 'pca' needs m <= n, got m={m}, n={sigma_y.shape[0]}")
    return np.broadcast_to(B, shape + B.shape).copy(), np.broadcast_to(0.5 * np.eye(m), shape + (m, m)).copy()


@dataclass
class SolveResult:
    """Solutions on the grid; arrays are indexed [gamma, lam, restart, ...].

    ``status`` holds one of ``"converged"``, ``"max_iters"``, ``"collapsed"`` (tr(BΣ_YBᵀ) < collapse_tol),
    ``"diverging"`` (min eigenvalue of Σ_W fell below ``sigma_w_floor`` while the objective was still moving,
    or the update stopped being finite; the state is the last finite one). ``recon_error`` is
    ``‖Σ_Y − (AAᵀ + Σ_Z)‖₂/‖Σ_Y‖₂``; ``active_dims`` counts eigenvalues of BΣ_YBᵀ above ``collapse_tol``.
    ``history[..., t]`` is the objective after iteration t (NaN once stopped); ``history_half`` after its
    decoder half-step.
    """

    scenario: Scenario
    gamma: np.ndarray
    lam: np.ndarray
    diagonal: bool
    objective: np.ndarray
    status: np.ndarray
    n_iter: np.ndarray
    recon_error: np.ndarray
    active_dims: np.ndarray
    B: np.ndarray
    sigma_w: np.ndarray
    A: np.ndarray
    sigma_z: np.ndarray
    history: np.ndarray = field(repr=False)
    history_half: np.ndarray = field(repr=False)

    def best_restart(self) -> np.ndarray:
        """(G, L) index of the lowest-objective non-diverging restart (-1 where all diverged)."""
        f = np.where(self.status == "diverging", np.inf, self.objective)
        best = np.argmin(f, axis=-1)
        return np.where(np.isfinite(np.min(f, axis=-1)), best, -1)

    def joint_covariance(self) -> np.ndarray:
        """Cov(X, V) of every solution, shape (G, L, R, m+s, m+s)."""
        return joint_covariance(self.scenario, self.B, self.sigma_w)

    def to_dict(self, *, include_history: bool = False) -> dict[str, Any]:
        out = {
            "scenario": self.scenario.to_dict(),
            "gamma": self.gamma.tolist(),
            "lam": self.lam.tolist(),
            "diagonal": self.diagonal,
            "objective": _json_array(self.objective),
            "status": self.status.tolist(),
            "n_iter": self.n_iter.tolist(),
            "recon_error": _json_array(self.recon_error),
            "active_dims": self.active_dims.tolist(),
            "B": _json_array(self.B),
            "sigma_w": _json_array(self.sigma_w),
            "A": _json_array(self.A),
            "sigma_z": _json_array(self.sigma_z),
        }
        if include_history:
            out["history"] = _json_array(self.history)
        return out


def _check_solver_args(max_iters: int, tol: float, param_tol: float, restarts: int) -> None:
    _check_int(max_iters, "max_iters")
    _check_int(restarts, "restarts")
    for name, value in (("tol", tol), ("param_tol", param_tol)):
        if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0 <= value < 1):
            raise ValueError(f"{name}: expected a relative tolerance in [0, 1), got {value!r}")


def _finish(
    scenario: Scenario,
    out: _RunOut,
    shape: tuple[int, ...],
    collapse_tol: float,
) -> dict[str, np.ndarray]:
    Sy = scenario.sigma_y
    model = out.A @ _T(out.A) + np.eye(scenario.n) * out.Z[:, None, :]
    recon = np.linalg.norm(Sy - model, ord=2, axis=(-2, -1)) / np.linalg.norm(Sy, ord=2)
    sig = np.linalg.eigvalsh(_sym(out.B @ Sy @ _T(out.B)))
    active = np.sum(sig > collapse_tol, axis=-1)
    status = np.array(STATUSES, dtype=object)[out.status].astype(str)
    m, n = scenario.m, scenario.n
    return {
        "objective": out.objective.reshape(shape),
        "status": status.reshape(shape),
        "n_iter": out.n_iter.reshape(shape),
        "recon_error": recon.reshape(shape),
        "active_dims": active.reshape(shape),
        "B": out.B.reshape(shape + (m, n)),
        "sigma_w": out.W.reshape(shape + (m, m)),
        "A": out.A.reshape(shape + (n, m)),
        "sigma_z": out.Z.reshape(shape + (n,)),
        "history": out.history.reshape(shape + (-1,)),
        "history_half": out.history_half.reshape(shape + (-1,)),
    }


def solve(
    scenario: Scenario,
    gamma: float | Sequence[float],
    lam: float | Sequence[float],
    *,
    init: str | tuple[Any, Any] = "random",
    seed: int = 0,
    restarts: int = 4,
    max_iters: int = 5000,
    tol: float = 1e-12,
    param_tol: float = 1e-9,
    diagonal: bool = False,
    sigma_w_floor: float = 1e-9,
    collapse_tol: float = 1e-10,
    record_history: bool = True,
) -> SolveResult:
    """Minimise the SPEC §6 loss by alternating exact updates (decoder, then encoder) on the γ × λ grid.

    Every (γ, λ, restart) is one member of a single batched iteration (stacked ``np.linalg`` calls). ``init``:
    ``"random"`` (seeded by ``seed``, see :func:`_random_init`), ``"pca"``, or an explicit ``(B0, Σ_W0)`` pair
    broadcastable to (G, L, R, m, n) / (G, L, R, m, m) (Σ_W0 must be diagonal when ``diagonal``). Stops a
    member as converged when the relative objective change is ``<= tol`` and the largest change of an entry of
    (B, Σ_W) is ``<= param_tol·max(1, max|B|)``, as diverging when Σ_W degenerates or after ``max_iters``.
    ``diagonal=True`` is the mean-field (diagonal Σ_W) encoder.
    """
    if not isinstance(scenario, Scenario):
        raise ValueError(f"scenario: expected a Scenario, got {type(scenario).__name__}")
    _check_solver_args(max_iters, tol, param_tol, restarts)
    g, lm = _grid(gamma, "gamma"), _grid(lam, "lam", allow_negative=True)
    m, n = scenario.m, scenario.n
    shape = (g.size, lm.size, restarts)
    if isinstance(init, str):
        if init == "random":
            B0, W0 = _random_init(np.random.default_rng(seed), shape, m, n)
        elif init == "pca":
            B0, W0 = _pca_init(scenario.sigma_y, shape, m)
        else:
            raise ValueError(f"init: expected 'random', 'pca' or a (B0, sigma_w0) pair, got {init!r}")
    else:
        try:
            B0 = np.broadcast_to(np.asarray(init[0], dtype=np.float64), shape + (m, n)).copy()
            W0 = np.broadcast_to(np.asarray(init[1], dtype=np.float64), shape + (m, m)).copy()
        except (ValueError, TypeError, IndexError):
            raise ValueError(
                f"init: expected (B0, sigma_w0) broadcastable to {shape + (m, n)} and {shape + (m, m)}"
            ) from None
        _chol_logdet(W0, "init sigma_w0")
        if diagonal and np.any(W0 * (1 - np.eye(m)) != 0):
            raise ValueError("init: expected a diagonal sigma_w0 for the mean-field (diagonal=True) solver")
    N = int(np.prod(shape))
    out = _run(
        np.broadcast_to(scenario.sigma_y, (N, n, n)),
        np.broadcast_to(g[:, None, None], shape).reshape(N),
        np.broadcast_to(lm[None, :, None], shape).reshape(N),
        B0.reshape(N, m, n),
        W0.reshape(N, m, m),
        diagonal=diagonal,
        max_iters=max_iters,
        tol=tol,
        param_tol=param_tol,
        sigma_w_floor=sigma_w_floor,
        collapse_tol=collapse_tol,
        record_history=record_history,
    )
    return SolveResult(
        scenario=scenario, gamma=g, lam=lm, diagonal=diagonal, **_finish(scenario, out, shape, collapse_tol)
    )
