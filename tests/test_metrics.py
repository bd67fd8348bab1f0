"""Tests of tangentlens.metrics: hand-computed small cases, parity with the straightforward loop
implementations (bench/baselines/metrics_loops.py, which call sklearn per pair), the ordering of scores on
synthetic ground truth, and the handling of degenerate input."""

from __future__ import annotations

import importlib.util
import math
import os
import warnings

import numpy as np
import pytest

import tangentlens.metrics as M

sklearn = pytest.importorskip("sklearn")
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.metrics import mutual_info_score as sk_mi  # noqa: E402

_LOOPS = os.path.join(os.path.dirname(__file__), "..", "bench", "baselines", "metrics_loops.py")
_spec = importlib.util.spec_from_file_location("metrics_loops", _LOOPS)
L = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(L)

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

SIZES = (3, 4, 5)


def _factors(rs: np.random.RandomState, n: int, sizes=SIZES) -> np.ndarray:
    return np.stack([rs.randint(0, k, n) for k in sizes], axis=1)


def _representations(n: int = 3000, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Synthetic ground truth and five encodings of it, from most to least disentangled."""
    rs = np.random.RandomState(seed)
    f = _factors(rs, n)
    z = f / (np.array(SIZES) - 1.0) + 0.05 * rs.randn(n, len(SIZES))  # identity code + a little noise
    q, _ = np.linalg.qr(rs.randn(3, 3))
    return {
        "identity": (z, f),
        "perm_scale": (z[:, [2, 0, 1]] * np.array([3.0, -0.5, 7.0]), f),
        "rotation": (z @ q, f),
        "duplication": (np.concatenate([z, z * 2.0 + 1.0], axis=1), f),
        "noise": (rs.randn(n, 3), f),
    }


@pytest.fixture(scope="module")
def reps() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return _representations()


@pytest.fixture(scope="module")
def split() -> tuple[np.ndarray, ...]:
    """A noisy (not perfectly decodable) train / test pair for the classifier metrics."""
    rs = np.random.RandomState(1)
    f, ft = _factors(rs, 900), _factors(rs, 450)
    mix = np.array([[1.0, 0.3, 0.0], [0.0, 1.0, 0.5], [0.2, 0.0, 1.0], [0.0, 0.0, 0.0]])

    def enc(fa):
        z = fa / (np.array(SIZES) - 1.0)
        return z @ mix.T + 0.3 * rs.randn(len(fa), 4)

    return enc(f), f, enc(ft), ft


# ----------------------------------------------------------------------------- discretisation and MI
def test_discretize_matches_histogram_digitize_exactly():
    rs = np.random.RandomState(3)
    x = np.concatenate(
        [rs.randn(500, 2) * 1e3, np.round(rs.randn(500, 2), 1), np.full((500, 1), 2.5), rs.rand(500, 1)],
        axis=1,
    )
    x[0, 5] = 1.0  # exactly on an edge of the unit-range column
    x[1, 5] = 0.0
    for bins in (1, 2, 7, 20):
        ours = M.histogram_discretize(x, bins)
        assert np.array_equal(ours, L.discretize(x, bins))
    # A constant code lands in one bin (histogram widens it to [v - 0.5, v + 0.5]).
    assert np.unique(M.histogram_discretize(x, 20)[:, 4]).tolist() == [11]


def test_mi_small_case_by_hand():
    codes = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 3.0]])
    factors = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    m = M.mutual_info_matrix(codes, factors, num_bins=2)
    # code 0 -> bins (1,1,2,2) = factor 0 exactly: MI = log 2; independent of factor 1: MI = 0.
    # code 1 -> bins (1,1,1,2); with factor 0: cells (1,0):2, (1,1):1, (2,1):1 of 4.
    mi_10 = 0.5 * math.log(0.5 / (0.75 * 0.5)) + 0.25 * math.log(0.25 / (0.75 * 0.5)) + 0.25 * math.log(2.0)
    # with factor 1 = (0,1,0,1): cells (1,0):2, (1,1):1, (2,1):1 as well, by symmetry of the counts.
    expected = np.array([[math.log(2.0), 0.0], [mi_10, mi_10]])
    np.testing.assert_allclose(m, expected, rtol=1e-12, atol=1e-15)
    h = M.discrete_entropy(np.array([[0], [0], [0], [1]]))
    np.testing.assert_allclose(h, [-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))], rtol=1e-12)


@pytest.mark.filterwarnings("ignore:Clustering metrics expects discrete values")
def test_mi_matrix_matches_sklearn_per_pair():
    rs = np.random.RandomState(4)
    codes = rs.randn(700, 6) * rs.rand(6)
    codes[:, 3] = np.round(codes[:, 3], 1)
    factors = np.stack([rs.randint(0, 7, 700), rs.randint(0, 2, 700) * 10 - 3, rs.rand(700).round(1)], 1)
    ours = M.mutual_info_matrix(codes, factors)
    d = L.discretize(codes)
    ref = np.array([[sk_mi(factors[:, j], d[:, i]) for j in range(3)] for i in range(6)])
    np.testing.assert_allclose(ours, ref, rtol=1e-11, atol=1e-14)
    assert ours.min() > 0  # every pair has some (plug-in, biased) MI: the comparison is not on zeros


# ----------------------------------------------------------------------------- MIG
def test_mig_small_case_by_hand():
    codes = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 3.0]])
    factors = np.array([[0], [0], [1], [1]])
    mi_1 = 0.5 * math.log(0.5 / 0.375) + 0.25 * math.log(0.25 / 0.375) + 0.25 * math.log(2.0)
    assert M.mig(codes, factors, num_bins=2) == pytest.approx(
        (math.log(2.0) - mi_1) / math.log(2.0), rel=1e-12
    )


def test_mig_orders_synthetic_ground_truth(reps):
    s = {k: M.mig(*v) for k, v in reps.items()}
    assert s["identity"] > 0.7
    assert s["perm_scale"] == pytest.approx(s["identity"], abs=1e-12)  # MI is invariant to both
    assert s["identity"] > s["rotation"] + 0.2
    assert s["duplication"] < 0.05 and s["noise"] < 0.05  # a duplicated code leaves no gap


def test_mig_parity_with_loop(reps):
    for codes, factors in reps.values():
        assert M.mig(codes, factors) == pytest.approx(L.mig(codes, factors), rel=1e-12, abs=1e-14)


# ----------------------------------------------------------------------------- SAP
def test_sap_continuous_known_correlations():
    rs = np.random.RandomState(5)
    n = 400
    y = rs.randn(n)
    y -= y.mean()
    e = rs.randn(n)
    e -= e.mean()
    e -= (e @ y) / (y @ y) * y  # exactly uncorrelated with y
    e *= math.sqrt((y @ y) / (e @ e))  # same sample variance as y
    # code 0 = y (r^2 = 1), code 1 = y + e (r^2 = 1/2), code 2 = y + 2e (r^2 = 1/5), code 3 = e (r^2 = 0).
    codes = np.stack([y, y + e, y + 2 * e, e], axis=1)
    factors = np.stack([y, e], axis=1)  # factor 1 = e: r^2 = 0, 1/2, 4/5, 1
    expected = ((1.0 - 0.5) + (1.0 - 0.8)) / 2
    assert M.sap(codes, factors, continuous_factors=True) == pytest.approx(expected, rel=1e-10)


def test_sap_discrete_parity_and_order(reps, split):
    c, f, ct, ft = split
    assert M.sap(c, f, ct, ft) == pytest.approx(L.sap(c, f, ct, ft), abs=1e-12)
    scores = {}
    for k in ("identity", "rotation", "noise"):
        codes, factors = reps[k]
        scores[k] = M.sap(codes[:1000], factors[:1000], codes[1000:1500], factors[1000:1500])
    assert scores["identity"] > scores["rotation"] > scores["noise"]
    # A linear SVM on one code separates the end classes of a factor only: identity is far from 1.
    assert scores["noise"] < 0.05 and scores["identity"] > 0.2


def test_sap_continuous_parity(split):
    c, f, _, _ = split
    assert M.sap(c, f, continuous_factors=True) == pytest.approx(
        L.sap(c, f, continuous_factors=True), rel=1e-12
    )


# ----------------------------------------------------------------------------- DCI
def test_dci_from_importance_by_hand():
    d, c = M.dci_from_importance(np.eye(3))
    assert d == pytest.approx(1.0, abs=1e-8) and c == pytest.approx(1.0, abs=1e-8)
    d, c = M.dci_from_importance(np.ones((3, 3)))
    assert d == pytest.approx(0.0, abs=1e-12) and c == pytest.approx(0.0, abs=1e-12)
    # One code explains both factors equally: not disentangled (entropy log 2 / log 2 = 1), fully complete.
    d, c = M.dci_from_importance(np.array([[1.0, 1.0], [0.0, 0.0]]))
    assert d == pytest.approx(0.0, abs=1e-8) and c == pytest.approx(1.0, abs=1e-8)
    # Importances (3, 1) for factor 0 only on code 0 / 1: D = 1 (each code one factor);
    # C = 1 - H([.75, .25]) / log 2 for factor 0, 1 for factor 1, weighted 4/5 and 1/5 of total importance.
    r = np.array([[3.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(3)
    d, c = M.dci_from_importance(r)
    assert d == pytest.approx(1.0, abs=1e-8)
    assert c == pytest.approx(0.8 * (1 - h) + 0.2 * 1.0, abs=1e-8)


def test_dci_parity_with_loop_and_determinism(split):
    c, f, ct, ft = split
    c, f, ct, ft = c[:400], f[:400], ct[:200], ft[:200]
    ours = M.dci(c, f, ct, ft, random_state=0)
    seed = np.random.RandomState(0).randint(2**31 - 1)
    ref = L.dci(c, f, ct, ft, seed)
    for k, v in ref.items():
        assert getattr(ours, k) == pytest.approx(v, abs=1e-12), k
    assert M.dci(c, f, ct, ft, random_state=0).as_dict() == ours.as_dict()
    assert 0.0 < ours.disentanglement < 1.0


def test_dci_orders_identity_above_rotation(reps):
    res = {}
    for k in ("identity", "rotation", "noise"):
        codes, factors = reps[k]
        res[k] = M.dci(codes[:600], factors[:600], codes[600:900], factors[600:900], n_estimators=20)
    assert res["identity"].disentanglement > 0.9 and res["identity"].completeness > 0.9
    assert res["identity"].disentanglement > res["rotation"].disentanglement + 0.2
    assert res["identity"].informativeness_test > 0.9
    assert res["noise"].informativeness_test < 0.45  # chance is 1/3 .. 1/5


# ----------------------------------------------------------------------------- modularity, explicitness
def test_modularity_by_hand_and_order(reps):
    codes = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 3.0]])
    factors = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    # MI rows: code 0 (log 2, 0) -> modularity 1; code 1 (a, a) -> 1 - a^2 / a^2 = 0.
    assert M.modularity(codes, factors, num_bins=2) == pytest.approx(0.5, abs=1e-12)
    s = {k: M.modularity(*v) for k, v in reps.items()}
    assert s["identity"] > 0.95 and s["duplication"] > 0.95  # duplicates are still modular
    assert s["identity"] > s["rotation"] + 0.2
    for codes, factors in reps.values():
        assert M.modularity(codes, factors) == pytest.approx(L.modularity(codes, factors), rel=1e-12)


def test_explicitness_parity_and_order(reps, split):
    c, f, ct, ft = split
    ours = M.explicitness(c, f, ct, ft)
    ref = L.explicitness(c, f, ct, ft)
    assert ours.explicitness_score_train == pytest.approx(ref["explicitness_score_train"], abs=1e-12)
    assert ours.explicitness_score_test == pytest.approx(ref["explicitness_score_test"], abs=1e-12)
    assert 0.6 < ours.explicitness_score_test < 0.99
    ident = M.explicitness(*reps["identity"], *reps["identity"])
    noise = M.explicitness(
        reps["noise"][0][:1500], reps["noise"][1][:1500], *[a[1500:] for a in reps["noise"]]
    )
    assert ident.explicitness_score_test > 0.99
    assert abs(noise.explicitness_score_test - 0.5) < 0.05


# ----------------------------------------------------------------------------- IRS
def test_irs_parity_and_order(reps, split):
    c, f, _, _ = split
    assert M.irs(c, f) == pytest.approx(L.irs(c, f), rel=1e-12)
    rs = np.random.RandomState(8)
    many = np.stack([rs.randint(0, 40, 2000), rs.randint(0, 3, 2000)], 1)  # 40 values -> 20 bins
    codes = np.stack([many[:, 0] + rs.randn(2000), rs.randn(2000), rs.rand(2000)], 1)
    for q in (0.99, 0.5, 0.0, 1.0):
        assert M.irs(codes, many, diff_quantile=q) == pytest.approx(L.irs(codes, many, q), rel=1e-12)
    s = {k: M.irs(*v) for k, v in reps.items()}
    assert s["identity"] > 0.5 and s["identity"] > s["rotation"] > s["noise"]


def test_irs_single_factor_value_and_constant_codes():
    rs = np.random.RandomState(9)
    codes = rs.randn(100, 2)
    # One factor value: one group whose quantile deviation is close to the maximal deviation.
    assert M.irs(codes, np.zeros((100, 1))) == pytest.approx(L.irs(codes, np.zeros((100, 1))), rel=1e-12)
    assert M.irs(np.ones((100, 2)), rs.randint(0, 3, (100, 1))) == 0.0  # documented: no varying code


# ----------------------------------------------------------------------------- unsupervised
def _with_covariance(cov: np.ndarray, n: int = 500, seed: int = 10) -> np.ndarray:
    """Samples whose sample covariance (ddof 1) is exactly ``cov``."""
    z = np.random.RandomState(seed).randn(n, cov.shape[0])
    z -= z.mean(axis=0)
    w = np.linalg.cholesky(np.cov(z, rowvar=False))
    z = z @ np.linalg.inv(w).T  # white in-sample
    return z @ np.linalg.cholesky(cov).T


def test_gaussian_tc_and_wasserstein_closed_form():
    rho = 0.6
    codes = _with_covariance(np.array([[1.0, rho], [rho, 1.0]]))
    assert M.gaussian_total_correlation(codes) == pytest.approx(-0.5 * math.log(1 - rho**2), rel=1e-10)
    gwc = 4.0 - 2.0 * (math.sqrt(1 + rho) + math.sqrt(1 - rho))
    assert M.gaussian_wasserstein_correlation(codes) == pytest.approx(gwc, rel=1e-10)
    assert M.gaussian_wasserstein_correlation(codes, normalize=True) == pytest.approx(gwc / 2.0, rel=1e-10)
    cov = np.array([[4.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])
    tc = 0.5 * (np.log(np.diag(cov)).sum() - math.log(np.linalg.det(cov)))
    assert M.gaussian_total_correlation(_with_covariance(cov)) == pytest.approx(tc, rel=1e-10)
    assert M.gaussian_total_correlation(_with_covariance(np.diag([1.0, 3.0, 0.2]))) == pytest.approx(
        0, abs=1e-10
    )


def test_unsupervised_parity_and_duplication(reps):
    codes = reps["rotation"][0]
    ours = M.unsupervised_scores(codes)
    for k, v in L.unsupervised(codes).items():
        assert ours[k] == pytest.approx(v, rel=1e-9), k
    dup = reps["duplication"][0]
    assert M.gaussian_total_correlation(dup) == math.inf  # documented: singular covariance
    assert M.gaussian_total_correlation(codes) < 0.1
    assert M.mutual_info_score(dup) > 5 * M.mutual_info_score(reps["identity"][0])


# ----------------------------------------------------------------------------- sampler-based
def _noisy_sampler():
    return M.SyntheticSampler((3, 4, 5), noise_std=0.3)


def test_beta_vae_parity_and_order():
    s = _noisy_sampler()
    kw = {"batch_size": 8, "num_train": 300, "num_eval": 150}
    ours = M.beta_vae_score(s, lambda x: x, samples_per_call=7, **kw)
    ref = L.beta_vae(s, lambda x: x, np.random.RandomState(0), **kw)
    assert ours.as_dict() == pytest.approx(ref, abs=1e-12)
    assert 0.5 < ours.eval_accuracy < 1.0
    rng = np.random.RandomState(123)
    noise = M.beta_vae_score(s, lambda x: rng.randn(len(x), 3), **kw)
    assert noise.eval_accuracy < 0.5 < ours.eval_accuracy


def test_factor_vae_parity_and_order():
    s = _noisy_sampler()
    q, _ = np.linalg.qr(np.random.RandomState(11).randn(3, 3))
    kw = {"batch_size": 16, "num_train": 200, "num_eval": 100, "num_variance_estimate": 500}
    ours = M.factor_vae_score(s, lambda x: x, samples_per_call=9, **kw)
    ref = L.factor_vae(s, lambda x: x, np.random.RandomState(0), **kw)
    assert (ours.train_accuracy, ours.eval_accuracy) == pytest.approx(
        (ref["train_accuracy"], ref["eval_accuracy"]), abs=1e-12
    )
    assert ours.eval_accuracy > 0.9 and ours.num_active_dims == 3
    rot = M.factor_vae_score(s, lambda x: x @ q, **kw)
    assert rot.eval_accuracy < ours.eval_accuracy - 0.1
    # A code with std < 0.05 is pruned.
    pruned = M.factor_vae_score(s, lambda x: np.concatenate([x, 0.01 * x[:, :1]], 1), **kw)
    assert pruned.num_active_dims == 3
    assert M.factor_vae_score(s, lambda x: 0.001 * x, **kw).as_dict() == {
        "train_accuracy": 0.0,
        "eval_accuracy": 0.0,
        "num_active_dims": 0,
    }


def test_sample_codes_and_factors_order():
    s = M.SyntheticSampler((2, 3))
    codes, factors = M.sample_codes_and_factors(s, lambda x: 2 * x, 37, random_state=0, batch_size=16)
    rs = np.random.RandomState(0)
    f = np.concatenate([s.sample_factors(k, rs) for k in (16, 16, 5)])
    assert np.array_equal(factors, f) and np.allclose(codes, 2 * s.normalised(f))
    assert isinstance(s, M.GroundTruthSampler)


# ----------------------------------------------------------------------------- accumulating classes
def test_classes_accumulate_like_functional(split):
    c, f, ct, ft = split
    allc, allf = np.concatenate([c, ct]), np.concatenate([f, ft])
    metrics = {
        "mig": (M.MIG(), lambda: M.mig(allc, allf)),
        "mod": (M.Modularity(), lambda: M.modularity(allc, allf)),
        "irs": (M.IRS(), lambda: M.irs(allc, allf)),
        "sapc": (M.SAP(continuous_factors=True), lambda: M.sap(allc, allf, continuous_factors=True)),
        "uns": (M.UnsupervisedScores(), lambda: M.unsupervised_scores(allc)),
    }
    for metric, _ in metrics.values():
        for s in range(0, len(allc), 250):
            metric.update(allc[s : s + 250], allf[s : s + 250])
    for name, (metric, ref) in metrics.items():
        assert metric.compute() == ref(), name
    m = M.MIG()
    with pytest.raises(RuntimeError, match="before any update"):
        m.compute()
    m.update(c, f)
    m.reset()
    m.update(ct, ft)
    assert m.compute() == M.mig(ct, ft)


def test_split_classes_are_seeded(split):
    c, f, _, _ = split
    e1, e2 = M.Explicitness(random_state=3), M.Explicitness(random_state=3)
    for e in (e1, e2):
        e.update(c, f)
    assert e1.compute() == e2.compute()
    perm = np.random.RandomState(3).permutation(len(c))
    te, tr = perm[:300], perm[300:]
    assert e1.compute() == M.explicitness(c[tr], f[tr], c[te], f[te])
    sap = M.SAP(random_state=3)
    sap.update(c, f)
    assert sap.compute() == M.sap(c[tr], f[tr], c[te], f[te])


# ----------------------------------------------------------------------------- degenerate input
def test_bad_input_errors_name_the_argument():
    rs = np.random.RandomState(12)
    codes, factors = rs.randn(50, 3), rs.randint(0, 3, (50, 2))
    bad = codes.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"codes must be finite; got NaN at index \(4, 1\)"):
        M.mig(bad, factors)
    badf = factors.astype(float)
    badf[0, 0] = np.inf
    with pytest.raises(ValueError, match="factors must be finite; got inf"):
        M.modularity(codes, badf)
    with pytest.raises(ValueError, match=r"codes must be a 2-D array \[N, C\]; got shape \(50,\)"):
        M.irs(codes[:, 0], factors)
    with pytest.raises(ValueError, match="same number of rows"):
        M.mig(codes[:40], factors)
    with pytest.raises(ValueError, match="codes_test and factors_test"):
        M.sap(codes, factors)
    with pytest.raises(ValueError, match="codes and codes_test must have the same number of columns"):
        M.dci(codes, factors, codes[:, :2], factors)
    with pytest.raises(ValueError, match="num_bins must be a positive integer"):
        M.mig(codes, factors, num_bins=0)
    with pytest.raises(TypeError, match="random_state must be an int seed"):
        M.dci(codes, factors, codes, factors, random_state=0.5)
    with pytest.raises(ValueError, match="at least 2 codes"):
        M.mig(codes[:, :1], factors)


def test_single_factor_value_raises_where_undefined():
    rs = np.random.RandomState(13)
    codes = rs.randn(60, 3)
    factors = np.stack([rs.randint(0, 3, 60), np.full(60, 7)], 1)
    for fn in (
        lambda: M.mig(codes, factors),
        lambda: M.sap(codes, factors, continuous_factors=True),
        lambda: M.sap(codes, factors, codes, factors),
        lambda: M.dci(codes, factors, codes, factors),
        lambda: M.explicitness(codes, factors, codes, factors),
    ):
        with pytest.raises(ValueError, match=r"factors column 1 has a single value \(7\.0\)"):
            fn()
    # Modularity is defined: that factor simply has MI 0 with every code.
    assert M.modularity(codes, factors) == pytest.approx(L.modularity(codes, factors), rel=1e-12)


def test_constant_code_is_documented_value():
    rs = np.random.RandomState(14)
    f = rs.randint(0, 4, (500, 2))
    codes = np.concatenate([f + 0.1 * rs.randn(500, 2), np.full((500, 1), 3.0)], axis=1)
    m = M.mutual_info_matrix(codes, f)
    assert np.all(m[2] == 0.0) and np.all(m[:2].max(axis=1) > 1.0)
    assert M.mig(codes, f) == pytest.approx(L.mig(codes, f), rel=1e-12)
    assert M.sap(codes, f, continuous_factors=True) == pytest.approx(L.sap(codes, f, continuous_factors=True))
    with pytest.raises(ValueError, match="codes column 2 is constant"):
        M.gaussian_total_correlation(codes)
    e = M.explicitness(codes, f, codes, f)  # the constant code is standardised to 0, not NaN
    assert e.explicitness_score_test > 0.95


def test_torch_input_matches_numpy(reps):
    torch = pytest.importorskip("torch")
    codes, factors = reps["rotation"]
    tc, tf = torch.from_numpy(codes).float(), torch.from_numpy(factors)
    assert M.mig(tc, tf) == M.mig(codes.astype(np.float32).astype(np.float64), factors)
    assert M.irs(torch.from_numpy(codes), tf) == M.irs(codes, factors)


def test_no_convergence_warning_leaks_from_fast_paths(reps):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        M.mig(*reps["identity"])
        M.irs(*reps["identity"])
        M.unsupervised_scores(reps["identity"][0])
    assert ConvergenceWarning is not None
