"""Spectra of the latent metric tensor ``M(z) = JᵀJ`` of ``F = φ ∘ G`` (SPEC 1, 2, 5).

``spectrum(G, z)`` returns eigenvalues, eigenvectors and residual error bounds of M at a batch of points:

- ``method="full"``: all d directions at once. J as the D×d block of ``tangentlens.jvp`` with the d basis
  tangents (for LPIPS the Gram ``<J e_i, J e_j>`` straight from ``LPIPS.tangent_norms(gram=True)``), Gram
  in float64 and ``eigh`` (``via="gram"``), or the SVD of J itself (``via="svd"``, small eigenvalues
  without squaring the condition number);
- ``method="randomized"`` (block subspace iteration) and ``"lanczos"`` (block Krylov with full
  reorthogonalisation): top-k from batched products ``M V = Jᵀ(J V)``, J V by forward mode, Jᵀ U by one
  reverse pass over the batch replicated per column. Rayleigh-Ritz uses the exact images ``M Q`` of the
  basis, so the bound ``|M v - λ v|`` reported per eigenpair is the true residual; points stop
  independently once their top-k residuals are below ``tol · λ`` (results do not depend on the batch).

``trace`` (Hutchinson / Hutch++) and ``off_diagonal_energy`` estimate ``tr M`` and ``Σ_{i≠j} M_ij²`` from
``|J u|²`` (JVPs only, except Hutch++'s sketch), with standard errors. ``Spectrum.stats()`` computes the
SPEC 5 statistics per point, ``aggregate`` and ``consistency`` summarise them over points, and ``scan``
streams them over many latent points drawn from the counter-based sampler (resumable, batch invariant).
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from tangentlens import ops
from tangentlens._checks import (
    check_bool,
    check_number,
    check_u64,
    check_u64_range,
    nonfinite_rows,
)
from tangentlens._checks import check_choice as _check_choice
from tangentlens._checks import check_int as _check_int
from tangentlens._checks import check_positive as _check_positive
from tangentlens._fingerprint import run_identity
from tangentlens._operator import _Operator, _width
from tangentlens.generators.adapters import OutputRange, adapt
from tangentlens.generators.outputs import TO_UNIT, RangeMonitor, call_generator, check_finite_images
from tangentlens.jvp import Precision
from tangentlens.lpips import unchecked_range

__all__ = [
    "Estimate",
    "ScanResult",
    "Spectrum",
    "aggregate",
    "consistency",
    "grassmann_distance",
    "off_diagonal_energy",
    "scan",
    "spectrum",
    "stats",
    "trace",
]

Space = Literal["z", "w", "w+"]
Method = Literal["auto", "full", "randomized", "lanczos"]
Via = Literal["gram", "svd"]

# Counter streams of ops.philox_normal (row = the point's index): latents, start blocks, probes.
STREAM_LATENT, STREAM_START, STREAM_PROBE, STREAM_DIRECTIONS = 0, 1, 2, 3
TRACE_FRACTIONS = (0.99, 0.999, 0.9999)


# ---- argument checks -----------------------------------------------------------------------------------


# ---- the operator: F, J V, Jᵀ U and Grams at a batch of points -----------------------------------------


def _generator(obj: object, z_dim: int | None, output_range: OutputRange | None, width: int | None) -> object:
    """``obj`` itself (adapted by ``_Operator``, cached per object), or with an explicit ``z_dim`` /
    ``output_range`` its adapter built with them (checked against an adapter's own values); a plain
    callable given only ``output_range`` takes the points' ``width`` as its z_dim."""
    if z_dim is None and output_range is None:
        return obj
    return adapt(obj, z_dim=z_dim, output_range=output_range, z_dim_hint=width)


def _ranges_checked_here(fn: Callable) -> Callable:
    """The engine compares the images with the declared range itself (``_probe``: one warning per run,
    never an error), so LPIPS's own input-range check is off inside ``fn``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with unchecked_range():
            return fn(*args, **kwargs)

    return wrapper


def _probe(op: _Operator, x: torch.Tensor, first_index: int, monitor: RangeMonitor | None) -> None:
    """The generator's images at the points, once, by a plain call: a failure inside it names the points'
    shape (and z_dim), NaN / inf images are named with the points' indices, and the values are compared
    with the declared output range (one warning per run, never an error)."""
    ad = op.adapter
    with torch.no_grad():
        img = call_generator(op.gen, x, ad.kind, op.space, ad.z_dim)
    check_finite_images(img, first_index, "generator output")  # type: ignore[arg-type]
    if monitor is not None:
        a, b = TO_UNIT[ad.output_range]
        monitor.observe((img - b) / a, first_index)  # type: ignore[operator]


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


# ---- statistics (SPEC 5) ---------------------------------------------------------------------------------


def stats(spec: Spectrum, *, rel_floor: float = 1e-12) -> dict[str, torch.Tensor]:
    """SPEC 5 statistics per point, as float64 tensors [B].

    With λ the eigenvalues (floored at ``rel_floor · λ_1`` where a logarithm or a ratio needs it):
    ``trace`` Σλ, ``rank`` the number of λ above the floor, ``log_det`` Σ log λ, ``condition_number``
    λ_1/λ_d, ``participation_ratio`` (Σλ)²/Σλ², ``entropy_rank`` exp(H(λ/Σλ)), ``dims_99`` / ``dims_99.9``
    / ``dims_99.99`` (fewest eigenvalues holding that fraction of the trace), ``alignment_distance``
    ‖|V| − P‖_F to the best permutation P (Hungarian on |V|), ``alignment_max`` mean over latent axes of
    max_j |V_ij|, and with M kept (method "full") ``column_orthogonality`` ½(log det diag M − log det M)
    over the columns with M_jj above the floor (a latent the generator ignores has J e_j = 0, orthogonal to
    everything) and ``off_diagonal_energy`` Σ_{i≠j} M_ij² / Σ_ij M_ij². For a partial spectrum (k < d) the
    spectral statistics are those of the rank-k part (trace, rank, participation ratio, entropy rank, dims
    over the k computed eigenvalues), the alignment is over its k eigenvectors (``alignment_max``: mean
    over them of their largest coordinate), and log_det, condition_number and the column statistics, which
    need all of M, are left out.

    Rank-deficient M (collapsed latents of a VAE) is the normal case: log_det and condition_number then use
    the floor (``condition_number`` at most ``1 / rel_floor``). Where M = 0 (a generator constant around
    the point) ``trace``, ``rank``, the ratios and the dims are 0, ``log_det`` is -inf and
    ``condition_number`` inf. NaN eigenvalues are an error that names them and the points.
    """
    rel_floor = _check_positive(rel_floor, "rel_floor")
    lam = spec.eigenvalues.double()
    msg = nonfinite_rows(lam, "stats: eigenvalues", 0, "points")
    if msg is not None:
        raise FloatingPointError(msg)
    tiny = torch.finfo(torch.float64).tiny
    lam = lam.clamp_min(0.0)  # PSD: negative values are rounding
    zero = lam[:, 0] <= 0  # M = 0 at that point
    floor = lam[:, :1] * rel_floor
    tr = lam.sum(1)
    p = lam / tr.clamp_min(tiny)[:, None]
    entropy = -torch.where(p > 0, p * p.clamp_min(1e-300).log(), torch.zeros_like(p)).sum(1)
    out: dict[str, torch.Tensor] = {
        "trace": tr,
        "rank": (lam > floor).sum(1).double(),
        "participation_ratio": tr.square() / lam.square().sum(1).clamp_min(tiny),
        "entropy_rank": torch.where(zero, 0.0, torch.exp(entropy)),
    }
    cum = lam.cumsum(1)
    for q in TRACE_FRACTIONS:
        # fewest eigenvalues holding a fraction q of the trace (relative slack for the rounding of cumsum)
        dims = ((cum < q * tr[:, None] * (1 - 1e-12)).sum(1) + 1).clamp_max(lam.shape[1]).double()
        out[f"dims_{100 * q:g}"] = torch.where(zero, 0.0, dims)
    if spec.complete:
        fl = torch.maximum(lam, floor)
        out["log_det"] = fl.log().sum(1)  # -inf where M = 0
        out["condition_number"] = torch.where(zero, math.inf, lam[:, 0] / fl[:, -1].clamp_min(tiny))
    a_dist, a_max = _alignment(spec.eigenvectors, spec.complete)
    out["alignment_distance"], out["alignment_max"] = a_dist, a_max
    if spec.metric is not None:
        out["column_orthogonality"] = _column_orthogonality(spec.metric.double(), rel_floor)
        M = spec.metric.double()
        total = M.square().sum((1, 2))
        off = total - torch.diagonal(M, dim1=1, dim2=2).square().sum(1)
        out["off_diagonal_energy"] = off / total.clamp_min(tiny)
    for name, v in out.items():
        bad = torch.isnan(v) | (torch.isinf(v) & (name not in ("log_det", "condition_number")))
        if bool(bad.any()):
            points = torch.nonzero(bad).flatten().tolist()
            raise FloatingPointError(
                f"stats: {name} is {'NaN' if bool(torch.isnan(v).any()) else 'inf'} at points {points[:20]} "
                f"(eigenvalues there: {spec.eigenvalues[points[:3]].tolist()})"
            )
    return out


def _column_orthogonality(M: torch.Tensor, rel_floor: float) -> torch.Tensor:
    """½(log det diag M − log det M) = −½ log det C, C the correlation matrix of the columns of J (scale
    free), over the columns with M_jj above ``rel_floor · max_j M_jj``; the others (J e_j = 0) are left
    out, an identity block of C. Eigenvalues of C are floored at ``rel_floor`` times the largest."""
    tiny = torch.finfo(torch.float64).tiny
    diag = torch.diagonal(M, dim1=1, dim2=2)
    active = diag > (diag.amax(dim=1, keepdim=True) * rel_floor).clamp_min(tiny)
    scale = torch.where(active, diag.clamp_min(tiny).rsqrt(), torch.zeros_like(diag))
    C = M * scale[:, :, None] * scale[:, None, :]
    C = C + torch.diag_embed((~active).double())
    ev = torch.linalg.eigvalsh(0.5 * (C + C.transpose(1, 2)))
    ev = torch.maximum(ev, ev[:, -1:].clamp_min(tiny) * rel_floor)
    return (-0.5 * ev.log().sum(1)).clamp_min(0.0) + 0.0  # + 0.0: no -0.0


def _alignment(V: torch.Tensor, complete: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from scipy.optimize import linear_sum_assignment

    A = V.detach().double().abs().cpu()
    dist = torch.empty(A.shape[0], dtype=torch.float64)
    for b in range(A.shape[0]):
        rows, cols = linear_sum_assignment(A[b].numpy(), maximize=True)
        P = torch.zeros_like(A[b])
        P[torch.as_tensor(rows), torch.as_tensor(cols)] = 1.0
        dist[b] = (A[b] - P).norm()
    amax = A.amax(dim=2).mean(1) if complete else A.amax(dim=1).mean(1)
    return dist.to(V.device), amax.to(V.device)


# ---- aggregation and consistency over points ---------------------------------------------------------


QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def aggregate(per_point: Mapping[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    """Mean, std (ddof 1), quantiles (5, 25, 50, 75, 95 %) and count over points of each statistic
    (tensors [N] give floats; [N, k] tensors, e.g. eigenvalues, give lists over k)."""
    if not isinstance(per_point, Mapping):
        raise TypeError(f"per_point: expected a dict of tensors [N], got {type(per_point).__name__}")
    out: dict[str, dict[str, Any]] = {}
    for name, v in per_point.items():
        if not isinstance(v, torch.Tensor) or v.dim() not in (1, 2) or v.shape[0] < 1:
            got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(f"per_point[{name!r}]: expected a tensor [N] or [N, k] with N >= 1, got {got}")
        v = v.double()
        q = torch.quantile(v, torch.tensor(QUANTILES, dtype=torch.float64), dim=0)

        def py(t: torch.Tensor) -> Any:
            return t.tolist()

        out[name] = {
            "mean": py(v.mean(0)),
            "std": py(v.std(0) if v.shape[0] > 1 else torch.zeros_like(v[0])),
            **{f"q{int(100 * p):02d}": py(q[i]) for i, p in enumerate(QUANTILES)},
            "count": int(v.shape[0]),
        }
    return out


def grassmann_distance(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Grassmann (geodesic) distance ‖θ‖₂ between the column spans of orthonormal A, B [..., d, k], θ the
    principal angles."""
    s = torch.linalg.svdvals(A.double().transpose(-1, -2) @ B.double()).clamp(-1.0, 1.0)
    return torch.arccos(s).norm(dim=-1)


def consistency(
    *,
    quadratic_forms: torch.Tensor | None = None,
    eigenvectors: torch.Tensor | None = None,
    k: int | None = None,
) -> dict[str, Any]:
    """Cross-position consistency of the metric over N points.

    ``quadratic_forms [N, n]``: ``vᵀ M(z_i) v`` for n fixed directions; gives ``qform_correlation`` [N, N]
    (Pearson correlation over directions between points) and its mean over pairs. ``eigenvectors
    [N, d, ≥k]``: gives ``grassmann`` [N, N] distances between the top-k subspaces and their mean over pairs
    (0 = the same subspace everywhere; the maximum is sqrt(k)·π/2).
    """
    out: dict[str, Any] = {}
    if quadratic_forms is None and eigenvectors is None:
        raise ValueError("consistency: expected quadratic_forms and/or eigenvectors, got neither")
    if quadratic_forms is not None:
        q = quadratic_forms
        if not isinstance(q, torch.Tensor) or q.dim() != 2 or q.shape[0] < 2 or q.shape[1] < 2:
            got = tuple(q.shape) if isinstance(q, torch.Tensor) else type(q).__name__
            raise ValueError(f"quadratic_forms: expected [N >= 2, n >= 2], got {got}")
        c = torch.corrcoef(q.double())
        iu = torch.triu_indices(c.shape[0], c.shape[0], 1)
        out["qform_correlation"] = c
        out["qform_correlation_mean"] = float(c[iu[0], iu[1]].mean())
    if eigenvectors is not None:
        V = eigenvectors
        if not isinstance(V, torch.Tensor) or V.dim() != 3 or V.shape[0] < 2:
            got = tuple(V.shape) if isinstance(V, torch.Tensor) else type(V).__name__
            raise ValueError(f"eigenvectors: expected [N >= 2, d, k], got {got}")
        k = V.shape[2] if k is None else _check_int(k, "k", 1, V.shape[2])
        Vk = V[:, :, :k].double()
        G = grassmann_distance(Vk[:, None], Vk[None, :])
        iu = torch.triu_indices(G.shape[0], G.shape[0], 1)
        out["grassmann"] = G
        out["grassmann_mean"] = float(G[iu[0], iu[1]].mean())
    return out


# ---- trace and off-diagonal energy (JVP-only estimators) ------------------------------------------------


@dataclass
class Estimate:
    """A stochastic estimate per point with its standard error (both float64 [B])."""

    estimate: torch.Tensor
    stderr: torch.Tensor
    probes: int
    method: str


def _rademacher(seed: int, first_index: int, B: int, m: int, d: int, device: torch.device) -> torch.Tensor:
    g = ops.philox_normal(seed, first_index, B, m * d, stream=STREAM_PROBE, dtype=torch.float64)
    return torch.where(g >= 0, 1.0, -1.0).to(torch.float64).reshape(B, m, d).to(device)


@_ranges_checked_here
def trace(
    fn_or_generator: object,
    z: torch.Tensor,
    *,
    probes: int = 32,
    method: Literal["hutchinson", "hutch++"] = "hutchinson",
    distance: object = None,
    space: Space = "z",
    precision: Precision = "fp32",
    chunk_size: int | None = None,
    seed: int = 0,
    first_index: int = 0,
    z_dim: int | None = None,
    output_range: OutputRange | None = None,
) -> Estimate:
    """Stochastic ``tr M(z)`` with a standard error, per point.

    ``"hutchinson"``: the mean of ``uᵀMu = |J u|²`` over Rademacher probes u (JVPs only; standard error
    std/sqrt(probes)). ``"hutch++"`` (Meyer et al. 2021): a third of the probes sketch Q = orth(M S) (one
    J and one Jᵀ product each), ``tr(QᵀMQ)`` is exact (|J Q|², JVPs), Hutchinson on the deflated
    ``(I − QQᵀ) M (I − QQᵀ)`` with the last third; the standard error is that of the deflated part.
    """
    gen = _generator(fn_or_generator, z_dim, output_range, _width(z))
    op = _Operator(gen, distance, space, precision, chunk_size, z_dim=_width(z))
    x = op.check_points(z)
    _check_choice(method, "method", ("hutchinson", "hutch++"))
    _check_int(probes, "probes", 2 if method == "hutchinson" else 6)
    check_u64(seed, "seed")
    check_u64(first_index, "first_index")
    _probe(op, x, first_index, RangeMonitor(op.adapter.output_range))
    B, d = x.shape
    U = _rademacher(seed, first_index, B, probes, d, x.device)
    if method == "hutchinson":
        q = op.sqnorms(x, U)
        return Estimate(q.mean(1), q.std(1) / math.sqrt(probes), probes, method)
    m3 = probes // 3
    S, G = U[:, :m3], U[:, 2 * m3 :]  # sketch; the middle third's cost goes to tr(QᵀMQ)
    Q = _orth(op.mv(x, S).transpose(1, 2))  # [B, d, m3]
    top = op.sqnorms(x, Q.transpose(1, 2)).sum(1)
    Gd = G - (G @ Q) @ Q.transpose(1, 2)
    q = op.sqnorms(x, Gd)
    n = q.shape[1]
    return Estimate(top + q.mean(1), q.std(1) / math.sqrt(n), probes, method)


@_ranges_checked_here
def off_diagonal_energy(
    fn_or_generator: object,
    z: torch.Tensor,
    *,
    probes: int = 64,
    distance: object = None,
    space: Space = "z",
    precision: Precision = "fp32",
    chunk_size: int | None = None,
    seed: int = 0,
    first_index: int = 0,
    z_dim: int | None = None,
    output_range: OutputRange | None = None,
) -> Estimate:
    """``Σ_{i≠j} M_ij² = ½ Var(xᵀ M x)`` for Rademacher x (SPEC 2), from ``|J x|²`` (JVPs only): half the
    unbiased sample variance, with the standard error of a sample variance
    ``sqrt((μ₄ − σ⁴ (n − 3)/(n − 1)) / n) / 2``."""
    gen = _generator(fn_or_generator, z_dim, output_range, _width(z))
    op = _Operator(gen, distance, space, precision, chunk_size, z_dim=_width(z))
    x = op.check_points(z)
    _check_int(probes, "probes", 4)
    check_u64(seed, "seed")
    check_u64(first_index, "first_index")
    _probe(op, x, first_index, RangeMonitor(op.adapter.output_range))
    B, d = x.shape
    s = op.sqnorms(x, _rademacher(seed, first_index, B, probes, d, x.device))
    n = probes
    var = s.var(1)
    mu4 = (s - s.mean(1, keepdim=True)).pow(4).mean(1)
    se = torch.sqrt(((mu4 - var.square() * (n - 3) / (n - 1)) / n).clamp_min(0.0))
    return Estimate(0.5 * var, 0.5 * se, probes, "rademacher")


# ---- scan over many latent points -----------------------------------------------------------------------


SCAN_FORMAT = "tangentlens-spectra-scan"


@dataclass
class ScanResult:
    """Per-point rows of :func:`scan` (float64 tensors on the CPU, N = num_points).

    ``eigenvalues`` / ``error_bounds`` [N, k], ``iterations`` [N], ``stats`` {name: [N]} (SPEC 5, see
    :func:`stats`), ``quadratic_forms`` [N, n] (``vᵀ M v`` for n fixed random unit directions, exact),
    ``eigenvectors`` [N, d, k] when ``store_eigenvectors=True``, ``config``: the arguments that determine
    the rows.
    """

    config: dict[str, Any]
    eigenvalues: torch.Tensor
    error_bounds: torch.Tensor
    iterations: torch.Tensor
    stats: dict[str, torch.Tensor]
    quadratic_forms: torch.Tensor
    eigenvectors: torch.Tensor | None = None
    resumed_from: int = 0
    seconds: float = 0.0

    @property
    def num_points(self) -> int:
        return self.eigenvalues.shape[0]

    def aggregate(self) -> dict[str, dict[str, Any]]:
        """:func:`aggregate` of the statistics and the eigenvalues over the points."""
        return aggregate({**self.stats, "eigenvalues": self.eigenvalues})

    def consistency(self, k: int | None = None) -> dict[str, Any]:
        """:func:`consistency` over the points (Grassmann distances only with stored eigenvectors)."""
        return consistency(
            quadratic_forms=self.quadratic_forms if self.quadratic_forms.shape[1] >= 2 else None,
            eigenvectors=self.eigenvectors,
            k=k,
        )

    def _rows(self) -> dict[str, torch.Tensor]:
        rows = {
            "eigenvalues": self.eigenvalues,
            "error_bounds": self.error_bounds,
            "iterations": self.iterations,
            "quadratic_forms": self.quadratic_forms,
            **{f"stat.{k}": v for k, v in self.stats.items()},
        }
        if self.eigenvectors is not None:
            rows["eigenvectors"] = self.eigenvectors
        return rows

    @classmethod
    def _from_rows(
        cls, config: dict[str, Any], rows: Mapping[str, torch.Tensor], resumed_from: int, seconds: float
    ) -> ScanResult:
        return cls(
            config=dict(config),
            eigenvalues=rows["eigenvalues"],
            error_bounds=rows["error_bounds"],
            iterations=rows["iterations"],
            stats={k[5:]: v for k, v in rows.items() if k.startswith("stat.")},
            quadratic_forms=rows["quadratic_forms"],
            eigenvectors=rows.get("eigenvectors"),
            resumed_from=resumed_from,
            seconds=seconds,
        )

    def to_json(self, path: str | os.PathLike | None = None, *, indent: int | None = None) -> str:
        """The rows and configuration as JSON (floats written exactly: ``from_json`` round-trips), plus the
        aggregate for readers; written to ``path`` when given."""
        doc = {
            "format": SCAN_FORMAT,
            "version": 1,
            "config": self.config,
            "num_points": self.num_points,
            "resumed_from": self.resumed_from,
            "seconds": self.seconds,
            "rows": {
                k: {"dtype": str(v.dtype).replace("torch.", ""), "data": v.tolist()}
                for k, v in self._rows().items()
            },
            "aggregate": self.aggregate(),
        }
        text = json.dumps(doc, indent=indent)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, source: str | os.PathLike) -> ScanResult:
        """A ScanResult from :meth:`to_json`'s text or a path to it."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            text = Path(source).read_text(encoding="utf-8")
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != SCAN_FORMAT:
            raise ValueError(
                f"source: expected a {SCAN_FORMAT!r} JSON document, got format {doc.get('format')!r}"
            )
        rows = {k: torch.tensor(v["data"], dtype=getattr(torch, v["dtype"])) for k, v in doc["rows"].items()}
        return cls._from_rows(doc["config"], rows, int(doc["resumed_from"]), float(doc["seconds"]))

    def plot_eigenvalue_decay(
        self,
        ax: Any = None,
        *,
        bands: Sequence[tuple[float, float]] = ((0.05, 0.95), (0.25, 0.75)),
        normalize: bool = False,
    ) -> Any:
        """Median eigenvalue λ_i against i (log scale) with quantile bands over the points; ``normalize``
        divides each point's spectrum by its λ_1; values below 1e-16 λ_1 are drawn at that floor. Returns
        the matplotlib axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3.5))
        lam = self.eigenvalues.double()
        # float64 rounding level: exact zeros (e.g. z's radial direction, which the mapping normalises
        # away) would stretch the log axis over hundreds of decades
        lam = torch.maximum(lam, lam[:, :1].clamp_min(torch.finfo(torch.float64).tiny) * 1e-16)
        if normalize:
            lam = lam / lam[:, :1]
        i = torch.arange(1, lam.shape[1] + 1).numpy()
        for lo, hi in bands:
            q = torch.quantile(lam, torch.tensor([lo, hi], dtype=torch.float64), dim=0).numpy()
            ax.fill_between(i, q[0], q[1], alpha=0.25, color="C0", lw=0, label=f"{100 * lo:g}-{100 * hi:g} %")
        ax.plot(i, lam.median(0).values.numpy(), color="C0", lw=1.5, label="median")
        ax.set_yscale("log")
        ax.set_xlabel("index i")
        ax.set_ylabel("λ_i / λ_1" if normalize else "eigenvalue λ_i of M")
        ax.set_title(f"spectrum of M = JᵀJ over {self.num_points} points")
        ax.legend(fontsize="small")
        return ax

    def plot_alignment(self, ax: Any = None, *, transpose: bool = False) -> Any:
        """Heat map of the mean |V| over the points ([d latent axes, k eigenvectors], or |V|ᵀ): an
        axis-aligned metric shows a permutation pattern. Needs ``store_eigenvectors=True``."""
        import matplotlib.pyplot as plt

        if self.eigenvectors is None:
            raise ValueError(
                "plot_alignment: expected a scan with eigenvectors, got none (run scan(..., "
                "store_eigenvectors=True))"
            )
        if ax is None:
            _, ax = plt.subplots(figsize=(4.5, 4))
        A = self.eigenvectors.double().abs().mean(0)
        if transpose:
            A = A.T
        im = ax.imshow(A.numpy(), aspect="auto", cmap="viridis", vmin=0.0, interpolation="nearest")
        ax.set_xlabel("latent axis" if transpose else "eigenvector (descending λ)")
        ax.set_ylabel("eigenvector (descending λ)" if transpose else "latent axis")
        ax.set_title("mean |V| over points")
        ax.figure.colorbar(im, ax=ax)
        return ax


def scan(
    generator: object,
    num_points: int,
    seed: int = 0,
    *,
    k: int | None = 32,
    distance: object = "l2",
    space: Space = "z",
    method: Method = "auto",
    via: Via = "gram",
    oversample: int = 10,
    iters: int | None = None,
    tol: float = 1e-3,
    batch_size: int = 8,
    num_directions: int = 16,
    store_eigenvectors: bool = False,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: float = 60.0,
    progress: bool = True,
    precision: Precision = "fp32",
    chunk_size: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    z_dim: int | None = None,
    output_range: OutputRange | None = None,
    check_range: bool = True,
    resume_unverified: bool = False,
) -> ScanResult:
    """Spectra at ``num_points`` latent points, streamed (``tangentlens._streaming.stream``).

    Point i is ``z_i = philox_normal(seed, i, 1, z_dim)`` (mapped to w / w+ for those spaces) and its random
    start block is row i of another counter stream, so every row's inputs depend only on (seed, i): other
    batch sizes give the same rows up to float rounding (the kernels round differently per batch shape),
    the same batch size gives them bit for bit, on any number of processes (torch.distributed ranks share
    the work) and when resumed from ``checkpoint`` (written atomically every ``checkpoint_every`` seconds;
    it refuses another configuration, generator or distance, compared by fingerprint, and one whose
    fingerprint cannot be computed reliably unless ``resume_unverified=True``). ``generator`` is anything
    :func:`tangentlens.generators.as_generator` takes (a plain callable z -> tensor needs ``z_dim``; its
    image range is ``output_range``, default ``"-1_1"``). Other arguments as :func:`spectrum`
    (``check_range`` warns at most once per run); ``num_directions`` fixed random unit directions give the
    exact quadratic forms ``vᵀ M v`` per point for :func:`consistency`; ``dtype`` / ``device`` default to
    the generator's parameters'.
    """
    _check_int(num_points, "num_points", 1)
    _check_int(batch_size, "batch_size", 1)
    _check_int(num_directions, "num_directions", 0)
    check_u64(seed, "seed")
    check_bool(store_eigenvectors, "store_eigenvectors")
    check_bool(check_range, "check_range")
    check_bool(resume_unverified, "resume_unverified")
    checkpoint_every = check_number(checkpoint_every, "checkpoint_every", 0)
    if isinstance(distance, str) and distance != "l2":
        from tangentlens.distances import make_distance

        distance = make_distance(distance)
    if z_dim is not None:
        z_dim = _check_int(z_dim, "z_dim", 1)
    op = _Operator(
        _generator(generator, z_dim, output_range, None), distance, space, precision, chunk_size, z_dim=z_dim
    )
    ad = op.adapter
    monitor = RangeMonitor(ad.output_range, check_range)
    d = op.dim
    kk = d if k is None else _check_int(k, "k", 1, d)
    dtype = dtype or ad.dtype
    device = torch.device(device) if device is not None else ad.device
    directions = torch.zeros(0, d, dtype=torch.float64)
    if num_directions:
        directions = ops.philox_normal(
            seed, 0, num_directions, d, stream=STREAM_DIRECTIONS, dtype=torch.float64
        )
        directions = directions / directions.norm(dim=1, keepdim=True)

    def points(start: int, count: int) -> torch.Tensor:
        z = ops.philox_normal(seed, start, count, ad.z_dim, stream=STREAM_LATENT, dtype=dtype, device=device)
        if space == "z":
            return z
        with torch.no_grad():
            ws = ad.mapping(z, None)
        return ws[:, 0] if space == "w" else ws.flatten(1)

    @_ranges_checked_here
    def compute(start: int, count: int) -> dict[str, torch.Tensor]:
        x = points(start, count)
        sp = _spectrum(op, x, monitor, kk, method, via, oversample, iters, tol, seed, None, start)
        if num_directions == 0:
            qf = torch.zeros(count, 0, dtype=torch.float64)
        elif sp.metric is not None:
            qf = sp.quadratic_forms(directions)
        else:
            qf = op.sqnorms(x, directions.to(x.device, x.dtype).expand(count, -1, -1).contiguous())
        its = sp.iterations if sp.iterations is not None else torch.zeros(count, dtype=torch.int64)
        rows = {
            "eigenvalues": sp.eigenvalues,
            "error_bounds": sp.error_bounds,
            "iterations": its,
            "quadratic_forms": qf,
            **{f"stat.{n}": v for n, v in sp.stats().items()},
        }
        if store_eigenvectors:
            rows["eigenvectors"] = sp.eigenvectors
        return {n: v.cpu() for n, v in rows.items()}

    identity, unverified = run_identity(ad, distance)
    config = {
        "kind": "tangentlens.spectra.scan",
        **identity,
        "seed": seed,
        "k": kk,
        "space": space,
        "method": method,
        "via": via,
        "oversample": oversample,
        "iters": iters,
        "tol": tol,
        "precision": precision,
        "num_directions": num_directions,
        "store_eigenvectors": store_eigenvectors,
        "dtype": str(dtype),
    }
    from tangentlens._streaming import stream

    res = stream(
        compute,
        num_samples=num_points,
        batch_size=batch_size,
        config=config,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        progress=progress,
        desc="tangentlens spectrum",
        device=device,
        unverified=unverified,
        resume_unverified=resume_unverified,
    )
    return ScanResult._from_rows(config, res.rows, res.resumed_from, res.seconds)
