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

from tangentlens.spectra.estimators import Estimate, off_diagonal_energy, trace
from tangentlens.spectra.scan import ScanResult, scan
from tangentlens.spectra.solve import (
    STREAM_DIRECTIONS,
    STREAM_LATENT,
    STREAM_PROBE,
    STREAM_START,
    Spectrum,
    spectrum,
)
from tangentlens.spectra.statistics import aggregate, consistency, grassmann_distance, stats

__all__ = [
    "STREAM_DIRECTIONS",
    "STREAM_LATENT",
    "STREAM_PROBE",
    "STREAM_START",
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
