"""stochman's ``EmbeddedManifold.connecting_geodesic`` (stochman 0.3.0), written for the bench from its
published description, on the same decoders and distance as tangentlens:

the curve is the straight line from p0 to p1 plus a piecewise-cubic spline with ``num_nodes`` equally spaced
nodes (5: four cubic pieces), continuous with a continuous first derivative, that vanishes at both ends,
parametrised in stochman's basis (:func:`spline_basis`), its coefficients zero at the start;
the loss is the mean over the batch of the embedded curve energy ``(N - 1) Σ |e(c(t_{i+1})) - e(c(t_i))|²`` at
``N = 20`` points ``t = linspace(0, 1, N)``; Adam with lr 0.1 takes at most 150 steps and stops once every
gradient entry is below 1e-4.

``check`` in bench/cases/geodesics.py runs this on the inputs of tests/fixtures/stochman (made by stochman
itself) and compares the final energies.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def spline_basis(num_nodes: int, dtype: torch.dtype) -> torch.Tensor:
    """[4 (num_nodes - 1), k]: stochman's basis of the spline coefficients (c0 + c1 t + c2 t² + c3 t³ per
    piece, in the global t): the trailing right singular vectors (one per column beyond the number of
    constraints) of its constraint matrix, whose rows are, in this order: the value at t = 0 and at t = 1,
    then at each interior knot the jump of the value, of the first derivative, and a third row that
    stochman writes as ``[0, 0, 6 t, 2]`` per piece (not the second derivative ``[0, 0, 2, 6 t]``: this
    reproduces stochman's curve family as it is, and Adam is not invariant to the choice of basis)."""
    pieces = num_nodes - 1
    knots = torch.linspace(0, 1, num_nodes, dtype=dtype)[1:-1].tolist()
    rows = [torch.zeros(4 * pieces, dtype=dtype), torch.zeros(4 * pieces, dtype=dtype)]
    rows[0][0] = 1.0
    rows[1][-4:] = 1.0
    for fill in (
        lambda t: [1.0, t, t * t, t**3],
        lambda t: [0.0, 1.0, 2.0 * t, 3.0 * t * t],
        lambda t: [0.0, 0.0, 6.0 * t, 2.0],
    ):
        for i, t in enumerate(knots):
            row = torch.zeros(4 * pieces, dtype=dtype)
            row[4 * i : 4 * i + 4] = torch.tensor(fill(t), dtype=dtype)
            row[4 * i + 4 : 4 * i + 8] = -torch.tensor(fill(t), dtype=dtype)
            rows.append(row)
    C = torch.stack(rows)
    _, s, V = torch.svd(C, some=False)
    return V[:, s.numel() :]


def curve_points(
    p0: torch.Tensor, p1: torch.Tensor, params: torch.Tensor, basis: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """Points [B, N, d] of the curves (straight line + spline with coefficients basis @ params [B, k, d])."""
    B, _, d = params.shape
    pieces = basis.shape[0] // 4
    coeffs = (basis @ params).reshape(B, pieces, 4, d)
    idx = (t * pieces).floor().clamp(0, pieces - 1).long()
    tp = t[:, None] ** torch.arange(4, dtype=t.dtype)  # [N, 4]
    spline = torch.einsum("nk,bnkd->bnd", tp, coeffs[:, idx])
    return p0[:, None] + t[None, :, None] * (p1 - p0)[:, None] + spline


def connecting_geodesic(
    embed: Callable[[torch.Tensor], torch.Tensor],
    p0: torch.Tensor,
    p1: torch.Tensor,
    *,
    num_nodes: int = 5,
    eval_grid: int = 20,
    max_iter: int = 150,
    lr: float = 0.1,
    threshold: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor, bool, int]:
    """``(points [B, eval_grid, d], energies [B], converged, Adam steps taken)`` for the batch of pairs
    p0, p1 [B, d]; ``embed(x [M, d]) -> [M, D]``."""
    B, d = p0.shape
    basis = spline_basis(num_nodes, p0.dtype)
    params = torch.zeros(B, basis.shape[1], d, dtype=p0.dtype, requires_grad=True)
    t = torch.linspace(0, 1, eval_grid, dtype=p0.dtype)
    opt = torch.optim.Adam([params], lr=lr)

    def energies(c: torch.Tensor) -> torch.Tensor:
        e = embed(c.reshape(B * eval_grid, d)).reshape(B, eval_grid, -1)
        return (eval_grid - 1) * (e[:, 1:] - e[:, :-1]).square().sum((1, 2))

    converged, steps = False, 0
    for steps in range(1, max_iter + 1):  # noqa: B007 - the count is returned
        opt.zero_grad()
        energies(curve_points(p0, p1, params, basis, t)).mean().backward()
        opt.step()
        assert params.grad is not None
        if bool(params.grad.abs().max() < threshold):
            converged = True
            break
    with torch.no_grad():
        pts = curve_points(p0, p1, params, basis, t)
        return pts, energies(pts), converged, steps
