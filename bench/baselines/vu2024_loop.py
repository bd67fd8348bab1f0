"""The Vu–Wei–Wan protocol as a plain per-run loop: one (γ, λ, restart) at a time, ``np.linalg.inv`` on the
3×3..5×5 matrices and the notebooks' objective evaluated after every half-step (for their NaN stop and their
stopping rule), exactly as their notebooks iterate. The baseline of ``bench/cases/linear_gaussian.py``; the
same arithmetic as the notebooks (bitwise equal to them on their initialisations), so it is also the reference
the batched solver is checked against there.

Also the notebooks' way of drawing Σ_V and the initialisations for one seed: every sample with
``RandomState.normal``, ``np.round(np.cov(V), 4)``, scikit-learn's ``make_spd_matrix`` three times per run.
"""

from __future__ import annotations

import math

import numpy as np


def objective(Sy, gamma, lam, A, B, Z, W):
    """The notebooks' objective (Z, W full matrices)."""
    inv = np.linalg.inv
    m, n = B.shape
    Zi = inv(Z)
    X = B @ Sy @ B.T + W
    reg = 0.5 * (np.trace(X) - np.log(np.linalg.det(W)) - m)
    rec = 0.5 * (
        np.trace(X)
        + np.trace(A.T @ Zi @ Sy @ B.T)
        + np.trace(Zi @ A @ B @ Sy)
        - np.trace(Zi @ Sy)
        - np.trace((np.identity(m) + A.T @ Zi @ A) @ X)
        - n * np.log(2 * math.pi)
        - np.log(np.linalg.det(Z))
    )
    R = np.identity(n) - A @ B
    return reg - gamma * rec + lam * np.trace(R @ Sy @ R.T + A @ W @ A.T)


def run(Sy, gamma, lam, B, W, *, diagonal=False, half_steps=10_000, tol=1e-8):
    """One run from (B, W); returns (A, B, diag Σ_Z, Σ_W, reconstruction error, half-steps done)."""
    inv = np.linalg.inv
    fro = lambda X: np.linalg.norm(X, "fro")  # noqa: E731
    m, n = B.shape
    A = Z = None
    prev = recon = np.nan
    done = half_steps
    for i in range(half_steps):
        if i % 2 == 0:
            Wi = inv(W)
            P = inv(inv(Sy) + B.T @ Wi @ B)
            A1 = P @ B.T @ Wi
            Z1 = np.diag(P.diagonal())
            f = objective(Sy, gamma, lam, A1, B, Z1, W)
            if np.isnan(f):
                done = i
                break
            recon = np.linalg.norm(Sy - (A1 @ A1.T + Z1), 2) / np.linalg.norm(Sy, 2)
            stop = i > 0 and fro(A1 - A) <= tol and fro(Z1 - Z) <= tol
            A, Z = A1, Z1
        else:
            Q = gamma * inv(Z) + 2 * lam * np.identity(n)
            M = np.identity(m) + A.T @ Q @ A
            B1 = inv(M) @ A.T @ Q
            W1 = np.diag(1.0 / np.diag(M)) if diagonal else inv(M)
            f = objective(Sy, gamma, lam, A, B1, Z, W1)
            if np.isnan(f):
                done = i
                break
            stop = fro(B1 - B) <= tol and fro(W1 - W) <= tol
            B, W = B1, W1
        stop = stop and round(prev - f, 8) == 0 and recon <= 1e-6
        prev = f
        if stop:
            return A, B, np.diag(Z), W, recon, i + 1
    return A, B, np.diag(Z), W, recon, done


def draws(cfg, seed, size=10_000_000):
    """Σ_V of the three scenarios and the initialisations (B0, W0) of one seed, the notebooks' way."""
    from sklearn.datasets import make_spd_matrix

    rs = np.random.RandomState(seed)
    sigma = []
    for k in range(3):
        V = {j: rs.normal(0.0, sd, size) for j, sd in cfg.draw_order(k)}
        for child, parent, coef in cfg.edges(k):
            V[child] = coef * V[parent] + V[child]
        sigma.append(np.round(np.cov(np.array([V[j] for j in range(cfg.s)])), 4))
        del V
    B0, W0 = [], []
    for _ in range(25 * cfg.runs):
        for _ in range(3):
            B, W = rs.rand(cfg.m, cfg.n), make_spd_matrix(cfg.m, random_state=rs)
        B0.append(B)
        W0.append(W)
    return np.stack(sigma), np.stack(B0), np.stack(W0)
