"""Supervised (and Gaussian unsupervised) disentanglement metrics on arrays.

Inputs are ``codes [N, C]`` (the representation, usually the encoder mean) and ``factors [N, F]``
(ground-truth factor values, used as discrete labels). numpy arrays and torch tensors are accepted;
everything is computed in float64. Defaults follow the disentanglement_lib study defaults (SPEC
section 7) so numbers are comparable with the literature: 20 equal-width histogram bins, plug-in MI in
nats, sklearn classifiers with the same hyper-parameters, ``np.random.RandomState(0)`` per metric.

Degenerate input, decided once for all metrics:

* NaN / inf anywhere, wrong rank, mismatched row counts -> ``ValueError`` naming the argument.
* A constant code lands in a single histogram bin, so its MI with anything is 0 (MIG, modularity, mean
  pairwise MI); SAP-continuous scores it 0; explicitness standardises it to 0; IRS drops it (as the
  reference does). Gaussian total correlation raises (log of a zero variance).
* A factor with a single value has entropy 0: MIG raises, and so do the classifier metrics (SAP, DCI,
  explicitness), which cannot fit one class. SAP-continuous raises (zero variance).
* Factor values that look continuous (more than half the rows, and more than 20, distinct in a column)
  given to a metric that takes them as labels (MIG, modularity, SAP discrete, DCI, explicitness) get a
  ``ContinuousFactorsWarning`` saying to discretise them (IRS discretises factors itself).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tangentlens.metrics._discretize import (
    _discretize,
    _entropy,
    _mi_codes_factors,
    _mi_from_labels,
    as_array,
    check_discrete_factors,
    check_same_cols,
    check_same_rows,
    encode_labels,
)
from tangentlens.metrics.sampler import GroundTruthSampler, RandomStateLike, as_random_state

__all__ = [
    "AccuracyResult",
    "DCIResult",
    "ExplicitnessResult",
    "FactorVAEResult",
    "beta_vae_score",
    "dci",
    "explicitness",
    "factor_vae_score",
    "gaussian_total_correlation",
    "gaussian_wasserstein_correlation",
    "irs",
    "mig",
    "modularity",
    "mutual_info_score",
    "sap",
    "unsupervised_scores",
]

RepresentationFunction = Callable[[Any], Any]
_SINGULAR_TOL = 1e-12


# ----------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class DCIResult:
    """DCI (Eastwood & Williams) scores; ``importance_matrix`` is ``[C, F]``."""

    disentanglement: float
    completeness: float
    informativeness_train: float
    informativeness_test: float
    importance_matrix: np.ndarray

    def as_dict(self) -> dict[str, float]:
        """The scalar scores under disentanglement_lib's result keys."""
        d = asdict(self)
        d.pop("importance_matrix")
        return d


@dataclass(frozen=True)
class ExplicitnessResult:
    """Mean over factors of the macro one-vs-rest ROC-AUC of a logistic regression on all codes."""

    explicitness_score_train: float
    explicitness_score_test: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class AccuracyResult:
    """Train / eval accuracy of a classifier-based metric (BetaVAE)."""

    train_accuracy: float
    eval_accuracy: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class FactorVAEResult:
    """FactorVAE metric. ``num_active_dims`` counts the codes kept after pruning (the reference reports the
    total number of codes under this key, an off-by-design quirk; here it is the actual count)."""

    train_accuracy: float
    eval_accuracy: float
    num_active_dims: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


# ----------------------------------------------------------------------------------------------- helpers
def _check_bins(num_bins: int) -> int:
    if not isinstance(num_bins, (int, np.integer)) or isinstance(num_bins, bool) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive integer; got {num_bins!r}")
    return int(num_bins)


def _pair(codes: Any, factors: Any, suffix: str = "") -> tuple[np.ndarray, np.ndarray]:
    c = as_array(codes, "codes" + suffix)
    f = as_array(factors, "factors" + suffix)
    check_same_rows(c, "codes" + suffix, f, "factors" + suffix)
    return c, f


def _train_test(
    codes: Any, factors: Any, codes_test: Any, factors_test: Any, metric: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    c, f = _pair(codes, factors)
    if codes_test is None or factors_test is None:
        raise ValueError(
            f"{metric} needs a held-out split: pass codes_test and factors_test "
            "(disentanglement_lib draws 5 000 test points after the 10 000 training points)"
        )
    ct, ft = _pair(codes_test, factors_test, "_test")
    check_same_cols(c, "codes", ct, "codes_test")
    check_same_cols(f, "factors", ft, "factors_test")
    return c, f, ct, ft


def _require_varying_factors(f: np.ndarray, metric: str, why: str) -> None:
    const = np.flatnonzero(np.ptp(f, axis=0) == 0)
    if const.size:
        raise ValueError(
            f"{metric}: factors column {int(const[0])} has a single value ({float(f[0, const[0]])!r}); {why}"
        )


def _seed_from(random_state: RandomStateLike) -> int:
    """An int seed for sklearn estimators, drawn from the metric's RandomState (deterministic)."""
    return int(as_random_state(random_state).randint(2**31 - 1))


# ----------------------------------------------------------------------------------------------- MIG
def mig(codes: Any, factors: Any, *, num_bins: int = 20) -> float:
    """Mutual Information Gap (Chen et al. 2018), disentanglement_lib's ``discrete_mig``.

    Mean over factors of ``(MI_top1 - MI_top2) / H(factor)``, MI between histogram-discretised codes
    (``num_bins`` equal-width bins) and factor labels, plug-in estimator in nats. Needs at least two codes;
    raises on a factor with a single value (entropy 0, the ratio is undefined).
    """
    c, f = _pair(codes, factors)
    num_bins = _check_bins(num_bins)
    if c.shape[1] < 2:
        raise ValueError(f"mig needs at least 2 codes (the gap between the top two); got codes {c.shape}")
    _require_varying_factors(f, "mig", "its entropy is 0 and the normalised gap is undefined")
    check_discrete_factors(f, "mig")
    m = _mi_codes_factors(c, f, num_bins)
    top = np.sort(m, axis=0)
    return float(np.mean((top[-1] - top[-2]) / _entropy(f)))


# ----------------------------------------------------------------------------------------------- SAP
def sap(
    codes: Any,
    factors: Any,
    codes_test: Any = None,
    factors_test: Any = None,
    *,
    continuous_factors: bool = False,
    svc_c: float = 0.01,
    max_iter: int = 1000,
) -> float:
    """Separated Attribute Predictability (Kumar et al. 2018), disentanglement_lib's ``SAP_score``.

    Score matrix ``[C, F]``; the result is the mean over factors of the gap between its two best codes.

    * ``continuous_factors=False`` (study default): entry = test accuracy of
      ``LinearSVC(C=svc_c, class_weight="balanced")`` trained on that single code. Needs the test split.
    * ``continuous_factors=True``: entry = squared Pearson correlation on the training data (codes with
      variance <= 1e-12 score 0); the test split is ignored.
    """
    if continuous_factors:
        c, f = _pair(codes, factors)
    else:
        c, f, ct, ft = _train_test(codes, factors, codes_test, factors_test, "sap (discrete factors)")
    if c.shape[1] < 2:
        raise ValueError(f"sap needs at least 2 codes (the gap between the top two); got codes {c.shape}")
    if continuous_factors:
        _require_varying_factors(f, "sap", "its variance is 0 and the correlation is undefined")
        score = _sap_continuous_matrix(c, f)
    else:
        _require_varying_factors(f, "sap", "a classifier cannot be trained on one class")
        check_discrete_factors(f, "sap", ", or pass continuous_factors=True")
        score = _sap_discrete_matrix(c, f, ct, ft, svc_c, max_iter)
    top = np.sort(score, axis=0)
    return float(np.mean(top[-1] - top[-2]))


def _sap_continuous_matrix(c: np.ndarray, f: np.ndarray) -> np.ndarray:
    n = c.shape[0]
    cc = c - c.mean(axis=0)
    fc = f - f.mean(axis=0)
    var_c = np.einsum("ni,ni->i", cc, cc) / (n - 1)
    var_f = np.einsum("nj,nj->j", fc, fc) / (n - 1)
    cov = cc.T @ fc / (n - 1)
    score = cov**2 / (np.where(var_c > 1e-12, var_c, 1.0)[:, None] * var_f[None, :])
    score[var_c <= 1e-12, :] = 0.0  # a (numerically) constant code predicts nothing
    return score


def _sap_discrete_matrix(
    c: np.ndarray, f: np.ndarray, ct: np.ndarray, ft: np.ndarray, svc_c: float, max_iter: int
) -> np.ndarray:
    from sklearn.svm import LinearSVC

    (fl, ftl), _ = encode_labels(f, ft)
    score = np.zeros((c.shape[1], f.shape[1]))
    # One classifier per (code, factor) pair is the definition; the fits themselves are the cost.
    for i in range(c.shape[1]):
        x, xt = c[:, i : i + 1], ct[:, i : i + 1]
        for j in range(f.shape[1]):
            clf = LinearSVC(C=svc_c, class_weight="balanced", max_iter=max_iter)
            clf.fit(x, fl[:, j])
            score[i, j] = np.mean(clf.predict(xt) == ftl[:, j])
    return score


# ----------------------------------------------------------------------------------------------- DCI
def _normalised_entropy(p: np.ndarray, axis: int, base: int) -> np.ndarray:
    """scipy.stats.entropy(p + 1e-11, base) along ``axis``; base 1 (one outcome) gives 0 by convention."""
    q = p + 1e-11
    q = q / q.sum(axis=axis, keepdims=True)
    h = -np.sum(q * np.log(q), axis=axis)
    if base <= 1:
        return np.zeros_like(h)
    return h / math.log(base)


def dci_from_importance(importance_matrix: Any) -> tuple[float, float]:
    """Disentanglement and completeness from an importance matrix ``[C, F]``.

    Disentanglement: per code ``1 - H_F(importance row)`` weighted by the code's share of total importance;
    completeness: per factor ``1 - H_C(importance column)`` weighted likewise (entropies with log base F
    and C; with one factor / one code the entropy is 0 by convention, the score 1). An all-zero matrix
    uses uniform weights, as the reference does.
    """
    r = as_array(importance_matrix, "importance_matrix", min_rows=1)
    if (r < 0).any():
        raise ValueError("importance_matrix must be non-negative; got a negative entry")
    per_code = 1.0 - _normalised_entropy(r, axis=1, base=r.shape[1])
    per_factor = 1.0 - _normalised_entropy(r, axis=0, base=r.shape[0])
    w = r if r.sum() > 0 else np.ones_like(r)
    d = float(np.sum(per_code * w.sum(axis=1) / w.sum()))
    c = float(np.sum(per_factor * w.sum(axis=0) / w.sum()))
    return d, c


def dci(
    codes: Any,
    factors: Any,
    codes_test: Any,
    factors_test: Any,
    *,
    random_state: RandomStateLike = 0,
    n_jobs: int | None = None,
    **gbt_kwargs: Any,
) -> DCIResult:
    """DCI disentanglement / completeness / informativeness (Eastwood & Williams 2018).

    One ``GradientBoostingClassifier`` (sklearn defaults, overridable via ``gbt_kwargs``) per factor on all
    codes; ``importance_matrix[:, j] = |feature_importances_|``. Informativeness = mean train / test accuracy.
    The reference leaves the trees' ``random_state`` unset (ties between features then vary run to run);
    here each tree gets a seed drawn from ``random_state`` so the result is deterministic. ``n_jobs`` fits
    the per-factor classifiers in parallel (same numbers).
    """
    c, f, ct, ft = _train_test(codes, factors, codes_test, factors_test, "dci")
    _require_varying_factors(f, "dci", "a classifier cannot be trained on one class")
    check_discrete_factors(f, "dci")
    (fl, ftl), _ = encode_labels(f, ft)
    seed = _seed_from(random_state)

    def fit_one(j: int) -> tuple[np.ndarray, float, float]:
        from sklearn.ensemble import GradientBoostingClassifier

        kw = {"random_state": seed, **gbt_kwargs}
        model = GradientBoostingClassifier(**kw).fit(c, fl[:, j])
        return (
            np.abs(model.feature_importances_),
            float(np.mean(model.predict(c) == fl[:, j])),
            float(np.mean(model.predict(ct) == ftl[:, j])),
        )

    if n_jobs is not None and n_jobs != 1:
        from joblib import Parallel, delayed

        # Threads: sklearn's tree builder releases the GIL, and no process start-up or pickling is paid.
        fits = Parallel(n_jobs=n_jobs, prefer="threads")(delayed(fit_one)(j) for j in range(f.shape[1]))
    else:
        fits = [fit_one(j) for j in range(f.shape[1])]
    importance = np.stack([r[0] for r in fits], axis=1)
    d, comp = dci_from_importance(importance)
    return DCIResult(
        disentanglement=d,
        completeness=comp,
        informativeness_train=float(np.mean([r[1] for r in fits])),
        informativeness_test=float(np.mean([r[2] for r in fits])),
        importance_matrix=importance,
    )


# ----------------------------------------------------------------------------------------------- modularity
def modularity(codes: Any, factors: Any, *, num_bins: int = 20) -> float:
    """Modularity (Ridgeway & Mozer 2018), disentanglement_lib's ``modularity_score``.

    Per code, with ``m`` its squared MI with each factor: ``1 - (sum(m) - max(m)) / (max(m) * (F - 1))``;
    a code whose MI is 0 with every factor scores 0; with a single factor every informative code scores 1.
    The result is the mean over codes.
    """
    c, f = _pair(codes, factors)
    check_discrete_factors(f, "modularity")
    m2 = np.square(_mi_codes_factors(c, f, _check_bins(num_bins)))
    top = m2.max(axis=1)
    if f.shape[1] == 1:
        delta = np.zeros_like(top)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            delta = (m2.sum(axis=1) - top) / (top * (f.shape[1] - 1.0))
    score = np.where(top == 0.0, 0.0, 1.0 - delta)
    return float(np.mean(score))


def explicitness(
    codes: Any,
    factors: Any,
    codes_test: Any,
    factors_test: Any,
    **logreg_kwargs: Any,
) -> ExplicitnessResult:
    """Explicitness (Ridgeway & Mozer 2018): per factor, ``LogisticRegression()`` (sklearn defaults,
    overridable) on all codes standardised with the training mean / std; score = macro ROC-AUC of the
    one-vs-rest class probabilities; mean over factors.

    A constant code (std 0) is standardised to 0 instead of dividing by zero. A class absent from one split
    has no ROC curve there; the macro average is then over the classes that are present (the reference
    fails in that case).
    """
    from sklearn.linear_model import LogisticRegression

    c, f, ct, ft = _train_test(codes, factors, codes_test, factors_test, "explicitness")
    _require_varying_factors(f, "explicitness", "a classifier cannot be trained on one class")
    check_discrete_factors(f, "explicitness")
    mean = c.mean(axis=0)
    std = c.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    x, xt = (c - mean) / std, (ct - mean) / std
    (fl, ftl), _ = encode_labels(f, ft)
    train, test = [], []
    for j in range(f.shape[1]):
        clf = LogisticRegression(**logreg_kwargs).fit(x, fl[:, j])
        train.append(_macro_auc(fl[:, j], clf.predict_proba(x), clf.classes_))
        test.append(_macro_auc(ftl[:, j], clf.predict_proba(xt), clf.classes_))
    return ExplicitnessResult(float(np.mean(train)), float(np.mean(test)))


def _macro_auc(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    onehot = (y[:, None] == classes[None, :]).astype(np.int64)
    present = (onehot.sum(axis=0) > 0) & (onehot.sum(axis=0) < len(y))
    if not present.any():
        raise ValueError("explicitness: a split holds a single factor value, ROC-AUC is undefined")
    return float(roc_auc_score(onehot[:, present], proba[:, present], average="macro"))


# ----------------------------------------------------------------------------------------------- IRS
def irs(codes: Any, factors: Any, *, diff_quantile: float = 0.99, num_bins: int = 20) -> float:
    """Interventional Robustness Score (Suter et al. 2019), disentanglement_lib's ``IRS``.

    Factors are histogram-discretised (``num_bins``). For each factor value group, the ``diff_quantile``
    quantile of ``|code - E[code | group]|``; averaged over the groups, divided by the code's maximal
    deviation from its mean; ``IRS[i, j] = 1 - that``. Per code the max over factors, averaged with
    weights = maximal deviations. Constant codes are dropped; with no varying code the score is 0
    (reference behaviour).
    """
    c, f = _pair(codes, factors)
    if not 0.0 <= diff_quantile <= 1.0:
        raise ValueError(f"diff_quantile must be in [0, 1]; got {diff_quantile!r}")
    fd = _discretize(f, _check_bins(num_bins))
    c = c[:, c.std(axis=0) > 0.0]
    if c.shape[1] == 0:
        return 0.0
    matrix, max_dev = _irs_matrix(c, fd, diff_quantile)
    scores = matrix.max(axis=1)
    if max_dev.sum() > 0.0:
        return float(np.average(scores, weights=max_dev))
    return float(np.mean(scores))


def _irs_matrix(c: np.ndarray, fd: np.ndarray, diff_quantile: float) -> tuple[np.ndarray, np.ndarray]:
    nc = c.shape[1]
    max_dev = np.max(np.abs(c - c.mean(axis=0)), axis=0)
    q = diff_quantile * 100.0 / 100.0  # the round trip np.percentile(q=100 * diff_quantile) makes
    ct = np.ascontiguousarray(c.T)  # [C, N]: every reduction below runs along contiguous rows
    cum = np.zeros((nc, fd.shape[1]))
    for j in range(fd.shape[1]):  # a loop over factors and their (<= num_bins) values, vectorised over codes
        _, g = np.unique(fd[:, j], return_inverse=True)
        g = g.reshape(-1)
        sizes = np.bincount(g)
        start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        grouped = ct[:, np.argsort(g, kind="stable")]  # rows grouped by factor value
        means = np.add.reduceat(grouped, start, axis=1) / sizes
        diffs = np.abs(grouped - np.repeat(means, sizes, axis=1))
        for s0, n in zip(start, sizes, strict=True):
            # Only two order statistics are needed: partition, not sort (as np.percentile does).
            pos = q * (n - 1)
            lo = int(math.floor(pos))
            hi = min(lo + 1, n - 1)
            part = np.partition(diffs[:, s0 : s0 + n], (lo, hi), axis=1)
            a, b, t = part[:, lo], part[:, hi], pos - lo
            # numpy's linear-interpolation lerp, including its t >= 0.5 branch, for identical rounding.
            cum[:, j] += b - (b - a) * (1.0 - t) if t >= 0.5 else a + (b - a) * t
        cum[:, j] /= sizes.size
    return 1.0 - cum / max_dev[:, None], max_dev


# ----------------------------------------------------------------------------------------------- unsupervised
def _covariance(codes: Any) -> np.ndarray:
    c = as_array(codes, "codes")
    return np.atleast_2d(np.cov(c, rowvar=False))


def gaussian_total_correlation(codes: Any) -> float:
    """Total correlation of a Gaussian with the codes' covariance Σ: ``½ (Σ_i log Σ_ii − log det Σ)`` (nats).

    0 for uncorrelated codes; ``inf`` when Σ is (numerically) singular with non-zero variances, i.e. the
    smallest eigenvalue of the correlation matrix is <= C * 1e-12 (e.g. a duplicated code: the codes are then
    deterministically dependent; the reference returns round-off noise there). Raises on a constant code
    (log of a zero variance).
    """
    cov = _covariance(codes)
    var = np.diag(cov)
    if (var <= 0).any():
        raise ValueError(
            f"codes column {int(np.flatnonzero(var <= 0)[0])} is constant; the Gaussian total correlation "
            "needs every code to vary (log of a zero variance)"
        )
    # Via the correlation matrix R (TC = -1/2 log det R): its eigenvalues are scale-free, so a numerically
    # singular R (a duplicated or affinely dependent code) is recognised instead of giving round-off noise.
    d = 1.0 / np.sqrt(var)
    eig = np.linalg.eigvalsh(d[:, None] * cov * d[None, :])
    if eig[0] <= _SINGULAR_TOL * cov.shape[0]:
        return math.inf
    return float(-0.5 * np.sum(np.log(eig)))


def gaussian_wasserstein_correlation(codes: Any, *, normalize: bool = False) -> float:
    """Squared 2-Wasserstein distance between N(0, Σ) and N(0, diag Σ): ``2 tr Σ − 2 tr (D Σ)^{1/2}``,
    ``D = diag Σ``. The trace of the square root is the sum of square roots of the eigenvalues of the
    symmetric ``D^{1/2} Σ D^{1/2}`` (same spectrum as ``D Σ``, and always real). ``normalize`` divides by
    ``tr Σ`` (disentanglement_lib's ``gaussian_wasserstein_correlation_norm``).
    """
    cov = _covariance(codes)
    d = np.sqrt(np.diag(cov))
    eig = np.linalg.eigvalsh(d[:, None] * cov * d[None, :])
    tr = float(np.trace(cov))
    value = 2.0 * tr - 2.0 * float(np.sum(np.sqrt(np.clip(eig, 0.0, None))))
    if normalize:
        if tr <= 0:
            raise ValueError("codes are all constant; the normalised Wasserstein correlation divides by 0")
        value /= tr
    return value


def mutual_info_score(codes: Any, *, num_bins: int = 20) -> float:
    """Mean pairwise plug-in MI (nats) between distinct histogram-discretised codes (off-diagonal mean).

    Not :func:`sklearn.metrics.mutual_info_score` (that one takes two label vectors): this is the
    disentanglement_lib unsupervised ``mutual_info_score`` of a whole representation. Needs 2 codes or more.
    """
    c = as_array(codes, "codes")
    num_bins = _check_bins(num_bins)
    nc = c.shape[1]
    if nc < 2:
        raise ValueError(f"mutual_info_score needs at least 2 codes; got codes {c.shape}")
    d = _discretize(c, num_bins) - 1
    sizes = np.full(nc, num_bins, dtype=np.int64)
    m = _mi_from_labels(d, sizes, d, sizes)
    np.fill_diagonal(m, 0.0)
    return float(m.sum() / (nc * nc - nc))


def unsupervised_scores(codes: Any, *, num_bins: int = 20) -> dict[str, float]:
    """All of disentanglement_lib's unsupervised scores under its result keys."""
    return {
        "gaussian_total_correlation": gaussian_total_correlation(codes),
        "gaussian_wasserstein_correlation": gaussian_wasserstein_correlation(codes),
        "gaussian_wasserstein_correlation_norm": gaussian_wasserstein_correlation(codes, normalize=True),
        "mutual_info_score": mutual_info_score(codes, num_bins=num_bins),
    }


# ------------------------------------------------------------------------------------------- sampler-based
def _check_sampler(sampler: GroundTruthSampler, name: str = "sampler") -> int:
    for attr in ("num_factors", "sample_factors", "sample_observations_from_factors"):
        if not hasattr(sampler, attr):
            raise TypeError(f"{name} must implement the GroundTruthSampler protocol; missing {attr!r}")
    nf = int(sampler.num_factors)
    if nf < 1:
        raise ValueError(f"{name}.num_factors must be >= 1; got {nf}")
    return nf


def _check_positive(**kw: int) -> None:
    for k, v in kw.items():
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{k} must be a positive integer; got {v!r}")


def _concat(obs: list[Any]) -> Any:
    first = obs[0]
    if hasattr(first, "detach"):  # torch tensors stay torch tensors for the representation function
        import torch

        return torch.cat(obs, dim=0)
    return np.concatenate(obs, axis=0)


def _represent_groups(
    representation_function: RepresentationFunction, groups: list[Any], sizes: list[int]
) -> list[np.ndarray]:
    """One representation call for several observation groups, split back per group."""
    reps = as_array(representation_function(_concat(groups)), "representation_function output", min_rows=1)
    if reps.shape[0] != sum(sizes):
        raise ValueError(
            f"representation_function must return one row per observation; got {reps.shape[0]} rows for "
            f"{sum(sizes)} observations"
        )
    return np.split(reps, np.cumsum(sizes)[:-1], axis=0)


def beta_vae_score(
    sampler: GroundTruthSampler,
    representation_function: RepresentationFunction,
    *,
    random_state: RandomStateLike = 0,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
    samples_per_call: int = 64,
    **logreg_kwargs: Any,
) -> AccuracyResult:
    """BetaVAE metric (Higgins et al. 2017), as disentanglement_lib's ``compute_beta_vae_sklearn``.

    Each point: a random factor index k; two batches of ``batch_size`` factor draws with factor k copied from
    the first to the second; feature = mean over the batch of ``|rep(obs1) - rep(obs2)|``; label = k. A
    ``LogisticRegression`` (sklearn defaults) is fit on ``num_train`` points; accuracy on those and on
    ``num_eval`` fresh points. The RandomState is consumed in the reference's order, so a sampler that
    draws the same way gives the same numbers; only the calls to ``representation_function`` are batched
    (``samples_per_call`` points per call), which assumes it maps rows independently (eval mode).
    """
    from sklearn.linear_model import LogisticRegression

    nf = _check_sampler(sampler)
    _check_positive(
        batch_size=batch_size, num_train=num_train, num_eval=num_eval, samples_per_call=samples_per_call
    )
    rs = as_random_state(random_state)

    def points(num: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.zeros(num, dtype=np.int64)
        feats: list[np.ndarray] = []
        for s in range(0, num, samples_per_call):
            groups: list[Any] = []
            for i in range(s, min(num, s + samples_per_call)):
                k = rs.randint(nf)
                f1 = np.asarray(sampler.sample_factors(batch_size, rs))
                f2 = np.array(sampler.sample_factors(batch_size, rs), copy=True)
                f2[:, k] = f1[:, k]
                groups.append(sampler.sample_observations_from_factors(f1, rs))
                groups.append(sampler.sample_observations_from_factors(f2, rs))
                labels[i] = k
            reps = _represent_groups(representation_function, groups, [batch_size] * len(groups))
            feats.extend(np.mean(np.abs(a - b), axis=0) for a, b in zip(reps[0::2], reps[1::2], strict=True))
        return np.stack(feats), labels

    x_train, y_train = points(num_train)
    if np.unique(y_train).size < 2:
        raise ValueError(
            f"beta_vae_score: all {num_train} training points fixed the same factor; "
            "increase num_train or use a sampler with num_factors >= 2"
        )
    model = LogisticRegression(random_state=rs, **logreg_kwargs).fit(x_train, y_train)
    train_acc = float(np.mean(model.predict(x_train) == y_train))
    x_eval, y_eval = points(num_eval)
    return AccuracyResult(train_acc, float(np.mean(model.predict(x_eval) == y_eval)))


def factor_vae_score(
    sampler: GroundTruthSampler,
    representation_function: RepresentationFunction,
    *,
    random_state: RandomStateLike = 0,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
    num_variance_estimate: int = 10_000,
    prune_threshold: float = 0.05,
    samples_per_call: int = 64,
) -> FactorVAEResult:
    """FactorVAE metric (Kim & Mnih 2018), as disentanglement_lib's ``compute_factor_vae``.

    Global per-code variance (ddof 1) from ``num_variance_estimate`` observations; codes with std below
    ``prune_threshold`` are pruned. Each point: a random factor k fixed (to the first draw's value) over a
    batch of ``batch_size``; the vote goes to the active code with the smallest variance / global variance.
    Classifier = majority vote per factor; accuracy on ``num_train`` and ``num_eval`` points. No active code
    gives accuracies 0 (reference behaviour). RNG order and batching as in :func:`beta_vae_score`.
    """
    nf = _check_sampler(sampler)
    _check_positive(
        batch_size=batch_size,
        num_train=num_train,
        num_eval=num_eval,
        num_variance_estimate=num_variance_estimate,
        samples_per_call=samples_per_call,
    )
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (a variance per batch); got {batch_size}")
    rs = as_random_state(random_state)
    f0 = sampler.sample_factors(num_variance_estimate, rs)
    obs = sampler.sample_observations_from_factors(f0, rs)
    reps = as_array(representation_function(obs), "representation_function output")
    global_var = np.var(reps, axis=0, ddof=1)
    active = np.sqrt(global_var) >= prune_threshold
    if not active.any():
        return FactorVAEResult(0.0, 0.0, 0)

    def votes(num: int) -> np.ndarray:
        table = np.zeros((nf, int(active.sum())), dtype=np.int64)
        for s in range(0, num, samples_per_call):
            groups, ks = [], []
            for _ in range(s, min(num, s + samples_per_call)):
                k = rs.randint(nf)
                f = np.array(sampler.sample_factors(batch_size, rs), copy=True)
                f[:, k] = f[0, k]
                groups.append(sampler.sample_observations_from_factors(f, rs))
                ks.append(k)
            local = np.stack(
                [
                    np.var(r, axis=0, ddof=1)
                    for r in _represent_groups(representation_function, groups, [batch_size] * len(groups))
                ]
            )
            arg = np.argmin(local[:, active] / global_var[active], axis=1)
            np.add.at(table, (np.asarray(ks), arg), 1)
        return table

    train_votes = votes(num_train)
    classifier = np.argmax(train_votes, axis=0)  # per active code: the factor it votes for most
    cols = np.arange(train_votes.shape[1])
    train_acc = float(train_votes[classifier, cols].sum() / train_votes.sum())
    eval_votes = votes(num_eval)
    eval_acc = float(eval_votes[classifier, cols].sum() / eval_votes.sum())
    return FactorVAEResult(train_acc, eval_acc, int(active.sum()))
