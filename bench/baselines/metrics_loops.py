"""Loop implementations of the disentanglement metrics: the obvious code, one pair at a time.

They follow the definitions in SPEC section 7 literally (per-column ``np.histogram`` + ``np.digitize``,
``sklearn.metrics.mutual_info_score`` per (code, factor) pair, a loop over factor values with
``np.percentile`` for IRS, one representation call per sample for BetaVAE / FactorVAE). They are the
baseline of ``bench/cases/metrics.py`` and the independent oracle of ``tests/test_metrics.py``.
Arrays are ``[N, C]`` / ``[N, F]`` like the package API.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.stats
from sklearn import ensemble, linear_model, svm
from sklearn.metrics import mutual_info_score, roc_auc_score


def discretize(x: np.ndarray, num_bins: int = 20) -> np.ndarray:
    out = np.zeros(x.shape, dtype=np.int64)
    for i in range(x.shape[1]):
        edges = np.histogram(x[:, i], num_bins)[1]
        out[:, i] = np.digitize(x[:, i], edges[:-1])
    return out


def mi_matrix(codes: np.ndarray, factors: np.ndarray, num_bins: int = 20) -> np.ndarray:
    d = discretize(codes, num_bins)
    m = np.zeros((codes.shape[1], factors.shape[1]))
    for i in range(codes.shape[1]):
        for j in range(factors.shape[1]):
            m[i, j] = mutual_info_score(factors[:, j], d[:, i])
    return m


def entropy(factors: np.ndarray) -> np.ndarray:
    return np.array([mutual_info_score(factors[:, j], factors[:, j]) for j in range(factors.shape[1])])


def mig(codes: np.ndarray, factors: np.ndarray, num_bins: int = 20) -> float:
    m = mi_matrix(codes, factors, num_bins)
    h = entropy(factors)
    gaps = []
    for j in range(factors.shape[1]):
        col = np.sort(m[:, j])
        gaps.append((col[-1] - col[-2]) / h[j])
    return float(np.mean(gaps))


def sap(codes, factors, codes_test=None, factors_test=None, continuous_factors=False) -> float:
    nc, nf = codes.shape[1], factors.shape[1]
    score = np.zeros((nc, nf))
    for i in range(nc):
        for j in range(nf):
            if continuous_factors:
                cov = np.cov(codes[:, i], factors[:, j], ddof=1)
                score[i, j] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1]) if cov[0, 0] > 1e-12 else 0.0
            else:
                clf = svm.LinearSVC(C=0.01, class_weight="balanced")
                clf.fit(codes[:, i : i + 1], factors[:, j])
                score[i, j] = np.mean(clf.predict(codes_test[:, i : i + 1]) == factors_test[:, j])
    s = np.sort(score, axis=0)
    return float(np.mean(s[-1] - s[-2]))


def dci(codes, factors, codes_test, factors_test, seed: int) -> dict[str, float]:
    nc, nf = codes.shape[1], factors.shape[1]
    imp = np.zeros((nc, nf))
    tr, te = [], []
    for j in range(nf):
        model = ensemble.GradientBoostingClassifier(random_state=seed).fit(codes, factors[:, j])
        imp[:, j] = np.abs(model.feature_importances_)
        tr.append(np.mean(model.predict(codes) == factors[:, j]))
        te.append(np.mean(model.predict(codes_test) == factors_test[:, j]))
    per_code = 1.0 - scipy.stats.entropy(imp.T + 1e-11, base=nf)
    per_factor = 1.0 - scipy.stats.entropy(imp + 1e-11, base=nc)
    w = imp if imp.sum() > 0 else np.ones_like(imp)
    return {
        "disentanglement": float(np.sum(per_code * w.sum(axis=1) / w.sum())),
        "completeness": float(np.sum(per_factor * w.sum(axis=0) / w.sum())),
        "informativeness_train": float(np.mean(tr)),
        "informativeness_test": float(np.mean(te)),
    }


def modularity(codes: np.ndarray, factors: np.ndarray, num_bins: int = 20) -> float:
    m = mi_matrix(codes, factors, num_bins)
    scores = []
    for i in range(m.shape[0]):
        sq = m[i] ** 2
        top = sq.max()
        scores.append(0.0 if top == 0 else 1.0 - (sq.sum() - top) / (top * (len(sq) - 1)))
    return float(np.mean(scores))


def explicitness(codes, factors, codes_test, factors_test) -> dict[str, float]:
    mean, std = codes.mean(axis=0), codes.std(axis=0)
    x, xt = (codes - mean) / std, (codes_test - mean) / std
    tr, te = [], []
    for j in range(factors.shape[1]):
        clf = linear_model.LogisticRegression().fit(x, factors[:, j])
        classes = np.unique(factors[:, j])
        tr.append(roc_auc_score(factors[:, j][:, None] == classes, clf.predict_proba(x)))
        te.append(roc_auc_score(factors_test[:, j][:, None] == classes, clf.predict_proba(xt)))
    return {"explicitness_score_train": float(np.mean(tr)), "explicitness_score_test": float(np.mean(te))}


def irs(codes: np.ndarray, factors: np.ndarray, diff_quantile: float = 0.99, num_bins: int = 20) -> float:
    fd = discretize(factors, num_bins)
    lat = codes[:, codes.std(axis=0) > 0]
    if lat.shape[1] == 0:
        return 0.0
    max_dev = np.max(np.abs(lat - lat.mean(axis=0)), axis=0)
    cum = np.zeros((lat.shape[1], fd.shape[1]))
    for j in range(fd.shape[1]):
        values = np.unique(fd[:, j])
        for v in values:
            group = lat[fd[:, j] == v]
            cum[:, j] += np.percentile(np.abs(group - group.mean(axis=0)), q=diff_quantile * 100, axis=0)
        cum[:, j] /= len(values)
    scores = (1.0 - cum / max_dev[:, None]).max(axis=1)
    return float(np.average(scores, weights=max_dev)) if max_dev.sum() > 0 else float(np.mean(scores))


def unsupervised(codes: np.ndarray, num_bins: int = 20) -> dict[str, float]:
    cov = np.cov(codes, rowvar=False)
    tc = 0.5 * (np.sum(np.log(np.diag(cov))) - np.linalg.slogdet(cov)[1])
    root = scipy.linalg.sqrtm(cov * np.diag(cov)[:, None])
    gwc = float(2 * np.trace(cov) - 2 * np.real(np.trace(root)))
    d = discretize(codes, num_bins)
    nc = codes.shape[1]
    total = 0.0
    for i in range(nc):
        for k in range(nc):
            if i != k:
                total += mutual_info_score(d[:, i], d[:, k])
    return {
        "gaussian_total_correlation": float(tc),
        "gaussian_wasserstein_correlation": gwc,
        "gaussian_wasserstein_correlation_norm": gwc / float(np.trace(cov)),
        "mutual_info_score": total / (nc * nc - nc),
    }


def beta_vae(sampler, rep, random_state, batch_size=64, num_train=10_000, num_eval=5_000) -> dict[str, float]:
    rs = random_state

    def points(num):
        x = []
        y = np.zeros(num, dtype=np.int64)
        for i in range(num):
            k = rs.randint(sampler.num_factors)
            f1 = sampler.sample_factors(batch_size, rs)
            f2 = sampler.sample_factors(batch_size, rs)
            f2[:, k] = f1[:, k]
            r1 = rep(sampler.sample_observations_from_factors(f1, rs))
            r2 = rep(sampler.sample_observations_from_factors(f2, rs))
            x.append(np.mean(np.abs(r1 - r2), axis=0))
            y[i] = k
        return np.array(x), y

    x, y = points(num_train)
    model = linear_model.LogisticRegression(random_state=rs).fit(x, y)
    train = float(np.mean(model.predict(x) == y))
    xe, ye = points(num_eval)
    return {"train_accuracy": train, "eval_accuracy": float(np.mean(model.predict(xe) == ye))}


def factor_vae(
    sampler, rep, random_state, batch_size=64, num_train=10_000, num_eval=5_000, num_variance_estimate=10_000
) -> dict[str, float]:
    rs = random_state
    f0 = sampler.sample_factors(num_variance_estimate, rs)
    global_var = np.var(rep(sampler.sample_observations_from_factors(f0, rs)), axis=0, ddof=1)
    active = np.sqrt(global_var) >= 0.05
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0}

    def votes(num):
        table = np.zeros((sampler.num_factors, global_var.shape[0]), dtype=np.int64)
        for _ in range(num):
            k = rs.randint(sampler.num_factors)
            f = sampler.sample_factors(batch_size, rs)
            f[:, k] = f[0, k]
            local = np.var(rep(sampler.sample_observations_from_factors(f, rs)), axis=0, ddof=1)
            table[k, np.argmin(local[active] / global_var[active])] += 1
        return table

    tv = votes(num_train)
    cls = np.argmax(tv, axis=0)
    cols = np.arange(tv.shape[1])
    train = tv[cls, cols].sum() / tv.sum()
    ev = votes(num_eval)
    return {"train_accuracy": float(train), "eval_accuracy": float(ev[cls, cols].sum() / ev.sum())}
