"""The Vu–Wei–Wan linear-Gaussian study (``linear_gaussian.vu2024``) against a plain per-run loop of the same
protocol (``bench/baselines/vu2024_loop.py``: one run at a time with ``np.linalg``, the notebooks' objective
after every half-step, as their notebooks iterate).

Cases (CPU; numpy only, the ``device`` argument is ignored):

- ``linear_gaussian.vu2024_solve``: the 150 runs (3 scenarios × 25 (γ, λ) pairs × 2 restarts) of one seed of
  (s, n, m) = (5, 5, 4), full Σ_W, 10 000 half-steps each, from the seed's initialisations. Ours: one batched
  ``solve_protocol`` call. Loop: timed on 3 of the runs (one per γ ≤ 1, = 1, > 1) and extrapolated linearly
  through ``variant_work`` (every run does 10 000 half-steps here). The check compares those runs' final B.
- ``linear_gaussian.vu2024_draws``: Σ_V of the three scenarios (10⁷ samples each) and the initialisations of
  one seed of (5, 5, 4). Ours: the seeded draws of ``vu2024``; loop: ``RandomState.normal`` for every sample,
  ``np.cov``, scikit-learn's ``make_spd_matrix``, as the notebooks. Checked equal.
- ``linear_gaussian.vu2024_study``: the whole target, both configurations × 20 seeds × full and diagonal Σ_W
  (24 000 runs, the draws included, 2 worker processes, nothing cached), once. The loop is timed on 4 runs and
  extrapolated to the 24 000 (its draws are not counted, which flatters it).
"""

from __future__ import annotations

import numpy as np
import torch

import tangentlens.linear_gaussian.vu2024_protocol as proto
from bench.baselines import vu2024_loop
from bench.harness import Case
from tangentlens import linear_gaussian as lg
from tangentlens.linear_gaussian._vu2024_solver import solve_protocol


def _problem(cfg: proto.Vu2024Config, seed: int, size: int):
    d = proto._draw(cfg, seed, size, True)
    G, L, R = len(proto.VU2024_GAMMAS), len(proto.VU2024_LAMBDAS), cfg.runs
    sigma_y = proto._sigma_y(cfg, d.sigma_v)  # (3, n, n)
    idx = np.indices((3, G, L, R)).reshape(4, -1)
    args = (
        sigma_y[idx[0]],
        np.asarray(proto.VU2024_GAMMAS)[idx[1]],
        np.asarray(proto.VU2024_LAMBDAS)[idx[2]],
        d.B0.reshape(G, L, R, cfg.m, cfg.n)[idx[1], idx[2], idx[3]],
        d.W0.reshape(G, L, R, cfg.m, cfg.m)[idx[1], idx[2], idx[3]],
    )
    return d, args


def cases(device: torch.device, quick: bool) -> list[Case]:
    del device
    cfg5, cfg3 = lg.VU2024[5, 5, 4], lg.VU2024[3, 4, 3]
    half = 400 if quick else proto.VU2024_HALF_STEPS
    size = 200_000 if quick else proto.VU2024_NUM_SAMPLES
    _, args = _problem(cfg5, 0, size)
    N = args[0].shape[0]
    # one run per regime: γ = 0.98 (a fixed point), γ = 1.00, γ = 1.02 (Σ_W shrinking), λ = 0
    sample = [int(np.flatnonzero((args[1] == g) & (args[2] == 0.0))[0]) for g in (0.98, 1.0, 1.02)]
    out: list[Case] = []

    def ours_solve():
        return solve_protocol(*args, half_steps=half)

    def loop_solve():
        return [vu2024_loop.run(*(a[i] for a in args), half_steps=half) for i in sample]

    def check_solve():
        mine, ref = ours_solve(), loop_solve()
        for i, r in zip(sample, ref, strict=True):
            np.testing.assert_allclose(mine.B[i], r[1], rtol=1e-8, atol=1e-12 * np.abs(r[1]).max())
            assert mine.half_steps[i] == r[5]

    meta = {"configuration": "5,5,4", "runs": N, "half_steps": half, "loop_runs": len(sample)}
    out.append(
        Case(
            name="linear_gaussian.vu2024_solve",
            variants={"tangentlens": ours_solve, "loop": loop_solve},
            ours="tangentlens",
            baseline="loop",
            work=N,
            work_unit="run",
            repeats=1 if quick else 3,
            warmup=0,
            meta=meta,
            check=check_solve,
            variant_work={"tangentlens": N, "loop": len(sample)},
        )
    )

    def ours_draws():
        return proto._draw(cfg5, 1, size, True)

    def loop_draws():
        return vu2024_loop.draws(cfg5, 1, size)

    def check_draws():
        d, (sigma, B0, W0) = ours_draws(), loop_draws()
        np.testing.assert_array_equal(d.sigma_v, sigma)
        np.testing.assert_array_equal(d.B0.reshape(B0.shape), B0)
        np.testing.assert_array_equal(d.W0.reshape(W0.shape), W0)

    out.append(
        Case(
            name="linear_gaussian.vu2024_draws",
            variants={"tangentlens": ours_draws, "loop": loop_draws},
            ours="tangentlens",
            baseline="loop",
            work=15 * size,  # the normals drawn: 3 scenarios × 5 arrays
            work_unit="normal",
            repeats=1 if quick else 3,
            warmup=0,
            meta={"configuration": "5,5,4", "samples": size},
            check=check_draws,
        )
    )
    if quick:
        return out

    total_runs = 2 * 20 * 3 * 25 * (cfg3.runs + cfg5.runs)
    _, args3 = _problem(cfg3, 0, size)
    sample3 = [int(np.flatnonzero((args3[1] == g) & (args3[2] == 0.0))[0]) for g in (0.98, 1.02)]

    def ours_study():
        proto._DRAW_CACHE.clear()
        for config in ("3,4,3", "5,5,4"):
            for encoder in ("full", "diagonal"):
                lg.vu2024(config, seeds=range(20), encoder=encoder, workers=2)

    def loop_study():
        for i in sample3:
            vu2024_loop.run(*(a[i] for a in args3))
        for i in sample[::2]:
            vu2024_loop.run(*(a[i] for a in args))

    out.append(
        Case(
            name="linear_gaussian.vu2024_study",
            variants={"tangentlens": ours_study, "loop": loop_study},
            ours="tangentlens",
            baseline="loop",
            work=total_runs,
            work_unit="run",
            repeats=1,
            warmup=0,
            meta={
                "seeds": 20,
                "configurations": ["3,4,3", "5,5,4"],
                "encoders": ["full", "diagonal"],
                "workers": 2,
            },
            variant_work={"tangentlens": total_runs, "loop": len(sample3) + len(sample[::2])},
        )
    )
    return out
