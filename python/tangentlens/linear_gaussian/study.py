"""The library's own study table: success rates of I_m and SAP over seeds × restarts (SPEC §6)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tangentlens.linear_gaussian._common import _check_int, _grid, _json_array
from tangentlens.linear_gaussian.metrics import _im_tables, _same_partition, _sap_batch, _tie_tol
from tangentlens.linear_gaussian.scenarios import Scenario, named_scenarios
from tangentlens.linear_gaussian.solver import (
    _COLLAPSED,
    _DIVERGING,
    STATUSES,
    _check_solver_args,
    _random_init,
    _run,
    joint_covariance,
)

__all__ = ["SuccessTable", "success_rates"]


@dataclass
class SuccessTable:
    """Success rates per scenario × γ × λ for I_m and SAP.

    Per seed, the rate is the fraction of the converged or max-iterations restarts (collapsed and diverging
    ones are left out) whose metric recovers the true grouping of the factors: for I_m the true partition must
    strictly beat every other one (a tie fails), for SAP every factor's arg-max latent must be unique and
    induce the true partition. ``*_mean`` / ``*_std`` are the mean and standard deviation of that rate over
    seeds (NaN where no run counts, shown as ``n/a``). Arrays are indexed [scenario, gamma, lam]; ``per_seed``
    arrays add a seed axis; the status fractions count all seeds × restarts.
    """

    configuration: tuple[int, int, int]
    scenarios: list[Scenario]
    gamma: np.ndarray
    lam: np.ndarray
    seeds: list[int]
    restarts: int
    diagonal: bool
    im_mean: np.ndarray
    im_std: np.ndarray
    sap_mean: np.ndarray
    sap_std: np.ndarray
    im_score_mean: np.ndarray
    sap_score_mean: np.ndarray
    status_fractions: dict[str, np.ndarray]
    im_per_seed: np.ndarray = field(repr=False)
    sap_per_seed: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "configuration": list(self.configuration),
            "scenarios": [sc.to_dict() for sc in self.scenarios],
            "gamma": self.gamma.tolist(),
            "lam": self.lam.tolist(),
            "seeds": list(self.seeds),
            "restarts": self.restarts,
            "diagonal": self.diagonal,
            "im_mean": _json_array(self.im_mean),
            "im_std": _json_array(self.im_std),
            "sap_mean": _json_array(self.sap_mean),
            "sap_std": _json_array(self.sap_std),
            "im_score_mean": _json_array(self.im_score_mean),
            "sap_score_mean": _json_array(self.sap_score_mean),
            "status_fractions": {k: _json_array(v) for k, v in self.status_fractions.items()},
            "im_per_seed": _json_array(self.im_per_seed),
            "sap_per_seed": _json_array(self.sap_per_seed),
        }

    def format(self) -> str:
        """Plain-text (Markdown) table."""
        s, n, m = self.configuration
        enc = "diagonal (mean-field)" if self.diagonal else "full"
        lines = [
            f"(s, n, m) = ({s}, {n}, {m}), Σ_W {enc}, seeds {len(self.seeds)} × restarts {self.restarts}; "
            "success rate mean ± std over seeds",
            "",
            "| scenario | true grouping | γ | λ | I_m success | SAP success | I_m score | SAP score "
            "| conv / coll / div / max |",
            "|---|---|---|---|---|---|---|---|---|",
        ]

        def pm(mu: float, sd: float) -> str:
            return "n/a" if not np.isfinite(mu) else f"{mu:.2f} ± {sd:.2f}"

        def num(x: float) -> str:
            return "n/a" if not np.isfinite(x) else f"{x:.3f}"

        for a, sc in enumerate(self.scenarios):
            grouping = " ".join("{" + ",".join(map(str, gr)) + "}" for gr in sc.true_grouping)
            for i, gv in enumerate(self.gamma):
                for j, lv in enumerate(self.lam):
                    fr = "/".join(
                        f"{self.status_fractions[k][a, i, j]:.2f}"
                        for k in ("converged", "collapsed", "diverging", "max_iters")
                    )
                    lines.append(
                        f"| {sc.name} | {grouping} | {gv:g} | {lv:g}"
                        f" | {pm(self.im_mean[a, i, j], self.im_std[a, i, j])}"
                        f" | {pm(self.sap_mean[a, i, j], self.sap_std[a, i, j])}"
                        f" | {num(self.im_score_mean[a, i, j])}"
                        f" | {num(self.sap_score_mean[a, i, j])} | {fr} |"
                    )
        return "\n".join(lines)


def success_rates(
    configuration: str | Sequence[int] | Sequence[Scenario],
    gamma_grid: Sequence[float],
    lambda_grid: Sequence[float],
    seeds: Sequence[int] | int,
    *,
    restarts: int = 4,
    diagonal: bool = False,
    max_iters: int = 5000,
    tol: float = 1e-12,
    param_tol: float = 1e-9,
    sigma_w_floor: float = 1e-9,
    collapse_tol: float = 1e-10,
) -> SuccessTable:
    """Success rates of I_m and SAP for every scenario of a configuration on the γ × λ grid.

    ``configuration`` is ``"3,4,3"`` / ``(5, 5, 4)`` / ``[5, 5, 4]`` (the named scenarios) or a list of
    Scenarios sharing (s, n, m). ``lambda_grid`` may hold negative values (see :func:`solve`). ``seeds`` is a
    list of seeds or a count (seeds 0..count-1); each seed draws the random initialisations of all its
    restarts (``np.random.default_rng(seed)``, the same draws for every scenario). All scenarios × seeds ×
    grid × restarts are solved in one batched run, and all their I_m tables in one batched evaluation."""
    if isinstance(configuration, str) or (
        isinstance(configuration, Sequence)
        and len(configuration) > 0
        and not any(isinstance(x, Scenario) for x in configuration)
    ):
        scenarios = named_scenarios(configuration)  # type: ignore[arg-type]
    else:
        scenarios = list(configuration)  # type: ignore[arg-type]
        if not scenarios or not all(isinstance(sc, Scenario) for sc in scenarios):
            raise ValueError("configuration: expected 's,n,m' or a non-empty list of Scenario objects")
        if len({(sc.s, sc.n, sc.m) for sc in scenarios}) != 1:
            raise ValueError("configuration: expected Scenarios sharing the same (s, n, m)")
    s, n, m = scenarios[0].s, scenarios[0].n, scenarios[0].m
    seed_list = (
        list(range(_check_int(seeds, "seeds"))) if isinstance(seeds, (int, np.integer)) else list(seeds)
    )
    if not seed_list:
        raise ValueError("seeds: expected at least one seed, got none")
    _check_solver_args(max_iters, tol, param_tol, restarts)
    g, lm = _grid(gamma_grid, "gamma_grid"), _grid(lambda_grid, "lambda_grid", allow_negative=True)
    nsc, nsd = len(scenarios), len(seed_list)
    shape = (nsc, nsd, g.size, lm.size, restarts)
    inits = [_random_init(np.random.default_rng(sd), shape[2:], m, n) for sd in seed_list]
    B0 = np.broadcast_to(np.stack([b for b, _ in inits]), shape + (m, n))
    W0 = np.broadcast_to(np.stack([w for _, w in inits]), shape + (m, m))
    Sy = np.stack([sc.sigma_y for sc in scenarios])
    N = int(np.prod(shape))
    idx = np.indices(shape).reshape(len(shape), N)
    out = _run(
        Sy[idx[0]],
        g[idx[2]],
        lm[idx[3]],
        B0.reshape(N, m, n).copy(),
        W0.reshape(N, m, m).copy(),
        diagonal=diagonal,
        max_iters=max_iters,
        tol=tol,
        param_tol=param_tol,
        sigma_w_floor=sigma_w_floor,
        collapse_tol=collapse_tol,
        record_history=False,
    )
    # The scenario axis is the outermost one, so per-scenario blocks are contiguous in the flat order.
    cov_flat = np.concatenate(
        [joint_covariance(sc, out.B[idx[0] == a], out.W[idx[0] == a]) for a, sc in enumerate(scenarios)]
    )
    table, assign = _im_tables(cov_flat, m, s)
    top = table.max(-1)
    true = np.stack([sc.true_labels for sc in scenarios])[idx[0]]
    # I_m success: the true partition strictly beats every other partition (a tie, e.g. a collapsed code
    # with an all-zero table, is a failure rather than whatever np.argmax picks first).
    in_true = np.stack([_same_partition(assign, sc.true_labels) for sc in scenarios])[idx[0]]  # (N, m**s)
    best_true = np.where(in_true, table, -np.inf).max(-1)
    best_other = np.where(in_true, -np.inf, table).max(-1)
    im_ok = best_true - best_other > _tie_tol(top)
    sap, sap_mat, sap_top = _sap_batch(cov_flat, m)
    srt = np.sort(sap_mat, axis=-2)
    sap_gap = srt[..., -1, :] - (srt[..., -2, :] if m > 1 else 0.0)
    sap_ok = _same_partition(sap_top, true) & np.all(sap_gap > 1e-12, axis=-1)
    # Collapsed codes carry no information (their I_m arg-max is decided by the factor penalty alone) and
    # diverging runs stop at an arbitrary point: neither counts towards the success rates.
    valid = ((out.status != _DIVERGING) & (out.status != _COLLAPSED)).reshape(shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        nvalid = valid.sum(-1)

        def rate(ok: np.ndarray) -> np.ndarray:
            return np.where(nvalid > 0, (ok.reshape(shape) & valid).sum(-1) / np.maximum(nvalid, 1), np.nan)

        im_seed, sap_seed = rate(im_ok), rate(sap_ok)  # (scenario, seed, G, L)

        def mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            cnt = np.sum(np.isfinite(x), axis=1)
            mu = np.where(cnt > 0, np.nansum(x, axis=1) / np.maximum(cnt, 1), np.nan)
            var = np.where(cnt > 0, np.nansum((x - mu[:, None]) ** 2, axis=1) / np.maximum(cnt, 1), np.nan)
            return mu, np.sqrt(var)

        def valid_mean(x: np.ndarray) -> np.ndarray:
            tot = valid.sum((1, 4))
            return np.where(
                tot > 0, np.where(valid, x.reshape(shape), 0).sum((1, 4)) / np.maximum(tot, 1), np.nan
            )

        im_mu, im_sd = mean_std(im_seed)
        sap_mu, sap_sd = mean_std(sap_seed)
        fractions = {
            name: (out.status.reshape(shape) == code).mean(axis=(1, 4)) for code, name in enumerate(STATUSES)
        }
        return SuccessTable(
            configuration=(s, n, m),
            scenarios=scenarios,
            gamma=g,
            lam=lm,
            seeds=[int(x) for x in seed_list],
            restarts=restarts,
            diagonal=diagonal,
            im_mean=im_mu,
            im_std=im_sd,
            sap_mean=sap_mu,
            sap_std=sap_sd,
            im_score_mean=valid_mean(top),
            sap_score_mean=valid_mean(sap),
            status_fractions=fractions,
            im_per_seed=im_seed,
            sap_per_seed=sap_seed,
        )
