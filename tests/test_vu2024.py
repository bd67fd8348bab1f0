"""Tests of the ``vu2024`` protocol of tangentlens.linear_gaussian: the Vu–Wei–Wan notebooks as their authors
ran them. Constants against their protocol page (seed 002, with the corrections the
notebooks imposed), one run against an independent float64 implementation written here, and golden fixtures
produced by running the notebooks' own code seeded (tests/fixtures/vu2024/README.md)."""

from __future__ import annotations

import functools
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from tangentlens import linear_gaussian as lg
from tangentlens.linear_gaussian import _vu2024_draws as draws_mod
from tangentlens.linear_gaussian import vu2024_protocol as proto
from tangentlens.linear_gaussian._vu2024_solver import solve_protocol
from tangentlens.linear_gaussian.metrics import _vu2024_assignments

FIX = Path(__file__).parent / "fixtures" / "vu2024"


def fixture(name: str) -> dict[str, np.ndarray]:
    with np.load(FIX / name) as data:
        return {k: data[k] for k in data.files}


# ------------------------------------------------------------------------------------------------------------
# Constants (the protocol page's table, 1-based factors there, 0-based here)
# ------------------------------------------------------------------------------------------------------------
def test_constants_follow_the_protocol_page():
    c3, c5 = lg.VU2024[(3, 4, 3)], lg.VU2024[(5, 5, 4)]
    # Γ: (3, 4, 3) columns e1, e2, e3 of I_4 (row 4 zero); (5, 5, 4) columns e1, e5, e4, e2, e3 of I_5
    sc3, sc5 = lg.vu2024_scenarios("3,4,3", sigma_v="exact"), lg.vu2024_scenarios("5,5,4", sigma_v="exact")
    np.testing.assert_array_equal(sc3[0].gamma_matrix, np.eye(4)[:, [0, 1, 2]])
    rows5 = np.array([[1, 0, 0, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1], [0, 0, 1, 0, 0], [0, 1, 0, 0, 0]])
    np.testing.assert_array_equal(sc5[0].gamma_matrix, rows5)
    # σ² = 0.04², 0.01² (as the notebooks compute it); σ_v; σ_z; coefficients; runs per pair
    assert sc3[0].sigma2 == 0.04**2 and sc5[0].sigma2 == 0.01**2
    assert c3.sigma_v == (0.01, 0.02, 0.03) and c5.sigma_v == (0.05, 0.01, 0.02, 0.04, 0.03)
    assert c3.sigma_z == {1: 0.02, 2: 0.03} and c5.sigma_z == {1: 0.02, 2: 0.01, 3: 0.03, 4: 0.04}
    assert c3.coefficients == {"alpha": 2.0, "beta": 4.0}
    assert c5.coefficients == {"alpha": 0.1, "beta": 0.3, "delta": 0.4, "omega": 0.2}
    assert (c3.runs, c5.runs) == (6, 2)
    assert proto.VU2024_GAMMAS == (0.98, 0.99, 1.0, 1.01, 1.02)
    assert proto.VU2024_LAMBDAS == (-0.02, -0.01, 0.0, 0.01, 0.02)
    assert (proto.VU2024_HALF_STEPS, proto.VU2024_TOL, proto.VU2024_RECON_TOL) == (10_000, 1e-8, 1e-6)
    assert c3.slides == {
        ("im", 1): 16,
        ("im", 2): 64,
        ("im", 3): 100,
        ("sap", 1): 40,
        ("sap", 2): 92,
        ("sap", 3): 92,
    }
    assert c5.slides == {
        ("im", 1): 44,
        ("im", 2): 60,
        ("im", 3): 56,
        ("sap", 1): 52,
        ("sap", 2): 20,
        ("sap", 3): 4,
    }


def analytic(s, roots, children):
    """Σ_V of the page's rules: a root v_j ~ N(0, σ_vj²); v_k = c·v_j + z_k, z_k ~ N(0, σ_zk²)."""
    V = np.zeros((s, s))
    for j, sd in roots.items():
        V[j, j] = sd**2
    for k, (j, c, sz) in children.items():  # parents are roots in every scenario of the study
        V[k, k] = c * c * V[j, j] + sz**2
        V[k, j] = V[j, k] = c * V[j, j]
    for k, (j, c, _) in children.items():
        for k2, (j2, c2, _) in children.items():
            if k < k2 and j == j2:
                V[k, k2] = V[k2, k] = c * c2 * V[j, j]
    return V


@pytest.mark.parametrize(
    ("config", "scenario", "roots", "children", "grouping"),
    [
        ("3,4,3", 0, {0: 0.01, 1: 0.02, 2: 0.03}, {}, ((0,), (1,), (2,))),
        ("3,4,3", 1, {0: 0.01, 2: 0.03}, {1: (0, 2.0, 0.02)}, ((0, 1), (2,))),
        ("3,4,3", 2, {0: 0.01}, {1: (0, 2.0, 0.02), 2: (0, 4.0, 0.03)}, ((0, 1, 2),)),
        (
            "5,5,4",
            0,
            {0: 0.05, 2: 0.02, 4: 0.03},
            {1: (0, 0.1, 0.02), 3: (2, 0.3, 0.03)},
            ((0, 1), (2, 3), (4,)),
        ),
        (
            "5,5,4",
            1,
            {0: 0.05, 3: 0.04},
            {1: (0, 0.1, 0.02), 2: (0, 0.3, 0.01), 4: (3, 0.4, 0.04)},
            ((0, 1, 2), (3, 4)),
        ),
        (
            "5,5,4",
            2,
            {0: 0.05},
            {1: (0, 0.1, 0.02), 2: (0, 0.3, 0.01), 3: (0, 0.4, 0.03), 4: (0, 0.2, 0.04)},
            ((0, 1, 2, 3, 4),),
        ),
    ],
)
def test_scenarios_and_true_groupings(config, scenario, roots, children, grouping):
    sc = lg.vu2024_scenarios(config, sigma_v="exact")[scenario]
    s = sc.s
    np.testing.assert_allclose(sc.sigma_v, analytic(s, roots, children), rtol=1e-13, atol=1e-18)
    assert sc.true_grouping == grouping
    cfg = lg.VU2024[sc.s, sc.n, sc.m]
    # drawing order of the notebooks: roots by index, then the z's by index
    order = cfg.draw_order(scenario)
    assert [k for k, _ in order] == sorted(roots) + sorted(children)


def test_sampled_sigma_v_of_343_is_the_rounded_analytic_one():
    # every (3, 4, 3) entry lies >= 44 standard errors from a rounding midpoint (the page's claim)
    for k, sc in enumerate(lg.vu2024_scenarios("3,4,3", sigma_v="exact")):
        assert not proto._needs_samples(sc.sigma_v, proto.VU2024_NUM_SAMPLES), k
    # ... while (5, 5, 4) holds entries exactly on a midpoint: cov(v1, v2) = 2.5e-4 in every scenario
    for sc in lg.vu2024_scenarios("5,5,4", sigma_v="exact"):
        assert sc.sigma_v[0, 1] == pytest.approx(2.5e-4, rel=1e-12)
        assert proto._needs_samples(sc.sigma_v, proto.VU2024_NUM_SAMPLES)


# ------------------------------------------------------------------------------------------------------------
# Random draws: an independent reimplementation with RandomState.normal, np.cov and scikit-learn
# ------------------------------------------------------------------------------------------------------------
def independent_draws(config: str, seed: int, size: int):
    """The notebooks' draws for one seed, written from their rules: all three scenarios' samples, then per run
    three (rand(m, n), make_spd_matrix(m)) of which the third is used."""
    from sklearn.datasets import make_spd_matrix

    cfg = lg.VU2024[lg.parse_configuration(config)]
    rs = np.random.RandomState(seed)
    sigma = []
    for k in range(3):
        V = {}
        for j, sd in cfg.draw_order(k):
            V[j] = rs.normal(0.0, sd, size)
        for child, parent, coef in sorted(cfg.edges(k)):
            V[child] = coef * V[parent] + V[child]
        sigma.append(np.round(np.cov(np.array([V[j] for j in range(cfg.s)])), 4))
    B0, W0 = [], []
    for _ in range(25 * cfg.runs):
        for _ in range(3):
            B = rs.rand(cfg.m, cfg.n)
            W = make_spd_matrix(cfg.m, random_state=rs)
        B0.append(B)
        W0.append(W)
    return np.stack(sigma), np.stack(B0), np.stack(W0)


@pytest.mark.parametrize("config", ["3,4,3", "5,5,4"])
def test_draws_equal_an_independent_implementation(config):
    size = 4000  # small: every entry is then within 40 standard errors of a midpoint, so all are sampled
    cfg = lg.VU2024[lg.parse_configuration(config)]
    d = proto._draw(cfg, 11, size, True)
    sigma, B0, W0 = independent_draws(config, 11, size)
    np.testing.assert_array_equal(d.sigma_v, sigma)
    np.testing.assert_array_equal(d.B0.reshape(B0.shape), B0)
    np.testing.assert_array_equal(d.W0.reshape(W0.shape), W0)
    # the in-place polar normals are RandomState.normal bitwise, over several chunks; advancing without the
    # values leaves the stream where the values leave it
    size = 2 * draws_mod._CHUNK + 10
    rs1, rs2, rs3 = np.random.RandomState(5), np.random.RandomState(5), np.random.RandomState(5)
    out = draws_mod.normals_into(rs1, np.empty(size), 0.03)
    np.testing.assert_array_equal(out, rs2.normal(0.0, 0.03, size))
    draws_mod.advance_normals(rs3, size)
    assert rs1.random_sample() == rs2.random_sample() == rs3.random_sample()


def test_sampled_sigma_v_and_inits_match_the_notebooks():
    # Σ_V of the notebooks' own code under np.random.seed(0), 10⁷ samples, and the initialisations of one pair
    run = fixture("run_554_seed0.npz")
    tables = fixture("notebook_tables.npz")
    scs = lg.vu2024_scenarios("5,5,4", seed=0)
    for k in range(3):
        np.testing.assert_array_equal(scs[k].sigma_v, tables[f"554_s0_c{k}_sigma_v"])
    d = proto._DRAW_CACHE[((5, 5, 4), 0, proto.VU2024_NUM_SAMPLES)]
    pair = int(run["pair"])
    np.testing.assert_array_equal(d.B0[pair], run["B0"])
    np.testing.assert_array_equal(d.W0[pair], run["W0"])
    sc3 = lg.vu2024_scenarios("3,4,3", seed=0)
    np.testing.assert_array_equal(sc3[0].sigma_v, tables["343_s0_c0_sigma_v"])


def test_partition_order_is_the_notebooks():
    order = fixture("partition_order.npz")
    np.testing.assert_array_equal(_vu2024_assignments(3, 3), order["s3n4m3"])
    np.testing.assert_array_equal(_vu2024_assignments(4, 5), order["s5n5m4"])


# ------------------------------------------------------------------------------------------------------------
# One run: the notebooks' matrices, and an independent float64 implementation
# ------------------------------------------------------------------------------------------------------------
def test_solver_matches_the_notebooks_run():
    run = fixture("run_554_seed0.npz")
    R = run["B0"].shape[0]
    out = solve_protocol(
        np.broadcast_to(run["sigma_y"], (R, 5, 5)),
        np.full(R, float(run["gamma"])),
        np.full(R, float(run["lam"])),
        run["B0"],
        run["W0"],
    )
    np.testing.assert_allclose(out.B, run["B"], rtol=1e-9, atol=1e-12 * np.abs(run["B"]).max())
    np.testing.assert_allclose(out.A, run["A"], rtol=1e-9, atol=1e-12 * np.abs(run["A"]).max())
    np.testing.assert_allclose(out.sigma_w, run["W"], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(out.sigma_z, run["Z"], rtol=1e-9)
    np.testing.assert_allclose(out.recon_error, run["recon"], rtol=1e-7)
    np.testing.assert_array_equal(out.half_steps, run["half_steps"])
    assert proto._kept_run(out.recon_error[None]) == int(run["kept"])
    cov = run["cov_xv"]
    im = lg.im_score(cov, 4, 5, protocol="vu2024")
    labels = fixture("partition_order.npz")["s5n5m4"][int(run["partition"]) - 1]
    assert im.assignment == tuple(labels)
    assert im.score == pytest.approx(float(run["im_max"]), abs=1e-8)
    sap = lg.sap_score(cov, 4, 5, protocol="vu2024", sigma_v=lg.VU2024[5, 5, 4].sigma_v)
    assert sap.score == pytest.approx(float(run["sap"]), rel=1e-12)
    truth = lg.vu2024_scenarios("5,5,4", sigma_v="exact")[int(run["scenario"])].true_grouping
    assert (im.grouping == truth) == bool(run["im_ok"]) and (sap.grouping == truth) == bool(run["sap_ok"])


def reference_run(Sy, gamma, lam, B, W, half_steps=10_000, tol=1e-8):
    """The protocol's run, plainly: decoder first, np.linalg.inv as the notebooks, their objective and their
    stopping rule (evaluated in full only when the parameter changes pass)."""
    inv, fro = np.linalg.inv, lambda X: np.linalg.norm(X, "fro")
    m, n = B.shape
    Syi = inv(Sy)

    def objective(A, B, Z, W):
        Zi = inv(Z)
        X = B @ Sy @ B.T + W
        reg = 0.5 * (np.trace(X) - np.log(np.linalg.det(W)) - m)
        rec = 0.5 * (
            np.trace(X)
            + np.trace(A.T @ Zi @ Sy @ B.T)
            + np.trace(Zi @ A @ B @ Sy)
            - np.trace(Zi @ Sy)
            - np.trace((np.eye(m) + A.T @ Zi @ A) @ X)
            - n * np.log(2 * math.pi)
            - np.log(np.linalg.det(Z))
        )
        R = np.eye(n) - A @ B
        return reg - gamma * rec + lam * np.trace(R @ Sy @ R.T + A @ W @ A.T)

    def recon(A, Z):
        return np.linalg.norm(Sy - (A @ A.T + Z), 2) / np.linalg.norm(Sy, 2)

    A = Z = None
    for i in range(half_steps):
        if i % 2 == 0:
            Wi = inv(W)
            P = inv(Syi + B.T @ Wi @ B)
            A1, Z1 = P @ B.T @ Wi, np.diag(np.diag(P))
            stop = i > 0 and fro(A1 - A) <= tol and fro(Z1 - Z) <= tol and recon(A1, Z1) <= 1e-6
            stop = stop and round(objective(A, B, Z, W) - objective(A1, B, Z1, W), 8) == 0
            A, Z = A1, Z1
        else:
            Q = gamma * inv(Z) + 2 * lam * np.eye(n)
            Mi = inv(np.eye(m) + A.T @ Q @ A)
            B1, W1 = Mi @ A.T @ Q, Mi
            stop = fro(B1 - B) <= tol and fro(W1 - W) <= tol and recon(A, Z) <= 1e-6
            stop = stop and round(objective(A, B, Z, W) - objective(A, B1, Z, W1), 8) == 0
            B, W = B1, W1
        assert np.isfinite(B).all() and np.isfinite(A).all()
        if stop:
            return A, B, np.diag(Z), W, recon(A, Z), i + 1
    return A, B, np.diag(Z), W, recon(A, Z), half_steps


def reference_im(cov, m, s, order):
    """The notebooks' I_m: latent block I, determinants, values rounded to 8 decimals, first maximum wins."""
    S = cov.copy()
    S[:m, :m] = np.eye(m)
    det = lambda idx: np.linalg.det(S[np.ix_(idx, idx)])  # noqa: E731
    table = []
    for labels in order:
        groups = [[m + i for i in range(s) if labels[i] == j] for j in range(m)]
        val = sum(0.5 * math.log(det(g) / det([j] + g)) for j, g in enumerate(groups) if g)
        for gi, gj in itertools.combinations([g for g in groups if g], 2):
            val -= 0.5 * math.log(det(gi) * det(gj) / det(gi + gj))
        table.append(round(val, 8))
    best, arg = -1000.0, None
    for r, v in enumerate(table):
        if v > best:
            best, arg = v, r
    return np.array(table), arg


def partition(labels):
    return sorted(sorted(i for i in range(len(labels)) if labels[i] == g) for g in set(labels))


def test_one_pair_against_an_independent_implementation():
    # (5, 5, 4) scenario 1 with the analytic Σ_V, γ = 1, λ = 0.01, the two runs the notebook makes from a
    # fixed RandomState (three make_spd draws per run, the third used); everything computed here independently
    from sklearn.datasets import make_spd_matrix

    cfg = lg.VU2024[5, 5, 4]
    sc = lg.vu2024_scenarios("5,5,4", sigma_v="exact")[0]
    Sv = analytic(5, {0: 0.05, 2: 0.02, 4: 0.03}, {1: (0, 0.1, 0.02), 3: (2, 0.3, 0.03)})
    Gam = np.array(
        [[1, 0, 0, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1], [0, 0, 1, 0, 0], [0, 1, 0, 0, 0]], float
    )
    Sy = Gam @ Sv @ Gam.T + 0.01**2 * np.eye(5)
    rs = np.random.RandomState(2024)
    B0, W0 = [], []
    for _ in range(cfg.runs):
        for _ in range(3):
            B, W = rs.rand(4, 5), make_spd_matrix(4, random_state=rs)
        B0.append(B)
        W0.append(W)
    gamma, lam = 1.0, 0.01
    ref = [reference_run(Sy, gamma, lam, B, W) for B, W in zip(B0, W0, strict=True)]
    out = solve_protocol(
        np.broadcast_to(Sy, (2, 5, 5)), np.full(2, gamma), np.full(2, lam), np.stack(B0), np.stack(W0)
    )
    for r, (A, B, Z, W, rec, steps) in enumerate(ref):
        np.testing.assert_allclose(out.B[r], B, rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(out.A[r], A, rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(out.sigma_z[r], Z, rtol=1e-9)
        np.testing.assert_allclose(out.sigma_w[r], W, rtol=1e-8, atol=1e-13)
        assert out.recon_error[r] == pytest.approx(rec, rel=1e-8)
        assert out.half_steps[r] == steps
    recs = [round(x[4], 8) for x in ref]
    kept = 0 if not recs[1] < recs[0] else 1
    assert int(proto._kept_run(out.recon_error[None])[0]) == kept
    B = ref[kept][1]
    cross = B @ Gam @ Sv
    cov = np.block([[np.eye(4), cross], [cross.T, Sv]])
    order = fixture("partition_order.npz")["s5n5m4"]
    table, arg = reference_im(cov, 4, 5, order)
    im = lg.im_score(cov, 4, 5, protocol="vu2024")
    np.testing.assert_allclose(im.table, table, rtol=0, atol=1.01e-8)
    assert im.assignment == tuple(order[arg])
    sap_ref = (cross / np.array(cfg.sigma_v)) ** 2
    sap = lg.sap_score(cov, 4, 5, protocol="vu2024", sigma_v=cfg.sigma_v)
    np.testing.assert_allclose(sap.matrix, sap_ref, rtol=1e-14)
    truth = partition([0, 0, 1, 1, 2])
    assert (partition(order[arg]) == truth) == (im.grouping == sc.true_grouping)
    assert (partition(np.argmax(sap_ref, axis=0)) == truth) == (sap.grouping == sc.true_grouping)


# ------------------------------------------------------------------------------------------------------------
# Per-seed tables against the notebooks
# ------------------------------------------------------------------------------------------------------------
def test_per_seed_table_matches_the_notebooks():
    tables = fixture("notebook_tables.npz")
    res = lg.vu2024("5,5,4", seeds=[0], workers=1)
    for k in range(3):
        key = f"554_s0_c{k}"
        np.testing.assert_array_equal(res.success["im"][0, k].ravel(), tables[f"{key}_im_ok"])
        np.testing.assert_array_equal(res.success["sap"][0, k].ravel(), tables[f"{key}_sap_ok"])
        np.testing.assert_array_equal(res.kept_run[0, k].ravel(), tables[f"{key}_kept"])
        np.testing.assert_array_equal(res.half_steps[0, k].reshape(25, -1), tables[f"{key}_half_steps"])
        np.testing.assert_allclose(res.recon_error[0, k].reshape(25, -1), tables[f"{key}_recon"], rtol=1e-6)
        for metric in ("im", "sap"):
            assert res.per_seed[(metric, k + 1)][0] == 4 * tables[f"{key}_{metric}_ok"].sum()


# ------------------------------------------------------------------------------------------------------------
# The result object, workers, the metric variants, the CLI
# ------------------------------------------------------------------------------------------------------------
quick = functools.partial(lg.vu2024, num_samples=4000, half_steps=60)


def test_result_format_json_plot(tmp_path):
    res = quick("3,4,3", seeds=[0, 1, 2], workers=1)
    assert set(res.per_seed) == {(mt, k) for mt in ("im", "sap") for k in (1, 2, 3)}
    for key, rates in res.per_seed.items():
        assert rates.shape == (3,) and np.all((rates >= 0) & (rates <= 100))
        np.testing.assert_allclose(res.per_pair[key].mean() * 100, rates.mean())
        assert res.per_pair[key].shape == (5, 5)
    text = res.format()
    assert "| I_3 | 1 | 16 |" in text and "| SAP | 3 | 92 |" in text
    summary = res.summary("im", 1)
    assert summary["slide_inside"] == (summary["min"] <= 16 <= summary["max"])
    assert "(rows γ, columns λ)" in res.format_pairs()
    data = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert data["per_seed"]["im/1"] == res.per_seed[("im", 1)].tolist()
    assert data["constants"]["runs_per_pair"] == 6
    pytest.importorskip("matplotlib")
    fig = res.plot(str(tmp_path / "maps.png"))
    assert (tmp_path / "maps.png").stat().st_size > 1000
    assert len(fig.axes) >= 6


def test_workers_and_cache_give_identical_results():
    one = quick("5,5,4", seeds=[3, 4, 5], workers=1, encoder="diagonal")
    proto._DRAW_CACHE.clear()
    two = quick("5,5,4", seeds=[3, 4, 5], workers=2, encoder="diagonal")
    np.testing.assert_array_equal(one.recon_error, two.recon_error)
    for metric in ("im", "sap"):
        np.testing.assert_array_equal(one.success[metric], two.success[metric])
    exact = quick("5,5,4", seeds=[3, 4, 5], workers=1, encoder="diagonal", sigma_v="exact")
    assert exact.timing["draw_s"] < 1e-3  # the initialisations came from the cache
    assert not np.array_equal(exact.sigma_v, one.sigma_v)


def test_metric_variants():
    rng = np.random.default_rng(0)
    sc = lg.vu2024_scenarios("3,4,3", sigma_v="exact")[1]
    B = rng.standard_normal((3, 4)) * 20
    cov = lg.joint_covariance(sc, B, 0.5 * np.eye(3))
    ours = lg.im_score(cov, 3, 3)
    theirs = lg.im_score(cov, 3, 3, protocol="vu2024")
    # the vu2024 variant ignores the latent block (replaced by I) and rounds to 8 decimals
    cov_i = cov.copy()
    cov_i[:3, :3] = np.diag([7.0, 3.0, 5.0])
    assert np.array_equal(lg.im_score(cov_i, 3, 3, protocol="vu2024").table, theirs.table, equal_nan=True)
    mixed_radix = np.argsort(order_index(theirs.assignments))
    np.testing.assert_array_equal(theirs.assignments[mixed_radix], ours.assignments)
    assert np.abs(ours.table - theirs.table[mixed_radix]).max() > 1e-3  # the latent block matters
    assert np.all(np.isnan(theirs.table) | (np.round(theirs.table, 8) == theirs.table))
    # a collapsed code: every value rounds to 0, the first assignment (all factors on the last latent) wins
    col = lg.joint_covariance(sc, 1e-9 * B, np.eye(3))
    im0 = lg.im_score(col, 3, 3, protocol="vu2024")
    assert im0.assignment == (2, 2, 2) and im0.grouping == ((0, 1, 2),) and im0.margin == 0.0
    # NaN never wins: latent 0's cross-covariance too large for the identity latent block makes every grouping
    # that gives it a factor NaN; the others stay finite and the first of their maxima wins
    big = cov.copy()
    big[0, 3:] *= 1e3
    big[3:, 0] *= 1e3
    res = lg.im_score(big, 3, 3, protocol="vu2024")
    on0 = (res.assignments == 0).any(axis=1)
    assert np.isnan(res.table[on0]).any() and not np.isnan(res.table[~on0]).any()
    assert res.score == np.nanmax(res.table)
    assert res.assignment == tuple(res.assignments[np.flatnonzero(res.table == res.score)[0]])
    sap = lg.sap_score(cov, 3, 3, protocol="vu2024", sigma_v=[0.01, 0.02, 0.03])
    np.testing.assert_allclose(sap.matrix, (cov[:3, 3:] / np.array([0.01, 0.02, 0.03])) ** 2)
    with pytest.raises(ValueError, match="protocol"):
        lg.im_score(cov, 3, 3, protocol="nb")
    with pytest.raises(ValueError, match="sigma_v"):
        lg.sap_score(cov, 3, 3, sigma_v=[1, 1, 1])


def order_index(assignments):
    """Position of each labelled assignment in mixed-radix order."""
    m = assignments.max() + 1
    return (assignments * (m ** np.arange(assignments.shape[1])[::-1])).sum(1)


def test_argument_errors():
    with pytest.raises(ValueError, match="config"):
        lg.vu2024("3,3,3")
    with pytest.raises(ValueError, match="encoder"):
        lg.vu2024("3,4,3", encoder="mean-field")
    with pytest.raises(ValueError, match="sigma_v"):
        lg.vu2024("3,4,3", sigma_v="analytic")
    with pytest.raises(ValueError, match="seeds"):
        lg.vu2024("3,4,3", seeds=[1, 1])
    with pytest.raises(ValueError, match="seed"):
        lg.vu2024("3,4,3", seeds=[-1])
    with pytest.raises(ValueError, match="workers"):
        lg.vu2024("3,4,3", workers=0)
    with pytest.raises(ValueError, match="num_samples"):
        lg.vu2024_scenarios("3,4,3", num_samples=3)


def test_cli_vu2024(tmp_path, capsys, monkeypatch):
    from tangentlens.cli import main

    monkeypatch.setattr(lg, "vu2024", quick)
    out = tmp_path / "vu.json"
    argv = [
        "linear-gaussian",
        "--protocol",
        "vu2024",
        "--config",
        "3,4,3",
        "--seeds",
        "2",
        "--encoder",
        "diagonal",
    ]
    assert main(argv + ["--sigma-v", "exact", "--workers", "1", "--pairs", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Σ_W diagonal (mean-field), Σ_V exact, seeds 0–1 (2)" in text and "| I_3 | 1 | 16 |" in text
    assert "rows γ, columns λ" in text
    data = json.loads(out.read_text())
    assert data["protocol"] == "vu2024" and data["results"][0]["encoder"] == "diagonal"
    assert main(["linear-gaussian", "--protocol", "vu2024", "--lam", "0"]) == 2
    assert "--lam applies to --protocol tangentlens" in capsys.readouterr().err
