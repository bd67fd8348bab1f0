"""The spectrum of M = JᵀJ at a batch of points: the full method (d JVP rows, Gram or SVD) and block
Krylov / subspace iteration on M V = Jᵀ(J V) with exact residual bounds (see the package docstring)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from tangentlens import ops
from tangentlens._checks import (
    check_bool,
    check_u64,
    check_u64_range,
)
from tangentlens._checks import check_choice as _check_choice
from tangentlens._checks import check_int as _check_int
from tangentlens._checks import check_positive as _check_positive
from tangentlens._operator import _generator, _Operator, _probe, _ranges_checked_here, _width
from tangentlens.generators.adapters import OutputRange
from tangentlens.generators.outputs import RangeMonitor
from tangentlens.jvp import Precision

Space = Literal["z", "w", "w+"]
Method = Literal["auto", "full", "randomized", "lanczos"]
Via = Literal["gram", "svd"]

# Counter streams of ops.philox_normal (row = the point's index): latents, start blocks, probes.
STREAM_LATENT, STREAM_START, STREAM_PROBE, STREAM_DIRECTIONS = 0, 1, 2, 3


# ---- argument checks -----------------------------------------------------------------------------------


# ---- the operator: F, J V, Jᵀ U and Grams at a batch of points -----------------------------------------


def _check_finite_products(
    Y: torch.Tensor, what: str, first_index: int, idx: torch.Tensor | None = None
) -> None:
    """Products J v / M v must be finite before an eigensolver sees them (it would only say that it did not
    converge): NaN and inf are named, with the points."""
    bad = ~torch.isfinite(Y.reshape(Y.shape[0], -1)).all(dim=1)
    if not bool(bad.any()):
        return
    rows = torch.nonzero(bad).flatten()
    points = (idx[rows] if idx is not None else rows) + first_index
    kind = " and ".join(k for k, f in (("NaN", torch.isnan), ("inf", torch.isinf)) if bool(f(Y).any()))
    raise FloatingPointError(
        f"spectrum: {kind} in {what} at points {points.tolist()[:20]} (the generator's images are finite: "
        "its derivative is not, e.g. sqrt or log at 0, or it overflowed)"
    )


# ---- the Spectrum ------------------------------------------------------------------------------------------


@dataclass
class Spectrum:
    """Eigen-decomposition of ``M(z) = JᵀJ`` at B points.

    ``eigenvalues [B, k]`` (descending, float64), ``eigenvectors [B, d, k]`` (columns, float64),
    ``error_bounds [B, k]``: a bound on each eigenvalue's error from the residual ``r = M v - λ v`` and
    the gap to the other Ritz values, ``min(|r|, |r|² / gap)``, not below the products' rounding level
    (0 for ``method="full"``, exact up to rounding), ``metric``: the full ``M [B, d, d]`` when
    it was computed (``method="full"``), else None. ``products``: J-products spent per point (JVPs + VJPs).
    ``residuals [B, k]`` (partial methods): ``|M v - λ v|``, which also bounds each eigenvector's angle to
    its eigenspace by ``|r| / gap``. Eigenvalues converge quadratically and eigenvectors linearly, so a
    ``tol`` met by the eigenvalues leaves the eigenvectors about ``sqrt(tol)`` accurate.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    error_bounds: torch.Tensor
    method: str
    metric: torch.Tensor | None = None
    products: int = 0
    iterations: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)
    residuals: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.eigenvalues.shape[0]

    @property
    def dim(self) -> int:
        return self.eigenvectors.shape[1]

    @property
    def k(self) -> int:
        return self.eigenvalues.shape[1]

    @property
    def complete(self) -> bool:
        """All d eigenvalues are known (the spectral statistics are exact)."""
        return self.k == self.dim

    @classmethod
    def from_metric(cls, M: torch.Tensor, k: int | None = None) -> Spectrum:
        """The spectrum of given symmetric PSD matrices ``M [B, d, d]`` (e.g. a closed form)."""
        if not isinstance(M, torch.Tensor) or M.dim() != 3 or M.shape[1] != M.shape[2]:
            raise ValueError(
                f"M: expected [B, d, d], got {tuple(getattr(M, 'shape', ())) or type(M).__name__}"
            )
        M = M.detach().double()
        M = 0.5 * (M + M.transpose(1, 2))
        lam, V = _eigh_desc(M)
        k = M.shape[1] if k is None else _check_int(k, "k", 1, M.shape[1])
        return cls(lam[:, :k], V[:, :, :k], torch.zeros_like(lam[:, :k]), "full", metric=M)

    def stats(self, *, rel_floor: float = 1e-12) -> dict[str, torch.Tensor]:
        """SPEC 5 statistics per point (dict of float64 tensors [B]); see :func:`stats`."""
        from tangentlens.spectra.statistics import stats  # statistics imports Spectrum from here

        return stats(self, rel_floor=rel_floor)

    def quadratic_forms(self, v: torch.Tensor) -> torch.Tensor:
        """``vᵀ M v`` [B, n] for directions v [n, d]: exact from M when it is kept, else from the k computed
        eigenpairs (a lower bound: the rest of the spectrum is missing)."""
        if not isinstance(v, torch.Tensor) or v.dim() != 2 or v.shape[1] != self.dim:
            raise ValueError(f"v: expected [n, {self.dim}], got {tuple(getattr(v, 'shape', ()))}")
        v = v.double().to(self.eigenvalues.device)
        if self.metric is not None:
            return torch.einsum("nd,bde,ne->bn", v, self.metric, v)
        proj = torch.einsum("nd,bdk->bnk", v, self.eigenvectors)
        return (proj.square() * self.eigenvalues[:, None]).sum(-1)

    def __getitem__(self, idx: int | slice) -> Spectrum:
        sl = slice(idx, idx + 1) if isinstance(idx, int) else idx
        return Spectrum(
            self.eigenvalues[sl],
            self.eigenvectors[sl],
            self.error_bounds[sl],
            self.method,
            None if self.metric is None else self.metric[sl],
            self.products,
            None if self.iterations is None else self.iterations[sl],
            dict(self.info),
            None if self.residuals is None else self.residuals[sl],
        )


def _eigh_desc(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lam, V = torch.linalg.eigh(M)
    return lam.flip(-1), V.flip(-1)


def _orth(Y: torch.Tensor) -> torch.Tensor:
    """Orthonormal columns spanning Y [B, d, m] (float64 QR)."""
    return torch.linalg.qr(Y, mode="reduced")[0]


def _rayleigh_ritz(
    Q: torch.Tensor, MQ: torch.Tensor, k: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k Ritz pairs of M on span(Q) from the images MQ (computed in ``dtype``), a bound on each
    |λ_j - θ_j| and the residual norms."""
    T = Q.transpose(1, 2) @ MQ
    lam, S = _eigh_desc(0.5 * (T + T.transpose(1, 2)))
    R = (MQ @ S - (Q @ S) * lam[:, None]).norm(dim=1)  # residuals of all m Ritz pairs
    bounds = _error_bounds(lam, R, k, _rounding_floor(lam[:, :1], dtype))
    return lam[:, :k], Q @ S[:, :, :k], bounds, R[:, :k]


def _error_bounds(theta: torch.Tensor, R: torch.Tensor, k: int, floor: torch.Tensor) -> torch.Tensor:
    """min(|r_j|, |r_j|² / gap_j), at least ``floor`` [B, 1]. The residual alone (Krylov-Weinstein) puts an
    eigenvalue within |r_j| of θ_j; once θ_j is separated from the other Ritz values, the gap
    ``gap_j = min_i≠j |θ_j - θ_i| - |r_i|`` (each neighbour moved towards θ_j by its own residual) gives the
    quadratic Kato-Temple bound, orders of magnitude tighter near convergence. Like any a-posteriori
    bound it assumes the subspace has not missed an eigenvalue between the Ritz values. ``floor``: the
    rounding level of the products (they are computed in the points' dtype)."""
    m = theta.shape[1]
    gaps = (theta[:, :k, None] - theta[:, None, :]).abs() - R[:, None, :]
    gaps = gaps.masked_fill(torch.eye(k, m, dtype=torch.bool, device=theta.device), math.inf)
    gap = gaps.min(dim=2).values if m > 1 else torch.full_like(theta[:, :k], math.inf)
    Rk = R[:, :k]
    quad = torch.where(gap > 0, Rk.square() / gap.clamp_min(torch.finfo(gap.dtype).tiny), Rk)
    return torch.maximum(torch.minimum(Rk, quad), floor)


def _start_block(
    B: int, d: int, b: int, seed: int, first_index: int, init: object, device: torch.device
) -> torch.Tensor:
    """Starting block [B, d, b]: the warm-start vectors first, then Gaussian columns whose values depend only
    on (seed, point index)."""
    g = ops.philox_normal(seed, first_index, B, d * b, stream=STREAM_START, dtype=torch.float64)
    Om = g.reshape(B, b, d).transpose(1, 2).to(device)
    if init is not None:
        V0 = init.eigenvectors if isinstance(init, Spectrum) else init
        if not isinstance(V0, torch.Tensor) or V0.dim() != 3 or V0.shape[0] != B or V0.shape[1] != d:
            got = tuple(V0.shape) if isinstance(V0, torch.Tensor) else type(V0).__name__
            raise ValueError(f"init: expected a Spectrum or eigenvectors [{B}, {d}, k0], got {got}")
        m = min(V0.shape[2], b)
        Om = torch.cat([V0[:, :, :m].to(device, torch.float64), Om[:, :, m:]], dim=2)
    return Om


def _converged(lam: torch.Tensor, bound: torch.Tensor, tol: float) -> torch.Tensor:
    # relative to each eigenvalue, with an absolute floor at the top eigenvalue's rounding level
    scale = torch.maximum(lam.abs(), lam[:, :1].abs() * 1e-12)
    return (bound <= tol * scale).all(dim=1)


def _rounding_floor(lam_top: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1]: no bound below 16 unit roundoffs of the products' dtype times the top eigenvalue (M v is
    computed in that dtype: its rounding error is relative to |M| = λ_1)."""
    return 16 * torch.finfo(dtype).eps * lam_top.abs().reshape(-1, 1)


def _iterate(
    op: _Operator,
    x: torch.Tensor,
    k: int,
    b: int,
    method: str,
    iters: int,
    tol: float,
    Om: torch.Tensor,
    first_index: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Top-k of M at each point by subspace iteration ("randomized") or block Krylov ("lanczos"). Each point
    is frozen at the iteration where its top-k residuals met tol, so its result does not depend on the
    other points of the batch."""
    B, d = x.shape
    lam_out = torch.zeros(B, k, dtype=torch.float64, device=x.device)
    V_out = torch.zeros(B, d, k, dtype=torch.float64, device=x.device)
    R_out = torch.full((B, k), math.inf, dtype=torch.float64, device=x.device)
    res_out = R_out.clone()
    its = torch.zeros(B, dtype=torch.int64, device=x.device)
    active = torch.ones(B, dtype=torch.bool, device=x.device)
    Q = _orth(Om)
    basis: list[torch.Tensor] = []  # lanczos: the Krylov blocks and their images
    images: list[torch.Tensor] = []
    products = 0
    for it in range(iters):
        idx = active.nonzero().squeeze(1)
        Y = torch.zeros_like(Q)
        Y[idx] = op.mv(x[idx], Q[idx].transpose(1, 2)).transpose(1, 2)
        _check_finite_products(Y[idx], "the products M v", first_index, idx)
        products += 2 * Q.shape[2]
        if method == "lanczos":
            basis.append(Q)
            images.append(Y)
            K, MK = torch.cat(basis, dim=2), torch.cat(images, dim=2)
        else:
            K, MK = Q, Y
        lam, V, R, res = _rayleigh_ritz(K[idx], MK[idx], k, x.dtype)
        lam_out[idx], V_out[idx], R_out[idx], res_out[idx] = lam, V, R, res
        its[idx] = it + 1
        done = _converged(lam, R, tol)
        active[idx[done]] = False
        m = K.shape[2]
        if not active.any() or (method == "lanczos" and m >= d):
            break
        if method == "lanczos":
            # next block: M Q_last orthogonalised against the whole basis (twice: classical Gram-Schmidt
            # loses orthogonality once the Krylov space nearly closes); no more columns than d allows
            W = Y - K @ (K.transpose(1, 2) @ Y)
            W = W - K @ (K.transpose(1, 2) @ W)
            Q = _orth(W[:, :, : min(b, d - m)])
            Q = _orth(Q - K @ (K.transpose(1, 2) @ Q))
        else:
            Q = _orth(Y)
    return lam_out, V_out, R_out, res_out, its, products


def spectrum(
    fn_or_generator: object,
    z: torch.Tensor,
    *,
    distance: object = None,
    space: Space = "z",
    k: int | None = None,
    method: Method = "auto",
    via: Via = "gram",
    oversample: int = 10,
    iters: int | None = None,
    tol: float = 1e-3,
    precision: Precision = "fp32",
    chunk_size: int | None = None,
    seed: int = 0,
    init: Spectrum | torch.Tensor | None = None,
    first_index: int = 0,
    z_dim: int | None = None,
    output_range: OutputRange | None = None,
    check_range: bool = True,
) -> Spectrum:
    """Eigenvalues and eigenvectors of ``M(z) = JᵀJ`` for F = φ ∘ G at points ``z [B, d]``.

    Args:
        fn_or_generator: anything :func:`tangentlens.generators.as_generator` takes: a StyleGAN-like
            generator (``mapping``/``synthesis``; its JVPs use the stacked forward rules where it has
            them; "w"/"w+" need one), a VAE (``decode``), torchmetrics / torch-fidelity generators, or a
            callable ``z -> tensor`` (its width from z). Images are taken in [-1, 1] (the adapter's
            ``output_range`` mapped affinely).
        z: points ``[B, d]``: latents for ``space="z"``, w ``[B, w_dim]`` for ``"w"`` (broadcast to all
            num_ws), ``[B, num_ws * w_dim]`` (or ``[B, num_ws, w_dim]``) for ``"w+"``. Its dtype is the
            compute dtype of the products; the decompositions run in float64.
        distance: None or ``"l2"`` (pixels / the function's output), an :class:`LPIPS` (or a name for
            ``make_distance``), or any module with ``embed(x) -> [N, F]``.
        k: eigenpairs to return (None: all d).
        method: ``"full"`` (d JVPs), ``"randomized"`` (block subspace iteration), ``"lanczos"`` (block
            Krylov); ``"auto"``: full when d <= 12 (k + oversample) (cheaper than the ~4 blocks of
            M products a Krylov run needs, each about 3 JVPs), else lanczos.
        via: full method: ``"gram"`` (eigh of the float64 Gram) or ``"svd"`` (SVD of the D×d Jacobian
            block, for the small eigenvalues: the condition number is not squared).
        oversample: extra columns of the block (block size k + oversample).
        iters: maximum iterations (default 30 for randomized, until the Krylov space fills R^d for
            lanczos).
        tol: a point stops when every top-k error bound (see :class:`Spectrum`) is below ``tol · λ_j``.
        precision, chunk_size: passed to :func:`tangentlens.jvp` (chunk_size also splits the reverse
            passes and the LPIPS products). On a CPU the full method also splits the points so that a
            stacked pass has at most ``CPU_ROWS_PER_PASS`` (256) rows of points x (1 + tangents), or one
            point: larger passes fall out of the cache.
        seed, first_index: the random start block of point b is row ``first_index + b`` of the
            counter-based generator (results do not depend on the batch composition).
        init: warm start: a previous :class:`Spectrum` (or eigenvectors ``[B, d, k0]``) at nearby points.
        z_dim, output_range: for a plain callable (its latent size, default z's width; its image range,
            default ``"-1_1"``), as :func:`tangentlens.generators.as_generator`.
        check_range: compare the images with the declared range and warn once (never an error).

    The generator is first called once on the points: a failure names their shape and z_dim, NaN or inf
    images are named with the points' indices (``first_index + b``). Grey images [B, 1, H, W] are repeated
    to 3 channels for LPIPS (as in :func:`tangentlens.ppl`).
    """
    op = _Operator(
        _generator(fn_or_generator, z_dim, output_range, _width(z)),
        distance,
        space,
        precision,
        chunk_size,
        z_dim=_width(z),
    )
    x = op.check_points(z)
    check_bool(check_range, "check_range")
    monitor = RangeMonitor(op.adapter.output_range, check_range)
    return _spectrum(op, x, monitor, k, method, via, oversample, iters, tol, seed, init, first_index)


@_ranges_checked_here
def _spectrum(
    op: _Operator,
    x: torch.Tensor,
    monitor: RangeMonitor | None,
    k: int | None,
    method: str,
    via: str,
    oversample: int,
    iters: int | None,
    tol: float,
    seed: int,
    init: Spectrum | torch.Tensor | None,
    first_index: int,
) -> Spectrum:
    """:func:`spectrum` at checked points x of an operator (``scan`` keeps one operator and one range
    monitor for its whole run)."""
    B, d = x.shape
    k = d if k is None else _check_int(k, "k", 1, d)
    _check_choice(method, "method", ("auto", "full", "randomized", "lanczos"))
    _check_choice(via, "via", ("gram", "svd"))
    _check_int(oversample, "oversample", 0)
    check_u64(seed, "seed")
    check_u64(first_index, "first_index")
    check_u64_range(first_index, B, "first_index + points")
    tol = _check_positive(tol, "tol")
    _probe(op, x, first_index, monitor)
    if method == "auto":
        # one M v (a JVP and a replicated reverse pass) costs about 3 JVPs and block Krylov needs about
        # 4 blocks of k + oversample: below ~12 (k + oversample) directions the d JVPs of "full" are cheaper
        method = "full" if d <= 12 * (k + oversample) else "lanczos"
    if method == "full":
        if init is not None:
            raise ValueError(
                "init: a warm start applies to method='randomized' or 'lanczos', got method='full'"
            )
        return _full(op, x, k, via, first_index)
    if iters is None:
        iters = 30 if method == "randomized" else d
    _check_int(iters, "iters", 1)
    b = min(d, k + oversample)
    Om = _start_block(B, d, b, seed, first_index, init, x.device)
    lam, V, R, res, its, products = _iterate(op, x, k, b, method, iters, tol, Om, first_index)
    if not (torch.isfinite(lam).all() and torch.isfinite(V).all()):
        raise FloatingPointError("spectrum: non-finite eigenpairs (the products J v / Jᵀ u overflowed)")
    return Spectrum(
        lam,
        V,
        R,
        method,
        products=products,
        iterations=its,
        info={"block_size": b, "tol": tol, "converged": bool(_converged(lam, R, tol).all())},
        residuals=res,
    )


# On a CPU a stacked pass of more rows (points x (1 + tangents)) than this runs slower per row: its
# activations leave the cache (d = 128 at 32²: 8 points in one pass cost 1.4x one point per pass).
CPU_ROWS_PER_PASS = 256


def _points_per_pass(op: _Operator, x: torch.Tensor) -> int:
    B, d = x.shape
    if x.device.type != "cpu":
        return B
    rows = 1 + min(d, op.chunk_size or d)
    return max(1, CPU_ROWS_PER_PASS // rows)


def _full_group(op: _Operator, x: torch.Tensor, via: str, first_index: int) -> tuple[torch.Tensor, ...]:
    B, d = x.shape
    basis = torch.eye(d, dtype=x.dtype, device=x.device).expand(B, d, d)
    if via == "svd":
        J = op.jv(x, basis).double().transpose(1, 2)  # [B, D, d]
        _check_finite_products(J, "the Jacobian J", first_index)
        _, s, Vh = torch.linalg.svd(J, full_matrices=False)
        return s.square(), Vh.transpose(1, 2), J.transpose(1, 2) @ J
    M = op.gram(x, basis)
    _check_finite_products(M, "the metric M", first_index)
    M = 0.5 * (M + M.transpose(1, 2))
    return *_eigh_desc(M), M


def _full(op: _Operator, x: torch.Tensor, k: int, via: str, first_index: int = 0) -> Spectrum:
    B, d = x.shape
    step = _points_per_pass(op, x)
    groups = [_full_group(op, x[s : s + step], via, first_index + s) for s in range(0, B, step)]
    lam, V, M = (torch.cat(parts) for parts in zip(*groups, strict=True))
    _check_finite_products(M, "the metric M", first_index)
    return Spectrum(
        lam[:, :k],
        V[:, :, :k],
        torch.zeros(B, k, dtype=torch.float64, device=x.device),
        "full",
        metric=M,
        products=d,
        info={"via": via},
    )
