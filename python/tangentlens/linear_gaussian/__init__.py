"""Linear-Gaussian (γλ-)VAE study (SPEC §6).

The model, exactly as in the spec:

* data ``Y = Γ V + N``, ``V ~ N(0, Σ_V)``, ``N ~ N(0, σ² I_n)``, so ``Σ_Y = Γ Σ_V Γᵀ + σ² I``;
* encoder ``X = B Y + W``, ``W ~ N(0, Σ_W)`` (full SPD, or diagonal for the mean-field variant);
* decoder ``Ŷ = A X̂ + Z``, ``X̂ ~ N(0, I_m)``, ``Z ~ N(0, Σ_Z)`` with ``Σ_Z`` diagonal;
* loss ``L = ½[tr(BΣ_YBᵀ + Σ_W) − log|Σ_W| − m] − γ·E[log p(y|x)] + λ·E‖Y − AX‖²`` (the ``n/2·log 2π``
  of the Gaussian log-likelihood is included, so that at γ = 1, λ = 0 the loss is the negative ELBO).

:func:`solve` minimises it by alternating exact block minimisations (decoder, then encoder), batched over
restarts and the (γ, λ) grid. :func:`gaussian_mi`, :func:`gaussian_cmi`, :func:`total_correlation`,
:func:`im_score` and :func:`sap_score` evaluate a solution through the joint covariance of (X, V)
(``Cov(X) = BΣ_YBᵀ + Σ_W``, ``Cov(X, V) = BΓΣ_V``), and :func:`success_rates` produces the study table.

Derivation of the updates (all in closed form):

* decoder given (B, Σ_W): ``A`` enters only through ``tr(Q E)/2`` with ``E = E[(Y−AX)(Y−AX)ᵀ]`` and
  ``Q = γΣ_Z⁻¹ + 2λI`` positive definite, so ``A = Σ_YBᵀ(BΣ_YBᵀ + Σ_W)⁻¹`` whatever Q is; this equals
  the spec's ``P Bᵀ Σ_W⁻¹`` with ``P = (Σ_Y⁻¹ + BᵀΣ_W⁻¹B)⁻¹``, and at this A, ``E = P``; then
  ``Σ_Z = diag(diag P)``. ``P`` is evaluated in the Joseph form ``(I − AB)Σ_Y(I − AB)ᵀ + AΣ_WAᵀ``, which
  stays PSD when Σ_W is tiny.
* encoder given (A, Σ_Z), with ``M = I + AᵀQA``: ``B = M⁻¹AᵀQ`` (the B-part of the loss does not involve
  Σ_W); full ``Σ_W = M⁻¹``; mean-field ``Σ_W = diag(1 / diag M)`` (the minimiser of
  ``½tr(MΣ_W) − ½log|Σ_W|`` over diagonal Σ_W). By Hadamard's inequality the mean-field loss exceeds the
  full one by ``½(Σ log M_ii − log|M|)``, zero iff AᵀQA is diagonal: the mean-field optimum has
  Q-orthogonal decoder columns (Allen 2024; plain column orthogonality when Q ∝ I, e.g. γ = 0).

At γ > 1 the loss is unbounded below (a latent can copy one coordinate of Y exactly: Σ_W → 0 costs
``−½ log|Σ_W|`` but gains ``γ/2·log Σ_Z,ii``); such runs are reported as ``"diverging"``. At γ = 1 with
λ > 0 the infimum is approached only as Σ_W → 0, slowly: those runs typically end at ``"max_iters"``.

Named examples (SPEC §6 configurations (s, n, m) = (3, 4, 3) and (5, 5, 4), three scenarios each) are built
by :func:`named_scenarios` from the module constants below; change them there or pass keywords.
"""

from __future__ import annotations

from tangentlens.linear_gaussian._common import IndefiniteQError
from tangentlens.linear_gaussian.information import gaussian_cmi, gaussian_mi, total_correlation
from tangentlens.linear_gaussian.metrics import (
    MAX_ASSIGNMENTS,
    METRIC_PROTOCOLS,
    SAP_TIE_TOL,
    ImResult,
    SapResult,
    im_score,
    sap_score,
)
from tangentlens.linear_gaussian.scenarios import (
    CONFIGURATIONS,
    DEFAULT_COEF,
    DEFAULT_COEF2,
    DEFAULT_FACTOR_NOISE_DECAY,
    DEFAULT_GAMMA_ROWS,
    DEFAULT_SIGMA2,
    Scenario,
    named_scenarios,
    parse_configuration,
)
from tangentlens.linear_gaussian.solver import (
    STATUSES,
    SolveResult,
    _random_init,  # noqa: F401  (kept importable from here)
    decoder_update,
    encoder_update,
    joint_covariance,
    solve,
    vae_objective,
)
from tangentlens.linear_gaussian.study import SuccessTable, success_rates
from tangentlens.linear_gaussian.vu2024_protocol import (
    VU2024,
    Vu2024Config,
    Vu2024Result,
    vu2024,
    vu2024_scenarios,
)

__all__ = [
    "CONFIGURATIONS",
    "DEFAULT_COEF",
    "DEFAULT_COEF2",
    "DEFAULT_FACTOR_NOISE_DECAY",
    "DEFAULT_GAMMA_ROWS",
    "DEFAULT_SIGMA2",
    "MAX_ASSIGNMENTS",
    "METRIC_PROTOCOLS",
    "SAP_TIE_TOL",
    "STATUSES",
    "VU2024",
    "ImResult",
    "IndefiniteQError",
    "SapResult",
    "Scenario",
    "SolveResult",
    "SuccessTable",
    "Vu2024Config",
    "Vu2024Result",
    "decoder_update",
    "encoder_update",
    "gaussian_cmi",
    "gaussian_mi",
    "im_score",
    "joint_covariance",
    "named_scenarios",
    "parse_configuration",
    "sap_score",
    "solve",
    "success_rates",
    "total_correlation",
    "vae_objective",
    "vu2024",
    "vu2024_scenarios",
]
