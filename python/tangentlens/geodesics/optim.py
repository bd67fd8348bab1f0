"""Minimisers of the discrete curve energy ``E = (n - 1) Σ_i |e_{i+1} - e_i|²`` over the interior points,
batched over pairs and points, each pair on its own (its steps, line search, memory and stopping rule
depend on that pair only, so a pair's result does not depend on the others in the batch).

* ``lbfgs``: limited-memory BFGS on the exact gradient ``∂E/∂c_j = 2 (n - 1) J_jᵀ (2 e_j - e_{j-1} -
  e_{j+1})`` (one forward and one reverse pass through G and φ for all points), with the discrete
  Laplacian of the path (``tridiag(-1, 2, -1)`` over the points) as the initial inverse Hessian: the
  energy's Hessian is ``2 (n - 1) (L ⊗ M)`` for a constant metric, so this removes the O(n²) conditioning
  that the path's discretisation adds, and the quasi-Newton memory learns the metric. The first step's
  length is the exact minimiser of the Gauss-Newton model along the direction, from one JVP per point
  (``pᵀHp = 2 (n - 1) Σ_i |J_{i+1} p_{i+1} - J_i p_i|²``); then Armijo backtracking.
* ``gauss-newton``: for a squared embedding distance the Gauss-Newton Hessian of E is exactly
  block-tridiagonal: ``H_jj = 4 (n - 1) J_jᵀJ_j``, ``H_j,j+1 = -2 (n - 1) J_jᵀJ_{j+1}`` (d×d blocks).
  Each iteration computes the Jacobians at all points (d JVPs per point, one stacked pass), the gradient
  from them (no reverse pass), factorises the blocks (block Cholesky, O(n d³)) and takes a
  Levenberg-Marquardt step (damping adapted from the ratio of actual to predicted decrease). It converges
  in a few iterations on smooth decoders with a small d; where the Jacobian jumps between ReLU regions (the
  demo VAE) its model holds only in a small trust region and L-BFGS is faster (docs/geodesics.md).

A pair stops when its last accepted step lowered E by at most ``tol · E`` and the model's predicted
further decrease (``-½ gᵀp`` for the next direction p) is at most ``tol · E`` too (``converged``), when no
step lowers E any more (``stalled``: the energy is at its rounding level), or after ``max_iters``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tangentlens._operator import _Operator
from tangentlens.geodesics.curves import Shell, energy, segments
from tangentlens.jvp import _precision

__all__ = ["CONVERGED", "MAX_ITERS", "STALLED", "STATUS_NAMES", "Problem", "Solution"]

CONVERGED, MAX_ITERS, STALLED = 0, 1, 2
STATUS_NAMES = {CONVERGED: "converged", MAX_ITERS: "max_iters", STALLED: "stalled"}
ARMIJO = 1e-4
MAX_BACKTRACKS = 30
# a predicted decrease below this fraction of E is rounding (float64 sums of float32 or float64 terms)
ROUNDING = 1e-13
# The Jacobian blocks of one pass of the Gauss-Newton method stay below this many bytes (points are
# split into passes; one pair's m x d x D block must fit).
GN_BYTES = 1 << 30


@dataclass
class Solution:
    """Final parameters (interior points) [b, m, d] float64, energies and segments, per-pair
    iterations and status, and the number of points passed through F (forward or with derivatives)."""

    params: torch.Tensor
    energy: torch.Tensor
    segments: torch.Tensor
    iterations: torch.Tensor
    status: torch.Tensor
    evaluations: int


class Problem:
    """The energy of B curves of n points through the operator's F, endpoints' embeddings fixed."""

    def __init__(
        self, op: _Operator, x0: torch.Tensor, x1: torch.Tensor, n: int, shell: Shell, first_index: int = 0
    ) -> None:
        self.op, self.n, self.shell, self.first_index = op, n, shell, first_index
        self.dtype, self.device = x0.dtype, x0.device
        with torch.no_grad(), _precision(op.precision, x0.device):  # type: ignore[arg-type]
            e = op.F(torch.cat([x0, x1]))
        self.e0, self.e1 = e.chunk(2)
        self.evaluations = 2 * x0.shape[0]

    def subset(self, idx: torch.Tensor) -> Problem:
        sub = Problem.__new__(Problem)
        sub.op, sub.n, sub.shell, sub.first_index = self.op, self.n, self.shell.subset(idx), self.first_index
        sub.dtype, sub.device = self.dtype, self.device
        sub.e0, sub.e1, sub.evaluations = self.e0[idx], self.e1[idx], 0
        return sub

    def refined(self) -> Problem:
        sub = Problem.__new__(Problem)
        sub.op, sub.n, sub.shell = self.op, 2 * self.n - 1, self.shell.refined()
        sub.first_index = self.first_index
        sub.dtype, sub.device = self.dtype, self.device
        sub.e0, sub.e1, sub.evaluations = self.e0, self.e1, 0
        return sub

    def embed_points(self, c: torch.Tensor) -> torch.Tensor:
        """F at interior points c [b, m, d] -> [b, m, D] (no autograd)."""
        b, m, d = c.shape
        self.evaluations += b * m
        with torch.no_grad(), _precision(self.op.precision, self.device):  # type: ignore[arg-type]
            return self.op.F(c.reshape(b * m, d).to(self.dtype)).reshape(b, m, -1)

    def full(self, idx: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Embeddings of the whole curves [b, n, D] (endpoints added)."""
        return torch.cat([self.e0[idx, None], emb, self.e1[idx, None]], dim=1)

    def evaluate(
        self, idx: torch.Tensor, u: torch.Tensor, grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Energies [b], segments [b, n - 1] (float64) and, with ``grad``, ∂E/∂u [b, m, d] (float64) of the
        pairs ``idx`` at parameters u [b, m, d]: one forward (and reverse) pass over all their points."""
        b, m, d = u.shape
        shell = self.shell.subset(idx)
        self.evaluations += b * m
        ut = u.detach().to(self.dtype).requires_grad_(grad)
        with torch.set_grad_enabled(grad), _precision(self.op.precision, self.device):  # type: ignore[arg-type]
            c = shell.points(ut)
            emb = self.op.F(c.reshape(b * m, d)).reshape(b, m, -1)
            seg = segments(self.full(idx, emb))
            E = energy(seg)
            g = torch.autograd.grad(E.sum(), ut)[0].double() if grad else None
        if g is not None:
            self._check_gradient(idx, E, g)
        return E.detach(), seg.detach(), g

    def _check_gradient(self, idx: torch.Tensor, E: torch.Tensor, g: torch.Tensor) -> None:
        """A finite energy with a NaN / inf gradient would stall the optimiser on its starting path (a
        wrong length presented as a result): refused, naming the pairs."""
        bad = torch.isfinite(E) & ~torch.isfinite(g.flatten(1)).all(1)
        if bool(bad.any()):
            pairs = (idx[bad] + self.first_index).tolist()[:20]
            raise FloatingPointError(
                f"geodesic: NaN or inf in the energy's gradient at pairs {pairs} while the energy is finite "
                "(the derivative of the generator or the distance is not finite somewhere on the path, e.g. "
                "sqrt or log at 0, or it overflowed)"
            )

    def curvature(self, idx: torch.Tensor, u: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """The Gauss-Newton curvature ``pᵀ H p = 2 (n - 1) Σ_i |J_{i+1} p_{i+1} - J_i p_i|²`` [b] along
        directions p [b, m, d] in parameter space (one JVP per point)."""
        b, m, d = u.shape
        shell = self.shell.subset(idx)
        c = shell.points(u)
        basis = shell.tangent_basis(u)
        pc = p if basis is None else (basis @ p.unsqueeze(-1)).squeeze(-1)
        if shell.radii is not None:
            pc = pc * (shell.radii[:, 1:-1, None] / u.norm(dim=-1, keepdim=True))
        self.evaluations += b * m
        Jp = self.op.jv(c.reshape(b * m, d).to(self.dtype), pc.reshape(b * m, 1, d).to(self.dtype))
        Jp = Jp.reshape(b, m, -1).double()
        zero = Jp.new_zeros(b, 1, Jp.shape[-1])
        diff = torch.cat([Jp, zero], 1) - torch.cat([zero, Jp], 1)
        return 2 * (self.n - 1) * diff.square().sum((1, 2))


# ---- shared pieces ---------------------------------------------------------------------------------------


def _laplacian_solve(q: torch.Tensor) -> torch.Tensor:
    """``(L ⊗ I)⁻¹ q`` for q [b, m, d], L = tridiag(-1, 2, -1) (m×m), float64: one matmul with the closed
    form ``(L⁻¹)_ij = min(i, j) (m + 1 - max(i, j)) / (m + 1)`` (1-based)."""
    m = q.shape[1]
    i = torch.arange(1, m + 1, dtype=q.dtype, device=q.device)
    inv = torch.minimum(i[:, None], i[None]) * (m + 1 - torch.maximum(i[:, None], i[None])) / (m + 1)
    return torch.einsum("ij,bjd->bid", inv, q)


def _project(shell: Shell, u: torch.Tensor) -> torch.Tensor:
    return shell.project(shell.points(u)) if shell.radii is not None else u


def _done(dec: torch.Tensor, gap: torch.Tensor, E: torch.Tensor, tol: float) -> torch.Tensor:
    """Converged: the last step's decrease and the predicted remaining decrease both at most tol · E, or
    the predicted decrease at the rounding level of E (nothing left that a step could show)."""
    scale = tol * E.abs()
    return (gap <= scale) & ((dec <= scale) | (gap <= ROUNDING * E.abs()))


# ---- L-BFGS ----------------------------------------------------------------------------------------------


class _History:
    """Per-pair ring buffers of the last ``memory`` curvature pairs (s, y) of the flattened parameters."""

    def __init__(self, b: int, size: int, memory: int, like: torch.Tensor) -> None:
        self.S = like.new_zeros(b, memory, size)
        self.Y = like.new_zeros(b, memory, size)
        self.rho = like.new_zeros(b, memory)
        self.count = torch.zeros(b, dtype=torch.long, device=like.device)
        self.memory = memory

    def push(self, rows: torch.Tensor, s: torch.Tensor, y: torch.Tensor) -> None:
        """Add (s, y) [r, size] for pairs ``rows`` where sᵀy > 0 (the inverse Hessian stays positive)."""
        sy = (s * y).sum(1)
        ok = sy > 1e-10 * s.norm(dim=1) * y.norm(dim=1)
        rows, s, y, sy = rows[ok], s[ok], y[ok], sy[ok]
        pos = self.count[rows] % self.memory
        self.S[rows, pos], self.Y[rows, pos], self.rho[rows, pos] = s, y, 1 / sy
        self.count[rows] += 1

    def direction(self, rows: torch.Tensor, g: torch.Tensor, m: int, laplacian: bool) -> torch.Tensor:
        """``-H g`` [r, size] for pairs ``rows`` by the two-loop recursion, with H0 = γ (L ⊗ I)⁻¹ (or γ I)
        and γ = sᵀy / yᵀ(H0/γ)y of the pair's newest curvature pair."""
        r_ = rows.numel()

        def h0(v: torch.Tensor) -> torch.Tensor:
            return _laplacian_solve(v.reshape(r_, m, -1)).reshape(r_, -1) if laplacian else v

        count = self.count[rows]
        n_hist = count.clamp(max=self.memory)
        q = g.clone()
        alphas = []
        for j in range(self.memory):
            pos = (count - 1 - j) % self.memory
            valid = (j < n_hist).double()
            s, y, rho = self.S[rows, pos], self.Y[rows, pos], self.rho[rows, pos]
            a = valid * rho * (s * q).sum(1)
            q = q - a[:, None] * y
            alphas.append((a, pos, valid))
        r = h0(q)
        newest = (count - 1) % self.memory
        s, y = self.S[rows, newest], self.Y[rows, newest]
        gamma = (s * y).sum(1) / (y * h0(y)).sum(1).clamp_min(1e-300)
        r = torch.where((n_hist > 0)[:, None], gamma[:, None] * r, r)
        for a, pos, valid in reversed(alphas):
            s, y, rho = self.S[rows, pos], self.Y[rows, pos], self.rho[rows, pos]
            beta = rho * (y * r).sum(1)
            r = r + (valid * (a - beta))[:, None] * s
        return -r


def lbfgs(
    prob: Problem,
    u0: torch.Tensor,
    *,
    tol: float,
    max_iters: int,
    memory: int = 10,
    laplacian: bool = True,
    target: torch.Tensor | None = None,
) -> Solution:
    """L-BFGS on all pairs of ``prob`` from parameters u0 [B, m, d] (module docstring). ``target`` [B]: a
    pair also stops (as converged) once its energy is at most its target (the bench's time-to-energy)."""
    B, m, d = u0.shape
    dev = u0.device
    u = _project(prob.shell, u0.double())
    E, seg, g = prob.evaluate(torch.arange(B, device=dev), u, grad=True)
    assert g is not None
    hist = _History(B, m * d, memory, u)
    its = torch.zeros(B, dtype=torch.long, device=dev)
    status = torch.full((B,), MAX_ITERS, dtype=torch.int8, device=dev)
    active = torch.ones(B, dtype=torch.bool, device=dev)
    dec = torch.full((B,), math.inf, dtype=torch.float64, device=dev)
    for it in range(max_iters + 1):
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        gi = g[idx].reshape(idx.numel(), -1)
        p = hist.direction(idx, gi, m, laplacian)
        slope = (gi * p).sum(1)
        bad = slope >= 0  # not a descent direction: forget the curvature pairs
        if bad.any():
            hist.count[idx[bad]] = 0
            p[bad] = -(_laplacian_solve(gi[bad].reshape(-1, m, d)).reshape(int(bad.sum()), -1))
            slope = (gi * p).sum(1)
        done = _done(dec[idx], -0.5 * slope, E[idx], tol)
        if target is not None:
            done |= E[idx] <= target[idx]
        status[idx[done]] = CONVERGED
        active[idx[done]] = False
        if it == max_iters:
            break
        idx, p, slope = idx[~done], p[~done], slope[~done]
        if idx.numel() == 0:
            break
        # step length: 1 once curvature pairs exist, else the Gauss-Newton minimiser along p
        alpha = torch.ones(idx.numel(), dtype=torch.float64, device=dev)
        fresh = hist.count[idx] == 0
        if fresh.any():
            fi = idx[fresh]
            curv = prob.curvature(fi, u[fi], p[fresh].reshape(-1, m, d))
            alpha[fresh] = torch.where(curv > 0, -slope[fresh] / curv.clamp_min(1e-300), 1.0)
        new_u, new_E, new_seg, new_g, ok = _backtrack(prob, idx, u, E, p.reshape(-1, m, d), slope, alpha)
        its[idx] += 1
        status[idx[~ok]] = STALLED
        active[idx[~ok]] = False
        acc = idx[ok]
        if acc.numel():
            s = (new_u[ok] - u[acc]).reshape(acc.numel(), -1)
            y = (new_g[ok] - g[acc]).reshape(acc.numel(), -1)
            hist.push(acc, s, y)
            dec[acc] = E[acc] - new_E[ok]
            u[acc], E[acc], seg[acc], g[acc] = new_u[ok], new_E[ok], new_seg[ok], new_g[ok]
    return Solution(u, E, seg, its, status, prob.evaluations)


def _backtrack(
    prob: Problem,
    idx: torch.Tensor,
    u: torch.Tensor,
    E: torch.Tensor,
    p: torch.Tensor,
    slope: torch.Tensor,
    alpha: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Armijo backtracking per pair (quadratic interpolation, clamped to [0.1, 0.5] of the step), energy
    and gradient evaluated together at each trial (the first trial is accepted almost always)."""
    b = idx.numel()
    out_u, out_E = u[idx].clone(), E[idx].clone()
    out_seg = p.new_zeros(b, prob.n - 1)
    out_g = torch.zeros_like(p)
    ok = torch.zeros(b, dtype=torch.bool, device=u.device)
    pending = torch.ones(b, dtype=torch.bool, device=u.device)
    shell = prob.shell.subset(idx)
    for _ in range(MAX_BACKTRACKS):
        k = pending.nonzero().squeeze(1)
        if k.numel() == 0:
            break
        trial = u[idx[k]] + alpha[k, None, None] * p[k]
        trial = _project(shell.subset(k), trial)
        Et, st, gt = prob.evaluate(idx[k], trial, grad=True)
        assert gt is not None
        accept = torch.isfinite(Et) & (Et <= E[idx[k]] + ARMIJO * alpha[k] * slope[k])
        a = k[accept]
        out_u[a], out_E[a], out_seg[a], out_g[a] = trial[accept], Et[accept], st[accept], gt[accept]
        ok[a] = True
        pending[a] = False
        r = k[~accept]
        if r.numel():
            al, sl = alpha[r], slope[r]
            diff = Et[~accept] - E[idx[r]] - al * sl
            quad = torch.where(
                torch.isfinite(diff) & (diff > 0), -sl * al.square() / (2 * diff.clamp_min(1e-300)), 0.5 * al
            )
            alpha[r] = torch.minimum(torch.maximum(quad, 0.1 * al), 0.5 * al)
    return out_u, out_E, out_seg, out_g, ok


# ---- Gauss-Newton ----------------------------------------------------------------------------------------


def _jacobian_passes(prob: Problem, m: int, d: int) -> int:
    """Pairs per Jacobian pass so that the m x d x D blocks (in the points' dtype and in float64) stay
    below GN_BYTES."""
    D = prob.e0.shape[1]
    per_pair = m * d * D * (prob.e0.element_size() + 8)
    return max(1, GN_BYTES // max(per_pair, 1))


def _gn_system(
    prob: Problem, idx: torch.Tensor, u: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """At parameters u [b, m, d] of pairs idx: energies [b], segments, the gradient [b, m, d] and the
    Gauss-Newton blocks (diagonal [b, m, d, d], upper [b, m - 1, d, d]) in parameter space, float64, from
    the Jacobians at all points (d JVPs per point; the gradient ``2 (n - 1) J_jᵀ (r_{j-1} - r_j)`` from
    them, no reverse pass)."""
    b, m, d = u.shape
    n = prob.n
    shell = prob.shell.subset(idx)
    c = shell.points(u).to(prob.dtype)
    eye = torch.eye(d, dtype=prob.dtype, device=u.device)
    step = _jacobian_passes(prob, m, d)
    parts: list[tuple[torch.Tensor, ...]] = []
    for s in range(0, b, step):
        cs = c[s : s + step]
        bs = cs.shape[0]
        prob.evaluations += bs * m * (1 + d)
        e, J = prob.op.value_and_jv(cs.reshape(bs * m, d), eye.expand(bs * m, d, d))
        full = prob.full(idx[s : s + step], e.reshape(bs, m, -1))
        seg = segments(full)
        r = (full[:, 1:] - full[:, :-1]).double()  # residuals [bs, n - 1, D]
        Jd = J.reshape(bs, m, d, -1).double()
        g = 2 * (n - 1) * torch.einsum("bmkD,bmD->bmk", Jd, r[:, :-1] - r[:, 1:])
        A = 4 * (n - 1) * (Jd @ Jd.transpose(-1, -2))
        Up = -2 * (n - 1) * (Jd[:, :-1] @ Jd[:, 1:].transpose(-1, -2))
        parts.append((energy(seg), seg, g, A, Up))
    E, seg, g, A, Up = (torch.cat(t) for t in zip(*parts, strict=True))
    basis = shell.tangent_basis(u)
    if basis is not None:  # parameters on their spheres (|u| = ρ): dc/du = I - û ûᵀ
        g = (basis @ g.unsqueeze(-1)).squeeze(-1)
        A = basis @ A @ basis
        Up = basis[:, :-1] @ Up @ basis[:, 1:]
        # the radial direction leaves c unchanged: give it unit curvature (its gradient is 0, so is its step)
        scale = torch.diagonal(A, dim1=-2, dim2=-1).mean((-1, -2)).clamp_min(1e-300)
        A = A + scale[:, None, None, None] * (torch.eye(d, dtype=A.dtype, device=A.device) - basis)
    prob._check_gradient(idx, E, g)
    return E, seg, g, A, Up


def _block_solve(A: torch.Tensor, Up: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor | None:
    """Solve the symmetric block-tridiagonal system (diagonal A [b, m, d, d], upper Up [b, m-1, d, d]) for
    rhs [b, m, d] by block Cholesky elimination; None where a pivot block is not positive definite."""
    b, m, d = rhs.shape
    L: list[torch.Tensor] = []
    y: list[torch.Tensor] = []
    W: list[torch.Tensor] = []  # S_j⁻¹ Up_j
    S = A[:, 0]
    v = rhs[:, 0]
    for j in range(m):
        Lj, info = torch.linalg.cholesky_ex(S)
        if bool((info != 0).any()):
            return None
        L.append(Lj)
        yj = torch.cholesky_solve(v.unsqueeze(-1), Lj).squeeze(-1)  # S_j⁻¹ v_j
        y.append(yj)
        if j < m - 1:
            Wj = torch.cholesky_solve(Up[:, j], Lj)
            W.append(Wj)
            S = A[:, j + 1] - Up[:, j].transpose(-1, -2) @ Wj
            v = rhs[:, j + 1] - (Up[:, j].transpose(-1, -2) @ yj.unsqueeze(-1)).squeeze(-1)
    x = [torch.empty(0)] * m
    x[m - 1] = y[m - 1]
    for j in range(m - 2, -1, -1):
        x[j] = y[j] - (W[j] @ x[j + 1].unsqueeze(-1)).squeeze(-1)
    return torch.stack(x, dim=1)


def _quad(A: torch.Tensor, Up: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """pᵀ H p [b] for the block-tridiagonal H."""
    diag = torch.einsum("bmi,bmij,bmj->b", p, A, p)
    off = torch.einsum("bmi,bmij,bmj->b", p[:, :-1], Up, p[:, 1:]) if p.shape[1] > 1 else 0.0
    return diag + 2 * off


def gauss_newton(prob: Problem, u0: torch.Tensor, *, tol: float, max_iters: int) -> Solution:
    """Levenberg-Marquardt on the exact block-tridiagonal Gauss-Newton system (module docstring)."""
    B, m, d = u0.shape
    u = _project(prob.shell, u0.double())
    its = torch.zeros(B, dtype=torch.long, device=u.device)
    status = torch.full((B,), MAX_ITERS, dtype=torch.int8, device=u.device)
    active = torch.ones(B, dtype=torch.bool, device=u.device)
    lam = torch.full((B,), 1e-6, dtype=torch.float64, device=u.device)
    E = torch.empty(B, dtype=torch.float64, device=u.device)
    seg = torch.empty(B, prob.n - 1, dtype=torch.float64, device=u.device)
    dec = torch.full((B,), math.inf, dtype=torch.float64, device=u.device)
    for it in range(max_iters + 1):
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        Ei, si, g, A, Up = _gn_system(prob, idx, u[idx])
        E[idx], seg[idx] = Ei, si
        if it == max_iters:
            break
        eye = torch.eye(d, dtype=A.dtype, device=A.device)
        level = torch.diagonal(A, dim1=-2, dim2=-1).mean((-1, -2)).clamp_min(1e-300)
        # the undamped model's decrease estimates the distance to the minimum
        p0 = _solve_damped(A, Up, g, level * 1e-12, eye)
        gap = torch.where(torch.isfinite(p0).all(-1).all(-1), -0.5 * (g * p0).sum((1, 2)), math.inf)
        done = _done(dec[idx], gap, Ei, tol)
        status[idx[done]] = CONVERGED
        active[idx[done]] = False
        keep = ~done
        idx, g, A, Up, Ei, level = idx[keep], g[keep], A[keep], Up[keep], Ei[keep], level[keep]
        pending = torch.ones(idx.numel(), dtype=torch.bool, device=u.device)
        its[idx] += 1
        for _ in range(MAX_BACKTRACKS):
            k = pending.nonzero().squeeze(1)
            if k.numel() == 0:
                break
            kk = idx[k]
            p = _solve_damped(A[k], Up[k], g[k], lam[kk] * level[k], eye)
            pred = -((g[k] * p).sum((1, 2)) + 0.5 * _quad(A[k], Up[k], p))
            trial = _project(prob.shell.subset(kk), u[kk] + p)
            Et = energy(segments(prob.full(kk, prob.embed_points(prob.shell.subset(kk).points(trial)))))
            actual = Ei[k] - Et
            ratio = actual / pred.clamp_min(1e-300)
            accept = torch.isfinite(Et) & (actual > 0)
            a = kk[accept]
            u[a], dec[a] = trial[accept], actual[accept]
            lam[a] = torch.where(
                ratio[accept] > 0.75, lam[a] / 3, torch.where(ratio[accept] < 0.25, lam[a] * 2, lam[a])
            )
            lam[a] = lam[a].clamp_min(1e-12)
            pending[k[accept]] = False
            lam[kk[~accept]] = torch.maximum(lam[kk[~accept]] * 4, torch.full_like(lam[kk[~accept]], 1e-6))
        stalled = idx[pending]
        status[stalled] = STALLED
        active[stalled] = False
    # energies and segments at the final parameters of the pairs that stopped on max_iters were computed
    # in the last pass; the others at the iteration that stopped them
    return Solution(u, E, seg, its, status, prob.evaluations)


def _solve_damped(
    A: torch.Tensor, Up: torch.Tensor, g: torch.Tensor, damping: torch.Tensor, eye: torch.Tensor
) -> torch.Tensor:
    """-(H + damping I)⁻¹ g, the damping raised tenfold where a pivot is not positive definite."""
    damp = damping.clone()
    for _ in range(20):
        p = _block_solve(A + damp[:, None, None, None] * eye, Up, -g)
        if p is not None:
            return p
        damp = torch.where(damp > 0, damp * 10, torch.full_like(damp, 1e-12))
    return torch.full_like(g, math.nan)
