"""The Vu–Wei–Wan (2024) linear-Gaussian γλ-VAE study exactly as its authors ran it: the ``vu2024`` protocol.

The slides "Investigating Disentanglement in β-VAE within a Linear Gaussian Setting" report success rates of
I_m and SAP computed by two notebooks (``Minitechy/betaVAE_dis``: ``I3_vs_SAP_s3n4m3``, ``I4_vs_SAP_s5n5m4``).
This module reproduces them as a preset, quirks included, beside the library's own study
(:func:`success_rates`):

* the authors' constants (:data:`VU2024`): Γ, σ², σ_v, σ_z, coefficients, true groupings, grids
  γ ∈ {0.98, …, 1.02}, λ ∈ {−0.02, …, 0.02}, 1 + 5 / 1 + 1 runs per (γ, λ);
* Σ_V as they had it: ``np.round(np.cov(10⁷ samples), 4)`` from the seeded stream (``sigma_v="sampled"``), or
  the analytic one (``"exact"``);
* their solver (decoder first, their stopping rule, 10 000 half-steps, their initialisations, the run with the
  smallest reconstruction error rounded to 8 decimals kept, the first on ties);
* their metrics (latent block I_m, nominal σ_v in SAP, 8-decimal rounding, first maximum in their enumeration
  order) and their count: successes over all 25 pairs, whatever the run did.

The notebooks never seed their RNG. Seed ``s`` here is their scenario loop body run after
``np.random.seed(s)`` (the same seed before each scenario), drawn from a ``RandomState(s)`` in their exact
order, so the per-seed rates equal the notebooks' own under that seeding (see ``docs/linear_gaussian.md`` for
the measured agreement). The published tables are single unseeded draws: :meth:`Vu2024Result.format` sets them
beside the spread over seeds."""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from tangentlens.linear_gaussian._common import _json_array
from tangentlens.linear_gaussian._vu2024_draws import advance_normals, init_draws, sample_covariance
from tangentlens.linear_gaussian._vu2024_solver import solve_protocol
from tangentlens.linear_gaussian.metrics import (
    _first_max,
    _same_partition,
    _sap_from_matrix,
    _vu2024_im_tables,
    _vu2024_sap_matrix,
)
from tangentlens.linear_gaussian.scenarios import Scenario, parse_configuration

__all__ = [
    "VU2024",
    "VU2024_GAMMAS",
    "VU2024_LAMBDAS",
    "Vu2024Config",
    "Vu2024Result",
    "vu2024",
    "vu2024_scenarios",
]

Encoder = Literal["full", "diagonal"]
SigmaV = Literal["sampled", "exact"]

#: γ and λ grids of the notebooks (their ``np.round(np.arange(...), 2)``).
VU2024_GAMMAS: tuple[float, ...] = (0.98, 0.99, 1.0, 1.01, 1.02)
VU2024_LAMBDAS: tuple[float, ...] = (-0.02, -0.01, 0.0, 0.01, 0.02)
#: half-steps per run (their MAX_ITERS), the stopping tolerances (TOL_ERR, and recon ≤ 1e-6).
VU2024_HALF_STEPS = 10_000
VU2024_TOL = 1e-8
VU2024_RECON_TOL = 1e-6
#: samples behind the sampled Σ_V and its rounding; the reconstruction error is rounded before the restarts
#: are compared.
VU2024_NUM_SAMPLES = 10_000_000
VU2024_SIGMA_V_DECIMALS = 4
VU2024_RECON_DECIMALS = 8
#: an entry of Σ_V is estimated from the samples when its analytic value lies within this many standard errors
#: of a rounding midpoint; further away the rounded estimate equals the rounded analytic value except with
#: probability below 2e-23, so only the samples that enter the estimated entries are computed, the others are
#: drawn past (the stream advances identically).
_MIDPOINT_SE = 10.0


@dataclass(frozen=True)
class Vu2024Config:
    """The constants of one notebook. Factors are 0-based here (v1 = factor 0).

    ``gamma_rows[j]`` is the coordinate of Y that observes factor j (Γ = those columns of the identity);
    ``noise_std`` σ (the notebooks' σ² is ``noise_std**2`` in floating point); ``sigma_v[j]`` the std of
    factor j when it is a root (and the σ_j of their SAP for every factor); ``sigma_z[j]`` the std of z_j in
    ``v_j = c·v_parent + z_j``; ``scenarios[k]`` the edges (child, parent, coefficient name) of scenario k+1;
    ``runs`` = runs per (γ, λ) pair (1 + their MAX_SOLS); ``slides`` and ``notebook_outputs`` the published
    rates and the ones stored in the notebooks, keyed (metric, scenario) with metric "im" or "sap"."""

    configuration: tuple[int, int, int]
    gamma_rows: tuple[int, ...]
    noise_std: float
    sigma_v: tuple[float, ...]
    sigma_z: dict[int, float]
    coefficients: dict[str, float]
    scenarios: tuple[tuple[tuple[int, int, str], ...], ...]
    runs: int
    slides: dict[tuple[str, int], float]
    notebook_outputs: dict[tuple[str, int], float]

    @property
    def s(self) -> int:
        return self.configuration[0]

    @property
    def n(self) -> int:
        return self.configuration[1]

    @property
    def m(self) -> int:
        return self.configuration[2]

    def edges(self, k: int) -> list[tuple[int, int, float]]:
        """Scenario k (0-based) as (child, parent, coefficient value) edges."""
        return [(c, p, self.coefficients[name]) for c, p, name in self.scenarios[k]]

    def factor_variances(self, k: int) -> list[float]:
        """Variance of the independent part of each factor in scenario k: σ_v² for roots, σ_z² for
        children."""
        children = {c for c, _, _ in self.scenarios[k]}
        return [self.sigma_z[j] ** 2 if j in children else self.sigma_v[j] ** 2 for j in range(self.s)]

    def draw_order(self, k: int) -> list[tuple[int, float]]:
        """(factor, std) in the notebooks' drawing order for scenario k: roots by index, then the z's by
        index."""
        children = sorted(c for c, _, _ in self.scenarios[k])
        roots = [j for j in range(self.s) if j not in children]
        return [(j, self.sigma_v[j]) for j in roots] + [(j, self.sigma_z[j]) for j in children]

    def to_dict(self) -> dict[str, Any]:
        return {
            "configuration": list(self.configuration),
            "gamma_rows": list(self.gamma_rows),
            "noise_std": self.noise_std,
            "sigma2": self.noise_std**2,
            "sigma_v": list(self.sigma_v),
            "sigma_z": {str(k): v for k, v in self.sigma_z.items()},
            "coefficients": dict(self.coefficients),
            "scenarios": [[list(e) for e in sc] for sc in self.scenarios],
            "runs_per_pair": self.runs,
            "gammas": list(VU2024_GAMMAS),
            "lambdas": list(VU2024_LAMBDAS),
            "half_steps": VU2024_HALF_STEPS,
            "tol": VU2024_TOL,
            "recon_tol": VU2024_RECON_TOL,
            "num_samples": VU2024_NUM_SAMPLES,
        }


def _rates(values: Sequence[float]) -> dict[tuple[str, int], float]:
    return {
        (metric, k): float(v)
        for (metric, k), v in zip(((a, b) for a in ("im", "sap") for b in (1, 2, 3)), values, strict=True)
    }


#: The two notebooks. (3, 4, 3): Γ = e1, e2, e3 of I_4 (coordinate 4 is noise). (5, 5, 4): Γ rows [1,0,0,0,0],
#: [0,0,0,1,0], [0,0,0,0,1], [0,0,1,0,0], [0,1,0,0,0] (v1 → y1, v2 → y5, v3 → y4, v4 → y2, v5 → y3).
VU2024: dict[tuple[int, int, int], Vu2024Config] = {
    (3, 4, 3): Vu2024Config(
        configuration=(3, 4, 3),
        gamma_rows=(0, 1, 2),
        noise_std=0.04,
        sigma_v=(0.01, 0.02, 0.03),
        sigma_z={1: 0.02, 2: 0.03},
        coefficients={"alpha": 2.0, "beta": 4.0},
        scenarios=((), ((1, 0, "alpha"),), ((1, 0, "alpha"), (2, 0, "beta"))),
        runs=6,
        slides=_rates([16, 64, 100, 40, 92, 92]),
        notebook_outputs=_rates([16, 64, 100, 40, 92, 92]),
    ),
    (5, 5, 4): Vu2024Config(
        configuration=(5, 5, 4),
        gamma_rows=(0, 4, 3, 1, 2),
        noise_std=0.01,
        sigma_v=(0.05, 0.01, 0.02, 0.04, 0.03),
        sigma_z={1: 0.02, 2: 0.01, 3: 0.03, 4: 0.04},
        coefficients={"alpha": 0.1, "beta": 0.3, "delta": 0.4, "omega": 0.2},
        scenarios=(
            ((1, 0, "alpha"), (3, 2, "beta")),
            ((1, 0, "alpha"), (2, 0, "beta"), (4, 3, "delta")),
            ((1, 0, "alpha"), (2, 0, "beta"), (3, 0, "delta"), (4, 0, "omega")),
        ),
        runs=2,
        slides=_rates([44, 60, 56, 52, 20, 4]),
        notebook_outputs=_rates([20, 64, 40, 44, 32, 4]),
    ),
}


def _config(config: str | Sequence[int]) -> Vu2024Config:
    key = parse_configuration(config)
    return VU2024[key]


def _analytic_sigma_v(cfg: Vu2024Config, k: int) -> np.ndarray:
    return _scenario(cfg, k, None).sigma_v


def _scenario(cfg: Vu2024Config, k: int, sigma_v: np.ndarray | None) -> Scenario:
    s, n, m = cfg.configuration
    return Scenario(
        s,
        n,
        m,
        cfg.gamma_rows,
        cfg.noise_std**2,
        cfg.edges(k),
        name=f"scenario {k + 1}",
        factor_noise=cfg.factor_variances(k),
        factor_covariance=sigma_v,
    )


def _near_midpoint(analytic: np.ndarray, size: int) -> np.ndarray:
    """(s, s) mask of the entries within _MIDPOINT_SE standard errors of a rounding midpoint of the 4-decimal
    grid (the standard error of a sample covariance of ``size`` Gaussian draws)."""
    d = np.diag(analytic)
    se = np.sqrt((np.outer(d, d) + analytic**2) / (size - 1))
    scaled = analytic * 10.0**VU2024_SIGMA_V_DECIMALS
    dist = np.abs(scaled - np.floor(scaled) - 0.5) * 10.0**-VU2024_SIGMA_V_DECIMALS
    return dist < _MIDPOINT_SE * se


def _needs_samples(analytic: np.ndarray, size: int) -> bool:
    return bool(np.any(_near_midpoint(analytic, size)))


def _sources(cfg: Vu2024Config, k: int, factors: set[int]) -> set[int]:
    """The drawn arrays (roots, and the z of dependents) that the given factors of scenario k are built
    from."""
    parent = {c: p for c, p, _ in cfg.scenarios[k]}
    out: set[int] = set()
    for f in factors:
        while True:
            out.add(f)
            if f not in parent:
                break
            f = parent[f]
    return out


@dataclass
class _Draws:
    sigma_v: np.ndarray | None  # (3, s, s) sampled and rounded, or None when only the stream was advanced
    B0: np.ndarray  # (pairs, runs, m, n)
    W0: np.ndarray  # (pairs, runs, m, m)


def _draw(cfg: Vu2024Config, seed: int, num_samples: int, sampled: bool) -> _Draws:
    rs = np.random.RandomState(seed)
    sigma = []
    buf = None
    for k in range(3):
        analytic = _analytic_sigma_v(cfg, k)
        near = _near_midpoint(analytic, num_samples)
        if sampled and near.any():
            buf = np.empty((cfg.s, num_samples)) if buf is None else buf
            rows = sorted({int(i) for i in np.flatnonzero(near.any(axis=1))})
            values = _sources(cfg, k, set(rows))
            cov = sample_covariance(
                rs, cfg.draw_order(k), cfg.edges(k), cfg.s, num_samples, out=buf, values=values, rows=rows
            )
            sigma.append(
                np.where(
                    near, np.round(cov, VU2024_SIGMA_V_DECIMALS), np.round(analytic, VU2024_SIGMA_V_DECIMALS)
                )
                + 0.0
            )
        else:
            for _ in cfg.draw_order(k):
                advance_normals(rs, num_samples)
            sigma.append(np.round(analytic, VU2024_SIGMA_V_DECIMALS) + 0.0)
    B0, W0 = init_draws(rs, len(VU2024_GAMMAS) * len(VU2024_LAMBDAS), cfg.runs, cfg.m, cfg.n)
    return _Draws(np.stack(sigma) if sampled else None, B0, W0)


#: draws already made in this process, keyed (configuration, seed, num_samples): both encoders and both Σ_V
#: modes share the initialisations of a seed (the stream is advanced identically).
_DRAW_CACHE: dict[tuple[tuple[int, int, int], int, int], _Draws] = {}


def _cached_draws(cfg: Vu2024Config, seed: int, num_samples: int, sampled: bool) -> _Draws | None:
    hit = _DRAW_CACHE.get((cfg.configuration, seed, num_samples))
    if hit is None or (sampled and hit.sigma_v is None):
        return None
    return hit


def vu2024_scenarios(
    config: str | Sequence[int],
    *,
    sigma_v: SigmaV = "sampled",
    seed: int = 0,
    num_samples: int = VU2024_NUM_SAMPLES,
) -> list[Scenario]:
    """The three scenarios of a notebook, ``config`` ``"3,4,3"`` or ``"5,5,4"``, as :class:`Scenario` objects
    (the authors' Γ, σ², dependency structure, noise variances and true grouping).

    ``sigma_v="sampled"`` gives each the Σ_V the notebooks used: ``np.round(np.cov(samples), 4)`` of
    ``num_samples`` draws of V from ``RandomState(seed)`` in their order (see :func:`vu2024`); ``"exact"`` the
    analytic Σ_V. The sampled matrices are cached per seed for :func:`vu2024`.
    """
    cfg = _config(config)
    if sigma_v not in ("sampled", "exact"):
        raise ValueError(f"sigma_v: expected 'sampled' or 'exact', got {sigma_v!r}")
    seed = _check_seed(seed)
    num_samples = _check_num_samples(num_samples)
    if sigma_v == "exact":
        return [_scenario(cfg, k, None) for k in range(3)]
    draws = _cached_draws(cfg, seed, num_samples, True)
    if draws is None:
        draws = _DRAW_CACHE[(cfg.configuration, seed, num_samples)] = _draw(cfg, seed, num_samples, True)
    return [_scenario(cfg, k, draws.sigma_v[k]) for k in range(3)]


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed: expected an integer in [0, 2**32) (a RandomState seed), got {seed!r}")
    return int(seed)


def _check_num_samples(num_samples: Any) -> int:
    if (
        isinstance(num_samples, bool)
        or not isinstance(num_samples, (int, np.integer))
        or num_samples < 4
        or num_samples % 2
    ):
        raise ValueError(f"num_samples: expected an even integer >= 4, got {num_samples!r}")
    return int(num_samples)


# ----------------------------------------------------------------------------------------------------------
# Solving a chunk of seeds (in this process or in a worker)
# ----------------------------------------------------------------------------------------------------------
@dataclass
class _ChunkOut:
    draws: list[_Draws]
    B: np.ndarray  # (seeds, 3, G, L, runs, m, n)
    recon: np.ndarray  # (seeds, 3, G, L, runs)
    half_steps: np.ndarray
    stopped: np.ndarray
    nonfinite: np.ndarray
    draw_seconds: float
    solve_seconds: float
    draw_cpu: float
    solve_cpu: float


def _solve_chunk(
    key: tuple[int, int, int],
    seeds: list[int],
    draws: list[_Draws | None],
    diagonal: bool,
    sampled: bool,
    num_samples: int,
    half_steps: int,
) -> _ChunkOut:
    cfg = VU2024[key]
    s, n, m = key
    t0, c0 = time.perf_counter(), time.process_time()
    draws = [
        d if d is not None else _draw(cfg, sd, num_samples, sampled)
        for sd, d in zip(seeds, draws, strict=True)
    ]
    t1, c1 = time.perf_counter(), time.process_time()
    G, L, R = len(VU2024_GAMMAS), len(VU2024_LAMBDAS), cfg.runs
    shape = (len(seeds), 3, G, L, R)
    sigma_y = np.stack([_sigma_y(cfg, _sigma_v_of(cfg, d, sampled)) for d in draws])  # (seeds, 3, n, n)
    idx = np.indices(shape).reshape(len(shape), -1)
    B0 = np.stack([d.B0 for d in draws]).reshape(len(seeds), G, L, R, m, n)
    W0 = np.stack([d.W0 for d in draws]).reshape(len(seeds), G, L, R, m, m)
    runs = solve_protocol(
        sigma_y[idx[0], idx[1]],
        np.asarray(VU2024_GAMMAS)[idx[2]],
        np.asarray(VU2024_LAMBDAS)[idx[3]],
        B0[idx[0], idx[2], idx[3], idx[4]],
        W0[idx[0], idx[2], idx[3], idx[4]],
        diagonal=diagonal,
        half_steps=half_steps,
        tol=VU2024_TOL,
        recon_tol=VU2024_RECON_TOL,
    )
    t2, c2 = time.perf_counter(), time.process_time()
    return _ChunkOut(
        draws=draws,
        B=runs.B.reshape(shape + (m, n)),
        recon=runs.recon_error.reshape(shape),
        half_steps=runs.half_steps.reshape(shape),
        stopped=runs.stopped.reshape(shape),
        nonfinite=runs.nonfinite.reshape(shape),
        draw_seconds=t1 - t0,
        solve_seconds=t2 - t1,
        draw_cpu=c1 - c0,
        solve_cpu=c2 - c1,
    )


def _sigma_v_of(cfg: Vu2024Config, draws: _Draws, sampled: bool) -> np.ndarray:
    if sampled:
        assert draws.sigma_v is not None
        return draws.sigma_v
    return np.stack([_analytic_sigma_v(cfg, k) for k in range(3)])


def _sigma_y(cfg: Vu2024Config, sigma_v: np.ndarray) -> np.ndarray:
    """Σ_Y = Γ Σ_V Γᵀ + σ² I per scenario, with the notebooks' σ² = noise_std**2."""
    G = np.eye(cfg.n)[:, list(cfg.gamma_rows)]
    return G @ sigma_v @ G.T + cfg.noise_std**2 * np.identity(cfg.n)


# ----------------------------------------------------------------------------------------------------------
# Result
# ----------------------------------------------------------------------------------------------------------
METRIC_NAMES = {"im": "I_m", "sap": "SAP"}


@dataclass
class Vu2024Result:
    """Success rates of the ``vu2024`` protocol over seeds.

    ``per_seed[(metric, k)]``: array [n_seeds] of success rates in % (successes over the 25 (γ, λ) pairs), for
    metric ``"im"`` or ``"sap"`` and scenario k = 1, 2, 3. ``per_pair[(metric, k)]``: array [len(gammas),
    len(lambdas)] of the fraction of seeds that succeed at each pair. ``success[metric]``: the flags
    [seed, scenario, γ, λ] behind both. ``recon_error`` [seed, scenario, γ, λ, run] (unrounded), ``kept_run``
    [seed, scenario, γ, λ] the run the notebooks keep, ``half_steps`` / ``stopped`` per run, ``im_score`` /
    ``sap_score`` of the kept runs, ``im_grouping`` / ``sap_grouping`` their factor labels (−1: no arg-max),
    ``sigma_v`` [seed, scenario, s, s] the Σ_V used. ``timing``: seconds spent drawing and solving (wall and
    CPU, summed over workers), scoring, the wall time, and ``critical_cpu_s`` = the busiest worker's CPU time
    plus the scoring's: what the wall time is on otherwise idle cores.
    """

    configuration: tuple[int, int, int]
    encoder: str
    sigma_v_mode: str
    seeds: list[int]
    gammas: np.ndarray
    lambdas: np.ndarray
    constants: Vu2024Config
    per_seed: dict[tuple[str, int], np.ndarray]
    per_pair: dict[tuple[str, int], np.ndarray]
    success: dict[str, np.ndarray] = field(repr=False)
    recon_error: np.ndarray = field(repr=False)
    kept_run: np.ndarray = field(repr=False)
    half_steps: np.ndarray = field(repr=False)
    stopped: np.ndarray = field(repr=False)
    im_score: np.ndarray = field(repr=False)
    sap_score: np.ndarray = field(repr=False)
    im_grouping: np.ndarray = field(repr=False)
    sap_grouping: np.ndarray = field(repr=False)
    sigma_v: np.ndarray = field(repr=False)
    nonfinite_runs: int = 0
    timing: dict[str, float] = field(default_factory=dict)

    def summary(self, metric: str, k: int) -> dict[str, float]:
        """mean, sd (population), min, max of the per-seed rates, the slide value and whether it lies in
        [min, max]."""
        x = self.per_seed[(metric, k)]
        slide = self.constants.slides[(metric, k)]
        return {
            "mean": float(x.mean()),
            "sd": float(x.std()),
            "min": float(x.min()),
            "max": float(x.max()),
            "slide": slide,
            "slide_inside": bool(x.min() <= slide <= x.max()),
            "notebook": self.constants.notebook_outputs[(metric, k)],
        }

    def format(self) -> str:
        """Markdown: per (metric, scenario), the slide value beside mean ± sd [min–max] over the seeds and
        whether the slide value lies inside the seed range."""
        s, n, m = self.configuration
        enc = "diagonal (mean-field)" if self.encoder == "diagonal" else "full"
        seeds = self.seeds
        span = (
            f"{seeds[0]}–{seeds[-1]}"
            if seeds == list(range(seeds[0], seeds[-1] + 1))
            else ",".join(map(str, seeds))
        )
        lines = [
            f"Vu–Wei–Wan study, protocol vu2024: (s, n, m) = ({s}, {n}, {m}), Σ_W {enc}, "
            f"Σ_V {self.sigma_v_mode}, seeds {span} ({len(seeds)}); "
            "success rate in % over the 25 (γ, λ) pairs",
            "",
            "| metric | scenario | slides | notebook output | this library: mean ± sd [min–max] "
            "| slide inside |",
            "|---|---|---|---|---|---|",
        ]
        for metric in ("im", "sap"):
            name = f"I_{m}" if metric == "im" else "SAP"
            for k in (1, 2, 3):
                r = self.summary(metric, k)
                lines.append(
                    f"| {name} | {k} | {r['slide']:g} | {r['notebook']:g} | {r['mean']:.1f} ± {r['sd']:.1f} "
                    f"[{r['min']:g}–{r['max']:g}] | {'yes' if r['slide_inside'] else 'no'} |"
                )
        if self.nonfinite_runs:
            lines.append("")
            lines.append(f"{self.nonfinite_runs} runs stopped on a non-finite update (kept as they were).")
        return "\n".join(lines)

    def format_pairs(self) -> str:
        """Markdown: the per-(γ, λ) success fraction over seeds, one table per (metric, scenario)."""
        lines = []
        for metric in ("im", "sap"):
            for k in (1, 2, 3):
                lines.append(f"{METRIC_NAMES[metric]}, scenario {k} (rows γ, columns λ):")
                lines.append("")
                lines.append("| γ \\ λ | " + " | ".join(f"{x:g}" for x in self.lambdas) + " |")
                lines.append("|---" * (len(self.lambdas) + 1) + "|")
                for i, g in enumerate(self.gammas):
                    row = self.per_pair[(metric, k)][i]
                    lines.append(f"| {g:g} | " + " | ".join(f"{x:.2f}" for x in row) + " |")
                lines.append("")
        return "\n".join(lines).rstrip()

    def to_dict(self) -> dict[str, Any]:
        key = lambda mk: f"{mk[0]}/{mk[1]}"  # noqa: E731
        return {
            "protocol": "vu2024",
            "configuration": list(self.configuration),
            "encoder": self.encoder,
            "sigma_v": self.sigma_v_mode,
            "seeds": list(self.seeds),
            "gammas": self.gammas.tolist(),
            "lambdas": self.lambdas.tolist(),
            "constants": self.constants.to_dict(),
            "slides": {key(k): v for k, v in self.constants.slides.items()},
            "notebook_outputs": {key(k): v for k, v in self.constants.notebook_outputs.items()},
            "summary": {key((mt, k)): self.summary(mt, k) for mt in ("im", "sap") for k in (1, 2, 3)},
            "per_seed": {key(k): v.tolist() for k, v in self.per_seed.items()},
            "per_pair": {key(k): v.tolist() for k, v in self.per_pair.items()},
            "success": {k: v.astype(int).tolist() for k, v in self.success.items()},
            "kept_run": self.kept_run.tolist(),
            "recon_error": _json_array(self.recon_error),
            "half_steps": self.half_steps.tolist(),
            "im_score": _json_array(self.im_score),
            "sap_score": _json_array(self.sap_score),
            "im_grouping": self.im_grouping.tolist(),
            "sap_grouping": self.sap_grouping.tolist(),
            "sigma_v_matrices": self.sigma_v.tolist(),
            "nonfinite_runs": self.nonfinite_runs,
            "timing": dict(self.timing),
        }

    def plot(self, path: str | None = None) -> Any:
        """Heat maps of :attr:`per_pair` (rows γ, columns λ), one per (metric, scenario); returns the
        matplotlib
        figure (saved to ``path`` when given). Needs matplotlib (``pip install tangentlens[plot]``)."""
        try:
            import matplotlib

            if path is not None and not os.environ.get("DISPLAY"):
                matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("Vu2024Result.plot needs matplotlib: pip install 'tangentlens[plot]'") from None
        s, n, m = self.configuration
        fig, axes = plt.subplots(2, 3, figsize=(11, 6.5), constrained_layout=True)
        for r, metric in enumerate(("im", "sap")):
            for c, k in enumerate((1, 2, 3)):
                ax = axes[r, c]
                grid = self.per_pair[(metric, k)]
                im = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", origin="upper")
                for i in range(grid.shape[0]):
                    for j in range(grid.shape[1]):
                        ax.text(
                            j,
                            i,
                            f"{grid[i, j]:.2f}",
                            ha="center",
                            va="center",
                            fontsize=8,
                            color="black" if grid[i, j] > 0.55 else "white",
                        )
                ax.set_xticks(range(len(self.lambdas)), [f"{x:g}" for x in self.lambdas])
                ax.set_yticks(range(len(self.gammas)), [f"{x:g}" for x in self.gammas])
                ax.set_xlabel("λ")
                ax.set_ylabel("γ")
                name = f"I_{m}" if metric == "im" else "SAP"
                rate = self.per_seed[(metric, k)]
                slide = self.constants.slides[(metric, k)]
                ax.set_title(f"{name}, scenario {k}: {rate.mean():.1f} % (slides {slide:g} %)", fontsize=9)
        fig.colorbar(im, ax=axes, shrink=0.8, label="fraction of seeds that succeed")
        enc = "diagonal Σ_W" if self.encoder == "diagonal" else "full Σ_W"
        fig.suptitle(
            f"vu2024 (s, n, m) = ({s}, {n}, {m}), {enc}, Σ_V {self.sigma_v_mode}, {len(self.seeds)} seeds"
        )
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig


# ----------------------------------------------------------------------------------------------------------
# The study
# ----------------------------------------------------------------------------------------------------------
def _seed_list(seeds: Any) -> list[int]:
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds: expected a count >= 1 or a list of seeds, got {seeds!r}")
        return list(range(int(seeds)))
    try:
        out = [_check_seed(s) for s in seeds]
    except TypeError:
        raise ValueError(f"seeds: expected a count or a sequence of integer seeds, got {seeds!r}") from None
    if not out:
        raise ValueError("seeds: expected at least one seed, got none")
    if len(set(out)) != len(out):
        raise ValueError(f"seeds: expected distinct seeds, got {out}")
    return out


def _check_workers(workers: Any, count: int) -> int:
    if workers is None:
        return max(1, min(os.cpu_count() or 1, count))
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers: expected None or an integer >= 1, got {workers!r}")
    return min(int(workers), count)


@contextlib.contextmanager
def _pool(workers: int) -> Iterator[concurrent.futures.ProcessPoolExecutor]:
    """Worker processes for the seed chunks. On Linux they are forked (no re-import, and scripts need no
    ``if __name__ == "__main__"`` guard); the children only run numpy code. Elsewhere they are spawned."""
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    with warnings.catch_warnings():
        # Python >= 3.12 warns on fork() in a multi-threaded parent; the children never touch the parent's
        # thread pools (torch's OpenMP), they run numpy/OpenBLAS, which re-initialises after fork.
        warnings.filterwarnings(
            "ignore", message=r".*fork\(\) may lead to deadlocks.*", category=DeprecationWarning
        )
        ctx = multiprocessing.get_context(method)
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            yield pool


def _kept_run(recon: np.ndarray) -> np.ndarray:
    """The notebooks' choice per pair: the run with the smallest reconstruction error rounded to 8 decimals,
    scanning in order with a strict ``<`` (the first wins ties; NaN never replaces, a NaN first is kept)."""
    r = np.round(recon, VU2024_RECON_DECIMALS)
    best = np.zeros(r.shape[:-1], dtype=np.int64)
    best_val = r[..., 0]
    for j in range(1, r.shape[-1]):
        better = r[..., j] < best_val
        best = np.where(better, j, best)
        best_val = np.where(better, r[..., j], best_val)
    return best


def vu2024(
    config: str | Sequence[int],
    *,
    seeds: int | Sequence[int] = range(20),
    encoder: Encoder = "full",
    sigma_v: SigmaV = "sampled",
    workers: int | None = None,
    num_samples: int = VU2024_NUM_SAMPLES,
    half_steps: int = VU2024_HALF_STEPS,
) -> Vu2024Result:
    """Run the Vu–Wei–Wan study of one notebook, ``config`` ``"3,4,3"`` or ``"5,5,4"``, for every seed.

    Seed s reproduces the notebook's scenario loop after ``np.random.seed(s)``: Σ_V from the first 10⁷ draws
    (``sigma_v="sampled"``; ``"exact"`` uses the analytic Σ_V with the same initialisations), then for each
    (γ, λ) on their grid their runs (1 + 5 or 1 + 1) of 10 000 half-steps from their initialisations, the run
    with the smallest reconstruction error kept, I_m and SAP scored their way. ``encoder="diagonal"`` replaces
    their full Σ_W update by the mean-field one, Σ_W = diag(1 / diag(I + AᵀQA)) (B unchanged), the variant
    that breaks the rotation symmetry.

    All seeds × scenarios × pairs × runs are solved as one batch per worker; ``workers`` processes (default:
    one per CPU, at most one per seed) split the seeds. The draws of a seed are cached in this process, so a
    second call for the other encoder or Σ_V mode only solves. ``num_samples`` and ``half_steps`` exist for
    tests and experiments; the study uses 10⁷ and 10 000."""
    t_start = time.perf_counter()
    cfg = _config(config)
    key = cfg.configuration
    s, n, m = key
    if encoder not in ("full", "diagonal"):
        raise ValueError(f"encoder: expected 'full' or 'diagonal', got {encoder!r}")
    if sigma_v not in ("sampled", "exact"):
        raise ValueError(f"sigma_v: expected 'sampled' or 'exact', got {sigma_v!r}")
    seed_list = _seed_list(seeds)
    num_samples = _check_num_samples(num_samples)
    if isinstance(half_steps, bool) or not isinstance(half_steps, (int, np.integer)) or half_steps < 2:
        raise ValueError(f"half_steps: expected an integer >= 2, got {half_steps!r}")
    sampled = sigma_v == "sampled"
    nworkers = _check_workers(workers, len(seed_list))
    cached = [_cached_draws(cfg, sd, num_samples, sampled) for sd in seed_list]
    chunks = [list(range(len(seed_list)))[i::nworkers] for i in range(nworkers)]
    chunks = [c for c in chunks if c]
    jobs = [
        (
            key,
            [seed_list[i] for i in c],
            [cached[i] for i in c],
            encoder == "diagonal",
            sampled,
            num_samples,
            int(half_steps),
        )
        for c in chunks
    ]
    if len(jobs) == 1:
        outs = [_solve_chunk(*jobs[0])]
    else:
        with _pool(len(jobs)) as pool:
            outs = list(pool.map(_solve_chunk, *zip(*jobs, strict=True)))
    t_solved, c_solved = time.perf_counter(), time.process_time()
    # reassemble in seed order
    order = np.empty(len(seed_list), dtype=np.int64)
    pos = 0
    for c in chunks:
        order[c] = np.arange(pos, pos + len(c))
        pos += len(c)
    cat = lambda name: np.concatenate([getattr(o, name) for o in outs])[order]  # noqa: E731
    draws = [d for o in outs for d in o.draws]
    draws = [draws[i] for i in order]
    for sd, d in zip(seed_list, draws, strict=True):
        if sampled or (key, sd, num_samples) not in _DRAW_CACHE:
            _DRAW_CACHE[(key, sd, num_samples)] = d
    B, recon = cat("B"), cat("recon")
    half, stopped, nonfinite = cat("half_steps"), cat("stopped"), cat("nonfinite")
    sig = np.stack([_sigma_v_of(cfg, d, sampled) for d in draws])  # (seeds, 3, s, s)
    kept = _kept_run(recon)
    Bk = np.take_along_axis(B, kept[..., None, None, None], axis=4)[..., 0, :, :]  # (seeds, 3, G, L, m, n)
    Gam = np.eye(n)[:, list(cfg.gamma_rows)]
    cross = Bk @ Gam @ sig[:, :, None, None]  # Cov(X, V) = B Γ Σ_V, (seeds, 3, G, L, m, s)
    flat = cross.reshape(-1, m, s)
    sig_flat = np.broadcast_to(sig[:, :, None, None], cross.shape[:4] + (s, s)).reshape(-1, s, s)
    table, assign = _vu2024_im_tables(flat, sig_flat, m, s)
    win, has = _first_max(table)
    im_labels = np.where(has[:, None], assign[win], -1)
    true = np.stack([_scenario(cfg, k, None).true_labels for k in range(3)])
    true_flat = np.broadcast_to(true[None, :, None, None], cross.shape[:4] + (s,)).reshape(-1, s)
    im_ok = has & _same_partition(im_labels, true_flat)
    sap_mat = _vu2024_sap_matrix(flat, np.asarray(cfg.sigma_v))
    sap_val, _, sap_top = _sap_from_matrix(sap_mat)
    sap_ok = _same_partition(sap_top, true_flat)
    grid_shape = cross.shape[:4]
    success = {"im": im_ok.reshape(grid_shape), "sap": sap_ok.reshape(grid_shape)}
    per_seed, per_pair = {}, {}
    for metric, ok in success.items():
        for k in (1, 2, 3):
            per_seed[(metric, k)] = ok[:, k - 1].sum(axis=(1, 2)) * (100.0 / ok[0, 0].size)
            per_pair[(metric, k)] = ok[:, k - 1].mean(axis=0)
    t_end = time.perf_counter()
    return Vu2024Result(
        configuration=key,
        encoder=encoder,
        sigma_v_mode=sigma_v,
        seeds=seed_list,
        gammas=np.asarray(VU2024_GAMMAS),
        lambdas=np.asarray(VU2024_LAMBDAS),
        constants=cfg,
        per_seed=per_seed,
        per_pair=per_pair,
        success=success,
        recon_error=recon,
        kept_run=kept,
        half_steps=half,
        stopped=stopped,
        im_score=np.where(has, table[np.arange(table.shape[0]), win], np.nan).reshape(grid_shape),
        sap_score=sap_val.reshape(grid_shape),
        im_grouping=im_labels.reshape(grid_shape + (s,)),
        sap_grouping=sap_top.reshape(grid_shape + (s,)),
        sigma_v=sig,
        nonfinite_runs=int(nonfinite.sum()),
        timing={
            "draw_s": float(sum(o.draw_seconds for o in outs)),
            "solve_s": float(sum(o.solve_seconds for o in outs)),
            "draw_cpu_s": float(sum(o.draw_cpu for o in outs)),
            "solve_cpu_s": float(sum(o.solve_cpu for o in outs)),
            # the busiest worker's CPU time plus this process's scoring: the wall time on idle cores
            "critical_cpu_s": float(max(o.draw_cpu + o.solve_cpu for o in outs))
            + time.process_time()
            - c_solved,
            "score_s": t_end - t_solved,
            "wall_s": t_end - t_start,
            "workers": float(len(jobs)),
        },
    )
