"""Disentanglement metrics: tangentlens.metrics vs the straightforward loop implementations.

Data: 5 ground-truth factors (2, 2, 3, 3, 4 values; small so that the gradient-boosted trees of DCI stay in
the minute range) mixed into 16-dimensional noisy observations, encoded by a fixed random 2-layer MLP into
10 codes. N = 10 000 training (+ 5 000 test) points, the disentanglement_lib study sizes; BetaVAE / FactorVAE
use their study defaults (batch 64, 10 000 / 5 000 points). Every case first checks that both variants give
the same numbers. CPU-only work (numpy / scikit-learn); the ``device`` argument is ignored.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

import tangentlens.metrics as M
from bench.baselines import metrics_loops as L
from bench.harness import Case

FACTOR_SIZES = (2, 2, 3, 3, 4)
NUM_CODES = 10
OBS_DIM = 16


def _encoder() -> Any:
    g = torch.Generator().manual_seed(0)
    w1 = torch.randn(32, OBS_DIM, generator=g, dtype=torch.float64) / math.sqrt(OBS_DIM)
    w2 = torch.randn(NUM_CODES, 32, generator=g, dtype=torch.float64) / math.sqrt(32)

    def rep(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            h = torch.tanh(torch.from_numpy(np.asarray(x, dtype=np.float64)) @ w1.T)
            return (h @ w2.T).numpy()

    return rep


def _sampler() -> M.SyntheticSampler:
    mix = np.random.RandomState(1).randn(OBS_DIM, len(FACTOR_SIZES))
    mix[:, 0] *= 3.0  # factors of unequal strength, so the gaps are not all alike
    return M.SyntheticSampler(FACTOR_SIZES, mix=mix, noise_std=0.2)


def _close(a: Any, b: Any, name: str, tol: float = 1e-9) -> None:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if not np.allclose(a, b, rtol=tol, atol=tol):
        raise AssertionError(f"metrics.{name}: tangentlens {a} != loop {b}")


def cases(device: torch.device, quick: bool) -> list[Case]:
    warnings.filterwarnings("ignore", category=Warning, module="sklearn")
    n_train, n_test = (2_000, 1_000) if quick else (10_000, 5_000)
    s_train, s_eval, n_var = (300, 150, 1_000) if quick else (10_000, 5_000, 10_000)
    sampler, rep = _sampler(), _encoder()
    rs = np.random.RandomState(0)
    c, f = M.sample_codes_and_factors(sampler, rep, n_train, rs)
    ct, ft = M.sample_codes_and_factors(sampler, rep, n_test, rs)
    seed = np.random.RandomState(0).randint(2**31 - 1)  # what M.dci draws from random_state=0
    meta = {"N": n_train, "N_test": n_test, "codes": NUM_CODES, "factors": len(FACTOR_SIZES)}
    out: list[Case] = []

    def add(name: str, ours, loop, compare, work: float = n_train, repeats: int = 5, **extra) -> None:
        out.append(
            Case(
                name=f"metrics.{name}",
                variants={"tangentlens": ours, "loop": loop},
                ours="tangentlens",
                baseline="loop",
                work=work,
                work_unit="sample",
                repeats=1 if quick else repeats,
                warmup=0 if quick else 1,
                meta={**meta, **extra},
                check=compare,
            )
        )

    add(
        "mig",
        lambda: M.mig(c, f),
        lambda: L.mig(c, f),
        lambda: _close(M.mig(c, f), L.mig(c, f), "mig", 1e-12),
    )
    add(
        "sap_discrete",
        lambda: M.sap(c, f, ct, ft),
        lambda: L.sap(c, f, ct, ft),
        lambda: _close(M.sap(c, f, ct, ft), L.sap(c, f, ct, ft), "sap_discrete", 1e-12),
        repeats=3,
    )
    add(
        "sap_continuous",
        lambda: M.sap(c, f, continuous_factors=True),
        lambda: L.sap(c, f, continuous_factors=True),
        lambda: _close(
            M.sap(c, f, continuous_factors=True), L.sap(c, f, continuous_factors=True), "sap_continuous"
        ),
    )

    def dci_check() -> None:
        # The trees dominate; check parity on a 1 000-point slice to keep the check short.
        k, kt = min(1000, n_train), min(500, n_test)
        ours = M.dci(c[:k], f[:k], ct[:kt], ft[:kt], random_state=0).as_dict()
        _close(list(ours.values()), list(L.dci(c[:k], f[:k], ct[:kt], ft[:kt], seed).values()), "dci", 1e-12)

    add(
        "dci",
        # The per-factor gradient-boosted classifiers run in parallel (n_jobs=-1): same numbers, that is the
        # whole difference to the loop (the trees are sklearn's in both).
        lambda: M.dci(c, f, ct, ft, random_state=0, n_jobs=-1),
        lambda: L.dci(c, f, ct, ft, seed),
        dci_check,
        repeats=1,
        n_jobs=-1,
    )
    out[-1].warmup = 0
    add(
        "modularity",
        lambda: M.modularity(c, f),
        lambda: L.modularity(c, f),
        lambda: _close(M.modularity(c, f), L.modularity(c, f), "modularity", 1e-12),
    )
    add(
        "explicitness",
        lambda: M.explicitness(c, f, ct, ft),
        lambda: L.explicitness(c, f, ct, ft),
        lambda: _close(
            list(M.explicitness(c, f, ct, ft).as_dict().values()),
            list(L.explicitness(c, f, ct, ft).values()),
            "explicitness",
            1e-12,
        ),
        repeats=3,
    )
    add(
        "irs",
        lambda: M.irs(c, f),
        lambda: L.irs(c, f),
        lambda: _close(M.irs(c, f), L.irs(c, f), "irs", 1e-12),
    )
    add(
        "unsupervised",
        lambda: M.unsupervised_scores(c),
        lambda: L.unsupervised(c),
        lambda: _close(
            [M.unsupervised_scores(c)[k] for k in L.unsupervised(c)],
            list(L.unsupervised(c).values()),
            "unsupervised",
        ),
    )

    def beta(ours: bool) -> Any:
        kw = {"num_train": s_train, "num_eval": s_eval}
        if ours:
            return M.beta_vae_score(sampler, rep, random_state=0, **kw).as_dict()
        return L.beta_vae(sampler, rep, np.random.RandomState(0), **kw)

    add(
        "beta_vae",
        lambda: beta(True),
        lambda: beta(False),
        lambda: _close(list(beta(True).values()), list(beta(False).values()), "beta_vae", 1e-12),
        work=s_train + s_eval,
        repeats=3,
        num_train=s_train,
        num_eval=s_eval,
    )

    def fvae(ours: bool) -> Any:
        kw = {"num_train": s_train, "num_eval": s_eval, "num_variance_estimate": n_var}
        if ours:
            r = M.factor_vae_score(sampler, rep, random_state=0, **kw).as_dict()
            return [r["train_accuracy"], r["eval_accuracy"]]
        r = L.factor_vae(sampler, rep, np.random.RandomState(0), **kw)
        return [r["train_accuracy"], r["eval_accuracy"]]

    add(
        "factor_vae",
        lambda: fvae(True),
        lambda: fvae(False),
        lambda: _close(fvae(True), fvae(False), "factor_vae", 1e-12),
        work=s_train + s_eval,
        repeats=3,
        num_train=s_train,
        num_eval=s_eval,
    )
    return out
