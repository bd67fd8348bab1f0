"""Supervised disentanglement metrics with disentanglement_lib semantics (SPEC section 7).

Functional API on ``codes [N, C]`` / ``factors [N, F]`` arrays (numpy or torch), sampler-based BetaVAE and
FactorVAE scores, and accumulating ``update``/``compute`` classes. Requires scikit-learn for the classifier
metrics (``pip install tangentlens[metrics]``); the MI-based metrics need numpy only.
"""

from __future__ import annotations

from tangentlens.metrics._discretize import (
    ContinuousFactorsWarning,
    discrete_entropy,
    histogram_discretize,
    mutual_info_matrix,
)
from tangentlens.metrics.classes import (
    DCI,
    HAVE_TORCHMETRICS,
    IRS,
    MIG,
    SAP,
    Explicitness,
    Modularity,
    UnsupervisedScores,
)
from tangentlens.metrics.functional import (
    AccuracyResult,
    DCIResult,
    ExplicitnessResult,
    FactorVAEResult,
    beta_vae_score,
    dci,
    dci_from_importance,
    explicitness,
    factor_vae_score,
    gaussian_total_correlation,
    gaussian_wasserstein_correlation,
    irs,
    mig,
    modularity,
    mutual_info_score,
    sap,
    unsupervised_scores,
)
from tangentlens.metrics.sampler import (
    GroundTruthSampler,
    SyntheticSampler,
    as_random_state,
    sample_codes_and_factors,
)

__all__ = [
    "DCI",
    "HAVE_TORCHMETRICS",
    "IRS",
    "MIG",
    "SAP",
    "AccuracyResult",
    "ContinuousFactorsWarning",
    "DCIResult",
    "Explicitness",
    "ExplicitnessResult",
    "FactorVAEResult",
    "GroundTruthSampler",
    "Modularity",
    "SyntheticSampler",
    "UnsupervisedScores",
    "as_random_state",
    "beta_vae_score",
    "dci",
    "dci_from_importance",
    "discrete_entropy",
    "explicitness",
    "factor_vae_score",
    "gaussian_total_correlation",
    "gaussian_wasserstein_correlation",
    "histogram_discretize",
    "irs",
    "mig",
    "modularity",
    "mutual_info_matrix",
    "mutual_info_score",
    "sample_codes_and_factors",
    "sap",
    "unsupervised_scores",
]
