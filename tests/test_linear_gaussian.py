"""Tests of tangentlens.linear_gaussian (SPEC §6): information identities, the loss and its closed-form
updates, the PPCA limit, the mean-field orthogonality, I_m / SAP, and the study table / CLI."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats

from tangentlens import linear_gaussian as lg


def random_spd(k: int, seed: int, cond: float = 20.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((k, k)))
    return (q * np.geomspace(1.0, 1.0 / cond, k)) @ q.T


def random_params(m: int, n: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    B = rng.standard_normal((m, n))
    W = random_spd(m, seed + 1, cond=5.0)
    A = rng.standard_normal((n, m))
    Z = rng.uniform(0.2, 1.0, n)
    return B, W, A, Z


def rotation(m: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((m, m)))
    return q * np.sign(np.diag(r))


PAIR = lg.named_scenarios("3,4,3")[1]


# ------------------------------------------------------------------------------------------------------------
# Information quantities
# ------------------------------------------------------------------------------------------------------------
def entropy(S: np.ndarray, idx: list[int]) -> float:
    return float(stats.multivariate_normal(mean=np.zeros(len(idx)), cov=S[np.ix_(idx, idx)]).entropy())


def inv_sqrt(S: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(S)
    return (v / np.sqrt(w)) @ v.T


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mi_det_entropy_and_canonical_correlation_forms_agree(seed):
    S = random_spd(7, seed)
    a, b = [0, 3], [1, 2, 5]
    det_form = lg.gaussian_mi(S, a, b)
    entropy_form = entropy(S, a) + entropy(S, b) - entropy(S, a + b)
    K = inv_sqrt(S[np.ix_(a, a)]) @ S[np.ix_(a, b)] @ inv_sqrt(S[np.ix_(b, b)])
    rho = np.linalg.svd(K, compute_uv=False)
    cca_form = -0.5 * np.sum(np.log1p(-(rho**2)))
    assert det_form > 0.01
    assert det_form == pytest.approx(entropy_form, rel=1e-10)
    assert det_form == pytest.approx(cca_form, rel=1e-10)


def test_mi_bivariate_closed_form():
    rho = 0.73
    S = np.array([[2.0, rho * math.sqrt(2.0 * 0.5)], [rho * math.sqrt(2.0 * 0.5), 0.5]])
    assert lg.gaussian_mi(S, 0, 1) == pytest.approx(-0.5 * math.log(1 - rho**2), rel=1e-13)


@pytest.mark.parametrize("seed", [3, 4])
def test_mi_chain_rule_and_total_correlation(seed):
    S = random_spd(6, seed)
    a, b, c = [0], [1, 4], [2, 5]
    lhs = lg.gaussian_mi(S, a, b + c)
    rhs = lg.gaussian_mi(S, a, b) + lg.gaussian_cmi(S, a, c, b)
    assert lhs == pytest.approx(rhs, rel=1e-12)
    # conditional MI by the entropy form
    cmi = entropy(S, a + b) + entropy(S, c + b) - entropy(S, b) - entropy(S, a + b + c)
    assert lg.gaussian_cmi(S, a, c, b) == pytest.approx(cmi, rel=1e-10)
    # TC of three groups = I(g1; g2) + I(g1 ∪ g2; g3); default TC = Σ H(x_i) − H(x)
    groups = [a, b, c]
    assert lg.total_correlation(S, groups) == pytest.approx(
        lg.gaussian_mi(S, a, b) + lg.gaussian_mi(S, a + b, c), rel=1e-12
    )
    tc = sum(entropy(S, [i]) for i in range(6)) - entropy(S, list(range(6)))
    assert lg.total_correlation(S) == pytest.approx(tc, rel=1e-10)


def test_cmi_of_markov_chain_vanishes_while_mi_does_not():
    # a -> b -> c linear chain: I(a; c | b) = 0 exactly, I(a; c) > 0.
    T = np.array([[1.0, 0, 0], [0.9, 1.0, 0], [0.9 * 0.7, 0.7, 1.0]])
    S = T @ np.diag([1.0, 0.5, 0.3]) @ T.T
    assert abs(lg.gaussian_cmi(S, [0], [2], [1])) < 1e-13
    assert lg.gaussian_mi(S, [0], [2]) > 0.1


def test_mi_batched_matches_single():
    S = np.stack([random_spd(5, s) for s in range(4)])
    out = lg.gaussian_mi(S, [0, 1], [3])
    assert out.shape == (4,)
    np.testing.assert_allclose(out, [lg.gaussian_mi(x, [0, 1], [3]) for x in S], rtol=1e-14)


def test_mi_monte_carlo():
    # E[log p(a, b) − log p(a) − log p(b)] by sampling, densities from scipy (not the log-det code).
    S = random_spd(5, 7, cond=8.0)
    a, b = [0, 1], [2, 3, 4]
    x = np.random.default_rng(0).multivariate_normal(np.zeros(5), S, size=200_000)
    dens = lambda idx: stats.multivariate_normal(np.zeros(len(idx)), S[np.ix_(idx, idx)]).logpdf(x[:, idx])  # noqa: E731
    samples = dens(a + b) - dens(a) - dens(b)
    se = samples.std() / math.sqrt(samples.size)
    assert abs(samples.mean() - lg.gaussian_mi(S, a, b)) < 4 * se


def test_mi_errors_are_clear():
    S = random_spd(4, 0)
    bad = S.copy()
    bad[0, 0] = -1.0
    with pytest.raises(ValueError, match="positive-definite"):
        lg.gaussian_mi(bad, [0], [1])
    with pytest.raises(ValueError, match="symmetric"):
        lg.gaussian_mi(S + np.triu(np.ones((4, 4)), 1), [0], [1])
    with pytest.raises(ValueError, match="square"):
        lg.gaussian_mi(np.ones((3, 4)), [0], [1])
    with pytest.raises(ValueError, match="disjoint"):
        lg.gaussian_mi(S, [0, 1], [1])
    with pytest.raises(ValueError, match=r"indices in \[0, 4\)"):
        lg.gaussian_mi(S, [0], [4])
    with pytest.raises(ValueError, match="finite"):
        lg.gaussian_mi(np.full((2, 2), np.nan), [0], [1])


# ------------------------------------------------------------------------------------------------------------
# Scenarios
# ------------------------------------------------------------------------------------------------------------
def test_scenario_covariances_closed_form():
    a, b, t = 0.8, -0.6, (1.0, 0.7, 0.49)
    star = lg.Scenario(3, 4, 3, [2, 0, 3], 0.1, [(1, 0, a), (2, 0, b)], factor_noise=t)
    expected_v = np.array(
        [
            [t[0], a * t[0], b * t[0]],
            [a * t[0], a * a * t[0] + t[1], a * b * t[0]],
            [b * t[0], a * b * t[0], b * b * t[0] + t[2]],
        ]
    )
    np.testing.assert_allclose(star.sigma_v, expected_v, rtol=1e-14)
    rows = [2, 0, 3]
    expected_y = 0.1 * np.eye(4)
    for i, j in itertools.product(range(3), repeat=2):
        expected_y[rows[i], rows[j]] += expected_v[i, j]
    np.testing.assert_allclose(star.sigma_y, expected_y, rtol=1e-14)
    assert star.true_grouping == ((0, 1, 2),)
    chain = lg.Scenario(5, 5, 4, [0, 1, 2, 3, 4], 0.1, [(1, 0, 0.5), (4, 1, 0.5)])
    assert chain.true_grouping == ((0, 1, 4), (2,), (3,))
    assert chain.sigma_v[0, 4] == pytest.approx(0.25)


def test_named_scenarios():
    for config, names in [
        ("3,4,3", ["independent", "pair", "star"]),
        ((5, 5, 4), ["pair", "two-pairs", "star"]),
    ]:
        scs = lg.named_scenarios(config)
        assert [sc.name for sc in scs] == names
        for sc in scs:
            assert np.all(np.linalg.eigvalsh(sc.sigma_y) > 0)
            assert sorted(np.argmax(sc.gamma_matrix, axis=0).tolist()) == sorted(
                set(np.argmax(sc.gamma_matrix, 0))
            )
    assert lg.named_scenarios("3,4,3", coef=0.3)[1].sigma_v[0, 1] == pytest.approx(0.3)


def test_scenario_errors():
    with pytest.raises(ValueError, match="acyclic"):
        lg.Scenario(3, 4, 3, [0, 1, 2], 0.1, [(1, 0, 0.5), (0, 1, 0.5)])
    with pytest.raises(ValueError, match="sigma2"):
        lg.Scenario(3, 4, 3, [0, 1, 2], 0.0)
    with pytest.raises(ValueError, match="gamma_matrix"):
        lg.Scenario(3, 4, 3, np.ones((4, 2)), 0.1)
    with pytest.raises(ValueError, match="full column rank"):
        lg.Scenario(2, 4, 3, np.ones((4, 2)), 0.1)
    with pytest.raises(ValueError, match="config"):
        lg.named_scenarios("3,3,3")


# ------------------------------------------------------------------------------------------------------------
# The loss and the updates
# ------------------------------------------------------------------------------------------------------------
def test_objective_monte_carlo():
    # The loss by sampling y, w and evaluating the densities with scipy.
    Sy = PAIR.sigma_y
    B, W, A, Z = random_params(3, 4, 11)
    B *= 0.5
    gamma, lam = 0.7, 0.3
    rng = np.random.default_rng(1)
    y = rng.multivariate_normal(np.zeros(4), Sy, size=400_000)
    w = rng.multivariate_normal(np.zeros(3), W, size=y.shape[0])
    x = y @ B.T + w
    log_q = stats.multivariate_normal(np.zeros(3), W).logpdf(w)
    log_prior = stats.norm.logpdf(x).sum(-1)
    r = y - x @ A.T
    log_lik = stats.norm.logpdf(r, scale=np.sqrt(Z)).sum(-1)
    samples = log_q - log_prior - gamma * log_lik + lam * np.sum(r**2, -1)
    se = samples.std() / math.sqrt(samples.size)
    assert abs(samples.mean() - lg.vae_objective(Sy, gamma, lam, B, W, A, Z)) < 4 * se


def test_objective_invariant_under_latent_rotations():
    Sy = PAIR.sigma_y
    B, W, A, Z = random_params(3, 4, 5)
    R = rotation(3, 9)
    before = lg.vae_objective(Sy, 0.8, 0.4, B, W, A, Z)
    after = lg.vae_objective(Sy, 0.8, 0.4, R @ B, R @ W @ R.T, A @ R.T, Z)
    assert after == pytest.approx(before, rel=1e-13)
    # ... but not under a non-orthogonal change of basis
    S = np.diag([1.0, 2.0, 0.5])
    assert abs(lg.vae_objective(Sy, 0.8, 0.4, S @ B, S @ W @ S, A @ np.linalg.inv(S), Z) - before) > 1e-2


def test_solver_objective_invariant_under_rotated_initialisation():
    # The full-Σ_W updates commute with rotations: rotated inits give rotated solutions with equal objectives.
    R = rotation(3, 2)
    B0 = np.random.default_rng(0).standard_normal((3, 4)) / 2
    W0 = np.diag([0.3, 0.6, 0.9])
    r1 = lg.solve(PAIR, 0.5, 0.5, init=(B0, W0), restarts=1, max_iters=50, tol=0.0)
    r2 = lg.solve(PAIR, 0.5, 0.5, init=(R @ B0, R @ W0 @ R.T), restarts=1, max_iters=50, tol=0.0)
    np.testing.assert_allclose(r1.history, r2.history, rtol=1e-11)
    np.testing.assert_allclose(R @ r1.B[0, 0, 0], r2.B[0, 0, 0], atol=1e-10)


@pytest.mark.parametrize("diagonal", [False, True])
def test_each_half_step_decreases_the_objective(diagonal):
    gammas, lams = [0.5, 1.0, 2.0], [0.0, 0.5, 2.0]
    res = lg.solve(PAIR, gammas, lams, restarts=3, seed=4, max_iters=300, tol=0.0, diagonal=diagonal)
    # decoder half-step t, encoder half-step t, decoder half-step t+1, ...
    seq = np.stack([res.history_half, res.history], axis=-1).reshape(res.history.shape[:-1] + (-1,))
    d = np.diff(seq, axis=-1)
    ok = np.isfinite(d)
    scale = 1e-11 * np.maximum(1.0, np.abs(seq[..., 1:]))
    assert np.all(d[ok] <= scale[ok]), float(np.max(d[ok]))
    # it is not a sequence of zeros: the objective moves by O(1) from the first half-step
    drop = seq[..., 0] - np.nanmin(seq, axis=-1)
    assert np.median(drop) > 0.1


def torch_objective(Sy, gamma, lam, B, W, A, Z):
    """An independent implementation of the SPEC §6 loss (torch, for autograd)."""
    import torch

    m, n = B.shape
    eye = torch.eye(n, dtype=torch.float64)
    R = eye - A @ B
    E = R @ Sy @ R.T + A @ W @ A.T
    kl = 0.5 * (torch.trace(B @ Sy @ B.T) + torch.trace(W) - torch.logdet(W) - m)
    nll = 0.5 * (torch.sum(torch.diagonal(E) / Z) + torch.sum(torch.log(Z)) + n * math.log(2 * math.pi))
    return kl + gamma * nll + lam * torch.trace(E)


@pytest.mark.parametrize(
    ("gamma", "lam", "diagonal"), [(0.6, 0.3, False), (1.0, 0.0, False), (0.6, 0.3, True)]
)
def test_updates_are_exact_block_minimisers(gamma, lam, diagonal):
    torch = pytest.importorskip("torch")
    Sy = PAIR.sigma_y
    B, W, A, Z = random_params(3, 4, 21)
    if diagonal:
        W = np.diag(np.diag(W))
    t = lambda x: torch.tensor(x, dtype=torch.float64, requires_grad=True)  # noqa: E731

    # decoder: gradient in (A, Σ_Z) vanishes at the update
    A1, Z1 = lg.decoder_update(Sy, B, W)
    tA, tZ = t(A1), t(Z1)
    f = torch_objective(torch.tensor(Sy), gamma, lam, torch.tensor(B), torch.tensor(W), tA, tZ)
    assert f.item() == pytest.approx(lg.vae_objective(Sy, gamma, lam, B, W, A1, Z1), rel=1e-13)
    gA, gZ = torch.autograd.grad(f, [tA, tZ])
    assert gA.abs().max().item() < 1e-10 and gZ.abs().max().item() < 1e-10

    # encoder: gradient in B and in Σ_W (its diagonal for the mean-field variant) vanishes
    B1, W1 = lg.encoder_update(A1, Z1, gamma, lam, diagonal=diagonal)
    tB, tW = t(B1), t(W1)
    f = torch_objective(torch.tensor(Sy), gamma, lam, tB, tW, torch.tensor(A1), torch.tensor(Z1))
    gB, gW = torch.autograd.grad(f, [tB, tW])
    assert gB.abs().max().item() < 1e-10
    gW = gW.numpy()
    if diagonal:
        assert np.abs(np.diag(gW)).max() < 1e-10
        assert np.abs(gW - np.diag(np.diag(gW))).max() > 1e-3  # the unrestricted optimum is elsewhere
    else:
        assert np.abs(gW + gW.T).max() < 1e-10  # symmetric perturbations

    # and random perturbations of each block never lower the objective
    rng = np.random.default_rng(0)
    f0 = lg.vae_objective(Sy, gamma, lam, B1, W1, A1, Z1)
    fd = lg.vae_objective(Sy, gamma, lam, B, W, A1, Z1)
    for eps in (1e-4, 1e-2):
        for _ in range(20):
            dB = eps * rng.standard_normal(B1.shape)
            dW = (
                eps * np.diag(rng.standard_normal(3))
                if diagonal
                else eps * (lambda x: x + x.T)(rng.standard_normal((3, 3)))
            )
            assert lg.vae_objective(Sy, gamma, lam, B1 + dB, W1, A1, Z1) >= f0 - 1e-13
            assert lg.vae_objective(Sy, gamma, lam, B1, W1 + dW, A1, Z1) >= f0 - 1e-13
            dA = eps * rng.standard_normal(A1.shape)
            dZ = eps * rng.standard_normal(4) * Z1
            assert lg.vae_objective(Sy, gamma, lam, B, W, A1 + dA, Z1) >= fd - 1e-13
            assert lg.vae_objective(Sy, gamma, lam, B, W, A1, Z1 + dZ) >= fd - 1e-13


def test_decoder_update_matches_spec_form():
    # A = P Bᵀ Σ_W⁻¹ and Σ_Z = diag P with P = (Σ_Y⁻¹ + Bᵀ Σ_W⁻¹ B)⁻¹, written as in SPEC §6.
    Sy = PAIR.sigma_y
    B, W, _, _ = random_params(3, 4, 8)
    P = np.linalg.inv(np.linalg.inv(Sy) + B.T @ np.linalg.inv(W) @ B)
    A, Z = lg.decoder_update(Sy, B, W)
    np.testing.assert_allclose(A, P @ B.T @ np.linalg.inv(W), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(Z, np.diag(P), rtol=1e-10)
    Q = 0.7 / Z + 2 * 0.2
    B1, W1 = lg.encoder_update(A, Z, 0.7, 0.2)
    W_spec = np.linalg.inv(np.eye(3) + A.T @ np.diag(Q) @ A)
    np.testing.assert_allclose(W1, W_spec, rtol=1e-12)
    np.testing.assert_allclose(B1, W_spec @ A.T @ np.diag(Q), rtol=1e-12)


# ------------------------------------------------------------------------------------------------------------
# PPCA and the mean-field geometry
# ------------------------------------------------------------------------------------------------------------
def test_ppca_closed_form_at_gamma_1_lambda_0():
    # Σ_Y = DDᵀ + σ²I with a generic 6×2 D: the γ = 1, λ = 0 loss is the factor-analysis negative ELBO, whose
    # population optimum is unique here (n ≥ 2m + 1) and equals the PPCA solution with the exact noise σ².
    sigma2 = 0.3
    D = np.random.default_rng(3).standard_normal((6, 2))
    sc = lg.Scenario(2, 6, 2, D, sigma2)
    res = lg.solve(sc, 1.0, 0.0, restarts=3, seed=0, max_iters=20000, tol=1e-15, param_tol=1e-11)
    assert set(res.status.ravel()) <= {"converged"}
    Sy = sc.sigma_y
    evals, evecs = np.linalg.eigh(Sy)
    evals, evecs = evals[::-1], evecs[:, ::-1]
    s2_ml = evals[2:].mean()  # PPCA: mean of the discarded eigenvalues
    assert s2_ml == pytest.approx(sigma2, rel=1e-12)
    W_ppca = evecs[:, :2] * np.sqrt(evals[:2] - s2_ml)
    post_ppca = np.linalg.inv(np.eye(2) + W_ppca.T @ W_ppca / s2_ml)  # (I + DᵀD/σ²)⁻¹
    nll = 0.5 * (np.linalg.slogdet(Sy)[1] + 6 + 6 * math.log(2 * math.pi))
    for r in range(3):
        A, Z, Wsol = res.A[0, 0, r], res.sigma_z[0, 0, r], res.sigma_w[0, 0, r]
        np.testing.assert_allclose(Z, s2_ml, rtol=1e-6)
        np.testing.assert_allclose(A @ A.T, W_ppca @ W_ppca.T, atol=1e-6)
        # posterior covariances agree up to the latent rotation: compare spectra, and the exact formula
        np.testing.assert_allclose(np.linalg.eigvalsh(Wsol), np.linalg.eigvalsh(post_ppca), rtol=1e-6)
        np.testing.assert_allclose(Wsol, np.linalg.inv(np.eye(2) + A.T @ A / s2_ml), atol=1e-6)
        assert res.objective[0, 0, r] == pytest.approx(nll, rel=1e-9)  # tight ELBO = exact log-likelihood
        assert res.recon_error[0, 0, r] < 1e-6


def off_diagonal_energy(M: np.ndarray) -> float:
    return float(np.sum((M - np.diag(np.diag(M))) ** 2) / np.sum(M**2))


@pytest.mark.parametrize(("gamma", "lam"), [(0.0, 2.0), (0.5, 0.5)])
def test_mean_field_gives_column_orthogonal_decoders(gamma, lam):
    # Allen (2024): with a diagonal posterior the optimum has AᵀQA diagonal (Q = γΣ_Z⁻¹ + 2λI; at γ = 0 plain
    # column orthogonality of A); the full posterior is rotation invariant and leaves AᵀQA arbitrary.
    # Both reach the same objective value (the mean-field penalty ½(Σ log M_ii − log|M|) vanishes at its
    # optimum).
    mf = lg.solve(PAIR, gamma, lam, restarts=3, seed=1, diagonal=True, max_iters=20000, tol=1e-15)
    full = lg.solve(PAIR, gamma, lam, restarts=3, seed=1, diagonal=False, max_iters=20000, tol=1e-15)
    assert set(mf.status.ravel()) == {"converged"} and set(full.status.ravel()) == {"converged"}
    for res, expect_orthogonal in ((mf, True), (full, False)):
        for r in range(3):
            A, Z = res.A[0, 0, r], res.sigma_z[0, 0, r]
            q = (gamma / Z if gamma else 0.0) + 2 * lam
            energy = off_diagonal_energy(A.T @ (q[:, None] * A) if np.ndim(q) else q * A.T @ A)
            if expect_orthogonal:
                assert energy < 1e-12
            else:
                assert energy > 1e-3
    if gamma == 0.0:
        A = mf.A[0, 0, 0]
        assert off_diagonal_energy(A.T @ A) < 1e-12
    np.testing.assert_allclose(mf.objective.min(), full.objective.min(), rtol=1e-9)
    np.testing.assert_allclose(full.objective, full.objective.min(), rtol=1e-9)  # rotation-invariant optimum


# ------------------------------------------------------------------------------------------------------------
# Solver diagnostics, batching, determinism
# ------------------------------------------------------------------------------------------------------------
def test_statuses_collapse_divergence_convergence():
    res = lg.solve(PAIR, [0.25, 0.5, 2.0], [0.0, 0.5], restarts=2, seed=0, max_iters=3000)
    st = res.status
    # small γ and λ = 0: the KL term wins, B → 0 (a fixed point: A = 0, Σ_W = I)
    assert np.all(st[0, 0] == "collapsed")
    np.testing.assert_allclose(res.B[0, 0], 0.0, atol=1e-5)
    np.testing.assert_allclose(res.sigma_w[0, 0], np.broadcast_to(np.eye(3), (2, 3, 3)), atol=1e-8)
    assert np.all(res.active_dims[0, 0] == 0)
    # γ = 0.5, λ = 0.5: a proper optimum
    assert np.all(st[1, 1] == "converged") and np.all(res.active_dims[1, 1] >= 1)
    # γ > 1: the loss is unbounded below (Σ_W → 0 while the objective keeps falling)
    assert np.all(st[2] == "diverging")
    assert np.all(np.linalg.eigvalsh(res.sigma_w[2])[..., 0] < 1e-8)
    h = res.history[2, 0, 0]
    h = h[np.isfinite(h)]
    assert h[-1] < h[-10] - 0.1
    assert np.all(res.best_restart()[2] == -1) and np.all(res.best_restart()[:2] >= 0)


def test_recon_error_definition():
    res = lg.solve(PAIR, 0.5, 0.5, restarts=1, max_iters=200)
    Sy = PAIR.sigma_y
    A, Z = res.A[0, 0, 0], res.sigma_z[0, 0, 0]
    expected = np.linalg.norm(Sy - (A @ A.T + np.diag(Z)), 2) / np.linalg.norm(Sy, 2)
    assert res.recon_error[0, 0, 0] == pytest.approx(expected, rel=1e-12)
    assert expected > 1e-3


def test_batched_grid_equals_separate_runs_and_is_deterministic():
    gammas, lams = [0.5, 1.0], [0.0, 2.0]
    grid = lg.solve(PAIR, gammas, lams, restarts=2, seed=7, max_iters=400)
    again = lg.solve(PAIR, gammas, lams, restarts=2, seed=7, max_iters=400)
    np.testing.assert_array_equal(grid.B, again.B)
    other = lg.solve(PAIR, gammas, lams, restarts=2, seed=8, max_iters=400)
    assert not np.allclose(grid.B, other.B)
    # each grid point solved alone from the same initialisations reproduces the batched result
    B0, W0 = lg._random_init(np.random.default_rng(7), (2, 2, 2), 3, 4)
    for i, g in enumerate(gammas):
        for j, lm in enumerate(lams):
            single = lg.solve(PAIR, g, lm, init=(B0[i, j], W0[i, j]), restarts=2, max_iters=400)
            np.testing.assert_allclose(single.B[0, 0], grid.B[i, j], rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(single.objective[0, 0], grid.objective[i, j], rtol=1e-14)
            np.testing.assert_array_equal(single.status[0, 0], grid.status[i, j])
            np.testing.assert_array_equal(single.n_iter[0, 0], grid.n_iter[i, j])


def test_solve_errors():
    with pytest.raises(ValueError, match="gamma"):
        lg.solve(PAIR, [-1.0], 0.0)
    with pytest.raises(ValueError, match="restarts"):
        lg.solve(PAIR, 1.0, 0.0, restarts=0)
    with pytest.raises(ValueError, match="init"):
        lg.solve(PAIR, 1.0, 0.0, init="zeros")
    with pytest.raises(ValueError, match="init"):
        lg.solve(PAIR, 1.0, 0.0, init=(np.ones((2, 2)), np.eye(3)))
    with pytest.raises(ValueError, match="diagonal"):
        lg.solve(PAIR, 1.0, 0.0, init=(np.ones((3, 4)), random_spd(3, 0)), diagonal=True)
    with pytest.raises(ValueError, match="positive-definite"):
        lg.solve(PAIR, 1.0, 0.0, init=(np.ones((3, 4)), -np.eye(3)))


# ------------------------------------------------------------------------------------------------------------
# I_m, SAP, joint covariance
# ------------------------------------------------------------------------------------------------------------
def brute_force_im(S: np.ndarray, m: int, s: int) -> np.ndarray:
    out = []
    for assign in itertools.product(range(m), repeat=s):
        groups = [[m + i for i in range(s) if assign[i] == j] for j in range(m)]
        val = sum(lg.gaussian_mi(S, [j], g) for j, g in enumerate(groups) if g)
        for gi, gj in itertools.combinations([g for g in groups if g], 2):
            val -= lg.gaussian_mi(S, gi, gj)
        out.append(val)
    return np.array(out)


@pytest.mark.parametrize(("m", "s"), [(3, 3), (4, 5), (2, 4)])
def test_im_table_matches_brute_force(m, s):
    S = random_spd(m + s, m * 10 + s, cond=10.0)
    res = lg.im_score(S, m, s)
    brute = brute_force_im(S, m, s)
    assert res.table.shape == (m**s,)
    np.testing.assert_allclose(res.table, brute, rtol=1e-10, atol=1e-12)
    assert res.score == pytest.approx(brute.max(), rel=1e-12)
    assert res.assignment == tuple(np.array(list(itertools.product(range(m), repeat=s)))[np.argmax(brute)])


def test_im_recovers_grouping_of_an_ideal_code():
    # x_0 encodes (v0, v1) of a dependent pair, x_1 encodes v2; x_2 is noise: the arg-max groups {0,1} {2}.
    sc = lg.named_scenarios("3,4,3")[1]
    Bv = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])  # acts on V
    B = Bv @ np.linalg.pinv(sc.gamma_matrix)  # acts on Y = ΓV + N
    S = lg.joint_covariance(sc, B, 0.01 * np.eye(3))
    res = lg.im_score(S, 3, 3)
    assert res.grouping == ((0, 1), (2,)) == sc.true_grouping
    assert res.assignment[0] == res.assignment[1] == 0 and res.assignment[2] == 1
    assert res.margin > 0.1
    sap = lg.sap_score(S, 3, 3)
    assert sap.grouping == ((0, 1), (2,))
    # a collapsed code: a tie, margin 0
    S0 = lg.joint_covariance(sc, np.zeros((3, 4)), np.eye(3))
    assert lg.im_score(S0, 3, 3).margin == 0.0


def test_im_equivariant_under_latent_permutation():
    S = random_spd(7, 5)
    perm = [2, 0, 3, 1]
    full = perm + [4, 5, 6]
    a = lg.im_score(S, 4, 3)
    b = lg.im_score(S[np.ix_(full, full)], 4, 3)
    assert b.score == pytest.approx(a.score, rel=1e-12)
    assert tuple(perm[j] for j in b.assignment) == a.assignment


def test_im_and_sap_errors():
    with pytest.raises(ValueError, match=r"m\*\*s"):
        lg.im_score(np.eye(23), 3, 20)
    with pytest.raises(ValueError, match="6x6"):
        lg.im_score(np.eye(5), 3, 3)
    with pytest.raises(ValueError, match="positive-definite"):
        lg.im_score(np.diag([1.0, 1, 1, 1, 1, -1]), 3, 3)
    with pytest.raises(ValueError, match="m: expected an integer"):
        lg.sap_score(np.eye(6), 0, 6)


def test_sap_closed_form():
    S = random_spd(7, 12)
    res = lg.sap_score(S, 3, 4)
    d = np.sqrt(np.diag(S))
    corr2 = (S[:3, 3:] / np.outer(d[:3], d[3:])) ** 2
    assert np.allclose(res.matrix, corr2)
    gaps = [np.sort(corr2[:, j])[-1] - np.sort(corr2[:, j])[-2] for j in range(4)]
    assert res.score == pytest.approx(np.mean(gaps), rel=1e-12)
    assert res.top_latent == tuple(np.argmax(corr2, axis=0))


def test_joint_covariance_exact():
    # (X, V) = L (V, N, W) with L = [[BΓ, B, I], [I, 0, 0]]: Cov = L blockdiag(Σ_V, σ²I, Σ_W) Lᵀ.
    sc = lg.named_scenarios("5,5,4")[2]
    B, W, _, _ = random_params(4, 5, 3)
    L = np.block(
        [
            [B @ sc.gamma_matrix, B, np.eye(4)],
            [np.eye(5), np.zeros((5, 5)), np.zeros((5, 4))],
        ]
    )
    C = np.zeros((14, 14))
    C[:5, :5], C[5:10, 5:10], C[10:, 10:] = sc.sigma_v, sc.sigma2 * np.eye(5), W
    np.testing.assert_allclose(lg.joint_covariance(sc, B, W), L @ C @ L.T, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------------------------------------
# The study table and the CLI
# ------------------------------------------------------------------------------------------------------------
def test_success_rates_table():
    kw = dict(restarts=2, max_iters=400)
    tab = lg.success_rates("3,4,3", [0.5, 1.0], [0.0, 2.0], [0, 1], **kw)
    assert tab.im_mean.shape == tab.sap_std.shape == (3, 2, 2)
    assert tab.im_per_seed.shape == (3, 2, 2, 2)
    finite = np.isfinite(tab.im_mean)
    assert np.all((tab.im_mean[finite] >= 0) & (tab.im_mean[finite] <= 1))
    total = sum(tab.status_fractions.values())
    np.testing.assert_allclose(total, 1.0)
    # per-seed rates = the solver + the metrics run one by one
    sc = tab.scenarios[2]
    res = lg.solve(sc, [0.5, 1.0], [0.0, 2.0], seed=1, **kw)
    cov = res.joint_covariance()
    for i, j in itertools.product(range(2), repeat=2):
        ok = []
        for r in range(2):
            if res.status[i, j, r] in ("collapsed", "diverging"):
                continue
            im = lg.im_score(cov[i, j, r], 3, 3)
            ok.append(im.grouping == sc.true_grouping and im.margin > 0)
        expected = np.mean(ok) if ok else np.nan
        np.testing.assert_equal(tab.im_per_seed[2, 1, i, j], expected)
    json.dumps(tab.to_dict(), allow_nan=False)
    again = lg.success_rates("3,4,3", [0.5, 1.0], [0.0, 2.0], [0, 1], **kw)
    np.testing.assert_array_equal(again.im_per_seed, tab.im_per_seed)
    assert "| pair |" in tab.format()


def test_cli_linear_gaussian(tmp_path, capsys):
    from tangentlens.cli import main

    out = tmp_path / "lg.json"
    argv = ["linear-gaussian", "--config", "3,4,3", "--gamma", "0.5", "--lam", "0.5", "--seeds", "2"]
    rc = main(argv + ["--restarts", "2", "--max-iters", "300", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "(s, n, m) = (3, 4, 3)" in text and "| star |" in text
    data = json.loads(out.read_text())
    assert data["tables"][0]["configuration"] == [3, 4, 3] and data["tables"][0]["seeds"] == [0, 1]
    assert main(["linear-gaussian", "--config", "3,3,3", "--seeds", "1"]) == 2
    assert "config" in capsys.readouterr().err


def test_pca_init_and_result_serialisation():
    res = lg.solve(PAIR, [0.5, 1.0], 0.5, init="pca", restarts=2, max_iters=300)
    np.testing.assert_array_equal(res.B[:, :, 0], res.B[:, :, 1])  # identical restarts by construction
    d = res.to_dict(include_history=True)
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text)["status"] == res.status.tolist()
    assert len(d["history"][0][0][0]) == 300


# ------------------------------------------------------------------------------------------------------------
# λ < 0, an indefinite Q, configurations as lists, SAP ties
# ------------------------------------------------------------------------------------------------------------
def test_negative_lambda_through_the_api():
    res = lg.solve(PAIR, [0.5, 1.0], [-0.02, 0.0], restarts=2, seed=3, max_iters=300)
    assert res.lam.tolist() == [-0.02, 0.0]
    assert np.all(np.isfinite(res.objective[res.status != "diverging"]))
    # at λ < 0 the encoder update still holds: Q = γΣ_Z⁻¹ + 2λI is positive definite here
    A, Z = res.A[1, 0, 0], res.sigma_z[1, 0, 0]
    B1, W1 = lg.encoder_update(A, Z, 1.0, -0.02)
    Q = np.diag(1.0 / Z - 0.04)
    np.testing.assert_allclose(W1, np.linalg.inv(np.eye(3) + A.T @ Q @ A), rtol=1e-12)
    tab = lg.success_rates("3,4,3", [1.0], [-0.02, 0.0], [0], restarts=1, max_iters=200)
    assert tab.lam.tolist() == [-0.02, 0.0] and tab.im_mean.shape == (3, 1, 2)


def test_indefinite_q_is_a_clear_error():
    # γ = 0.5 and λ = −1: Q's diagonal 0.5/Σ_Z,ii − 2 is negative for Σ_Z,ii > 0.25
    with pytest.raises(lg.IndefiniteQError, match=r"smallest eigenvalue -1\.5 at γ = 0\.5, λ = -1"):
        lg.encoder_update(np.ones((4, 3)), np.full(4, 1.0), 0.5, -1.0)
    with pytest.raises(ValueError, match=r"Q = γΣ_Z⁻¹ \+ 2λI .* at γ = 0\.5, λ = -1 "):
        lg.solve(PAIR, 0.5, [0.1, -1.0], restarts=1, max_iters=50)
    with pytest.raises(lg.IndefiniteQError, match="γ = 0, λ = -0.1"):
        lg.success_rates("3,4,3", [0.0], [-0.1], [0], restarts=1, max_iters=10)
    # a definite Q at λ < 0 is fine
    lg.encoder_update(np.ones((4, 3)), np.full(4, 0.1), 0.5, -1.0)


def test_success_rates_accepts_a_list_configuration():
    kw = dict(restarts=1, max_iters=100)
    a = lg.success_rates([5, 5, 4], [1.0], [0.5], [0], **kw)
    b = lg.success_rates((5, 5, 4), [1.0], [0.5], [0], **kw)
    c = lg.success_rates("5,5,4", [1.0], [0.5], [0], **kw)
    assert a.configuration == b.configuration == c.configuration == (5, 5, 4)
    np.testing.assert_array_equal(a.im_per_seed, c.im_per_seed)
    with pytest.raises(ValueError, match="config"):
        lg.success_rates([5, 5, 5], [1.0], [0.5], [0], **kw)


def test_sap_tie_flag():
    sc = lg.named_scenarios("3,4,3")[1]
    Bv = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    S = lg.joint_covariance(sc, Bv @ np.linalg.pinv(sc.gamma_matrix), 0.01 * np.eye(3))
    good = lg.sap_score(S, 3, 3)
    assert not good.tie and np.all(good.margins > 0.1) and good.score == pytest.approx(good.margins.mean())
    # a collapsed code: every entry ~0, so every factor's arg-max is a tie and the "grouping" is meaningless
    collapsed = lg.sap_score(lg.joint_covariance(sc, np.zeros((3, 4)), np.eye(3)), 3, 3)
    assert collapsed.tie and collapsed.grouping == ((0, 1, 2),)
    # one factor tied between two latents that copy it equally
    Bt = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]) @ np.linalg.pinv(sc.gamma_matrix)
    tied = lg.sap_score(lg.joint_covariance(sc, Bt, 0.01 * np.eye(3)), 3, 3)
    assert tied.tie and tied.margins[0] <= lg.SAP_TIE_TOL and tied.margins[2] > 0
    assert json.loads(json.dumps(tied.to_dict()))["tie"] is True


def test_cli_negative_lambda(tmp_path, capsys):
    from tangentlens.cli import main

    for lam_args in (["--lam", "-0.02,0.5"], ["--lam=-0.02,0.5"]):
        out = tmp_path / "neg.json"
        argv = ["linear-gaussian", "--config", "3,4,3", "--gamma", "1", *lam_args, "--seeds", "1"]
        assert main(argv + ["--restarts", "1", "--max-iters", "50", "--json", str(out)]) == 0
        assert json.loads(out.read_text())["tables"][0]["lam"] == [-0.02, 0.5]
        assert "| -0.02 |" in capsys.readouterr().out
    assert main(["linear-gaussian", "--config", "3,4,3", "--gamma", "0", "--lam", "-1", "--seeds", "1"]) == 2
    assert "positive definite" in capsys.readouterr().err
    # argparse's error, answered by main as a usage error (exit status 2, no traceback)
    assert main(["linear-gaussian", "--lam", "-0.02,x"]) == 2
    assert "comma list of numbers" in capsys.readouterr().err
