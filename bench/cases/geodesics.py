"""Perceptual geodesics: pairs per second to converge, tangentlens against stochman's connecting_geodesic
(``bench/baselines/stochman_geodesic.py``, its algorithm as stochman 0.3.0 runs it; the check reproduces
stochman's own energies on tests/fixtures/stochman to 1e-12), and how the cost grows with the points and d.

Cases (CPU sizes):

- ``geodesics.vae_vs_stochman``: the demo VAE decoder (β = 1, float32, one channel), pixel distance, 4 pairs
  z0, z1 ~ N(0, I) (counter streams), 20 points (stochman's evaluation grid: the same discrete energy).
  Baseline: stochman's algorithm on the 4 pairs as one batch (a 5-node spline, Adam lr 0.1, 150 steps).
  Ours: ``tangentlens.geodesics.optim.lbfgs`` until each pair's energy is at most stochman's final one
  (the time to reach stochman's energy); also ``geodesic(..., tol=1e-4)`` (converged to the relative energy
  tolerance; its energies relative to stochman's in ``meta``).
- ``geodesics.stylegan2_lpips64``: StyleGAN2 (64², channel_max 128, random weights) + LPIPS-VGG16 (random
  trunk and linear weights: LPIPS weights cannot be downloaded here; the cost does not depend on them), W
  space, 1 pair, 8 points: the time to reach stochman's energy (its algorithm on the same 8-point energy),
  and in ``meta`` where ``geodesic(tol=1e-3)`` ends and its wall time (one run). One warm-up and one timed
  repeat. With random LPIPS weights the energies are small (~1e-2) and stochman's absolute stopping rule
  (every gradient entry below 1e-4) ends its run after a few steps; ``meta`` has its step count and the
  straight line's energy.
- ``geodesics.points{8,16,32}``: the VAE case with 2 pairs at n points: L-BFGS (ours) vs Gauss-Newton, both
  to tol 1e-4 (pairs per second; Gauss-Newton capped at 60 iterations, its status in ``meta``).
- ``geodesics.dim{8,32,128}``: a StyleGAN2 with z_dim = w_dim = d (16², channel_max 32), W space, pixel
  distance, 2 pairs, 12 points: L-BFGS vs Gauss-Newton (whose iterations cost d JVPs per point).
"""

from __future__ import annotations

import functools
import time
from typing import Any

import torch

import tangentlens
from bench.baselines import stochman_geodesic
from bench.harness import Case
from tangentlens._operator import _Operator
from tangentlens.geodesics import curves, optim
from tangentlens.models import StyleGAN2Generator
from tangentlens.models.vae import load_demo_vae


def _pairs(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    z0 = tangentlens.ops.philox_normal(seed, 0, n, d, stream=tangentlens.geodesics.STREAM_Z0)
    z1 = tangentlens.ops.philox_normal(seed, 0, n, d, stream=tangentlens.geodesics.STREAM_Z1)
    return z0, z1


@functools.cache
def _vae() -> torch.nn.Module:
    return load_demo_vae(1).generator(channels=1)


def _to_energy(
    G: Any, distance: Any, space: str, z0: torch.Tensor, z1: torch.Tensor, n: int, target: torch.Tensor
):  # noqa: ANN202
    """L-BFGS from the straight line until every pair's energy is at most its target."""
    op = _Operator(G, distance, space, "fp32", None)
    prob = optim.Problem(op, z0, z1, n, curves.Shell(None))
    u0 = curves.interpolation_path(z0, z1, n, "lerp")[:, 1:-1]
    return optim.lbfgs(prob, u0, tol=1e-12, max_iters=2000, target=target.double())


def _stochman(
    G: Any, embed: Any, z0: torch.Tensor, z1: torch.Tensor, n: int
) -> tuple[torch.Tensor, bool, int]:
    _, E, ok, steps = stochman_geodesic.connecting_geodesic(embed, z0, z1, eval_grid=n)
    return E.double(), ok, steps


def _fixture_check(meta: dict[str, Any]) -> None:
    """The baseline reproduces stochman's own outputs (tests/fixtures/stochman, float64)."""
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "stochman" / "geodesics.pt"
    ref = torch.load(path, weights_only=True)["vae_beta1"]
    G = load_demo_vae(1).double().generator(channels=1)
    worst = 0.0
    for i in range(ref["z0"].shape[0]):
        _, E, _, _ = stochman_geodesic.connecting_geodesic(
            lambda x: G(x).flatten(1), ref["z0"][i : i + 1], ref["z1"][i : i + 1]
        )
        worst = max(worst, float((E[0] - ref["energy"][i]).abs() / ref["energy"][i]))
    meta["baseline_vs_stochman_fixture_max_rel_energy_error"] = worst
    assert worst < 1e-9, worst


def cases(device: torch.device, quick: bool) -> list[Case]:
    out: list[Case] = []
    n_vae = 20 if not quick else 6
    pairs = 4 if not quick else 2
    z0, z1 = _pairs(pairs, 10)
    G = _vae()
    embed = lambda x: G(x).flatten(1)  # noqa: E731
    meta: dict[str, Any] = {
        "model": "demo VAE beta=1 (float32)",
        "distance": "l2",
        "pairs": pairs,
        "points": n_vae,
    }
    state: dict[str, torch.Tensor] = {}

    def check() -> None:
        if not quick:
            _fixture_check(meta)
        E_s, ok, steps = _stochman(G, embed, z0, z1, n_vae)
        state["target"] = E_s
        sol = _to_energy(G, "l2", "z", z0, z1, n_vae, E_s)
        g = tangentlens.geodesic(G, z0, z1, distance="l2", points=n_vae, tol=1e-4, refine=False)
        meta.update(
            stochman_energy=E_s.tolist(),
            stochman_converged=ok,
            stochman_steps=steps,
            line_energy=g.interp_energy.tolist(),
            ours_to_target_energy=sol.energy.tolist(),
            ours_to_target_iterations=sol.iterations.tolist(),
            ours_tol_energy=g.energy.tolist(),
            ours_tol_iterations=g.iterations.tolist(),
            ours_tol_energy_over_stochman=(g.energy / E_s).tolist(),
            ours_tol_converged=int(g.converged.sum()),
        )
        assert (g.energy <= E_s * (1 + 1e-6)).all(), (g.energy, E_s)

    out.append(
        Case(
            name="geodesics.vae_vs_stochman",
            variants={
                "tangentlens_to_stochman_energy": lambda: _to_energy(
                    G, "l2", "z", z0, z1, n_vae, state["target"]
                ),
                "tangentlens_tol1e-4": lambda: tangentlens.geodesic(
                    G, z0, z1, distance="l2", points=n_vae, tol=1e-4, refine=False
                ),
                "stochman_algorithm": lambda: _stochman(G, embed, z0, z1, n_vae),
            },
            ours="tangentlens_to_stochman_energy",
            baseline="stochman_algorithm",
            work=pairs,
            work_unit="pair",
            repeats=1,  # the check already ran every variant once (their first-call costs are paid)
            warmup=0,
            check=check,
            meta=meta,
        )
    )

    # StyleGAN2 + LPIPS-VGG16 at 64²
    res, cmax = (64, 128) if not quick else (32, 16)
    n_sg = 8 if not quick else 4

    @functools.cache
    def stylegan() -> tuple[StyleGAN2Generator, tangentlens.LPIPS, torch.Tensor, torch.Tensor]:
        S = StyleGAN2Generator(img_resolution=res, channel_max=cmax, seed=0).eval().requires_grad_(False)
        lp = tangentlens.LPIPS("vgg16", pretrained=False)
        a, b = _pairs(1, S.z_dim, seed=1)
        with torch.no_grad():
            w0, w1 = S.mapping(torch.cat([a, b]), None)[:, 0].chunk(2)
        return S, lp, w0, w1

    sg_meta: dict[str, Any] = {
        "resolution": res,
        "channel_max": cmax,
        "space": "w",
        "points": n_sg,
        "pairs": 1,
    }
    sg_state: dict[str, torch.Tensor] = {}

    def sg_check() -> None:
        S, lp, w0, w1 = stylegan()
        E_s, ok, steps = _stochman(S, _Operator(S, lp, "w", "fp32", None).F, w0, w1, n_sg)
        sg_state["target"] = E_s
        t0 = time.perf_counter()  # one run (after the stochman run above paid the first-call costs)
        g = tangentlens.geodesic(S, w0, w1, space="w", distance=lp, points=n_sg, tol=1e-3, refine=False)
        seconds = time.perf_counter() - t0
        sg_meta.update(
            stochman_energy=E_s.tolist(),
            stochman_converged=ok,
            stochman_steps=steps,
            line_energy=g.interp_energy.tolist(),
            ours_tol_energy=g.energy.tolist(),
            ours_tol_iterations=g.iterations.tolist(),
            ours_tol_status=g.status.tolist(),
            ours_tol_efficiency=g.efficiency.tolist(),
            ours_tol_seconds=seconds,
            ours_tol_pairs_per_s=1 / seconds,
        )

    def sg_to_energy() -> Any:
        S, lp, w0, w1 = stylegan()
        sol = _to_energy(S, lp, "w", w0, w1, n_sg, sg_state["target"])
        sg_meta.update(
            ours_to_target_iterations=sol.iterations.tolist(), ours_to_target_energy=sol.energy.tolist()
        )
        return sol

    def sg_stochman() -> Any:
        S, lp, w0, w1 = stylegan()
        return _stochman(S, _Operator(S, lp, "w", "fp32", None).F, w0, w1, n_sg)

    out.append(
        Case(
            name="geodesics.stylegan2_lpips64",
            variants={"tangentlens_to_stochman_energy": sg_to_energy, "stochman_algorithm": sg_stochman},
            ours="tangentlens_to_stochman_energy",
            baseline="stochman_algorithm",
            work=1,
            work_unit="pair",
            repeats=1,
            warmup=1,
            check=sg_check,
            meta=sg_meta,
        )
    )

    # cost growth with the points (VAE) and with d (StyleGAN2, W space)
    for n in (8, 16, 32) if not quick else (6,):
        a, b = _pairs(2, 10, seed=2)
        out.append(
            _methods_case(f"geodesics.points{n}", G, "z", a, b, n, {"model": "demo VAE beta=1", "points": n})
        )
    for d in (8, 32, 128) if not quick else (8,):
        S = (
            StyleGAN2Generator(z_dim=d, w_dim=d, img_resolution=16, channel_max=32, seed=0)
            .eval()
            .requires_grad_(False)
        )
        a, b = _pairs(2, d, seed=3)
        with torch.no_grad():
            w0, w1 = S.mapping(torch.cat([a, b]), None)[:, 0].chunk(2)
        out.append(
            _methods_case(f"geodesics.dim{d}", S, "w", w0, w1, 12, {"model": "StyleGAN2 16² cmax 32", "d": d})
        )
    return out


def _methods_case(
    name: str, G: Any, space: str, z0: torch.Tensor, z1: torch.Tensor, n: int, meta: dict[str, Any]
) -> Case:
    def run(method: str) -> Any:
        iters = 500 if method == "lbfgs" else 60  # Gauss-Newton: 60 iterations of d JVPs per point at most
        g = tangentlens.geodesic(
            G,
            z0,
            z1,
            space=space,
            distance="l2",
            points=n,
            method=method,
            tol=1e-4,
            refine=False,
            max_iters=iters,
        )
        meta[f"{method}_energy"] = g.energy.tolist()
        meta[f"{method}_iterations"] = g.iterations.tolist()
        meta[f"{method}_status"] = g.status.tolist()
        meta[f"{method}_evaluations"] = g.evaluations
        return g

    return Case(
        name=name,
        variants={"lbfgs": lambda: run("lbfgs"), "gauss-newton": lambda: run("gauss-newton")},
        ours="lbfgs",
        baseline="gauss-newton",
        work=z0.shape[0],
        work_unit="pair",
        repeats=1,
        warmup=0,
        meta=dict(meta, distance="l2", space=space, tol=1e-4),
    )
