"""``tangentlens demo``: the main job on the embedded default (the shipped dSprites VAEs, β = 1 and β = 4).

For each model it measures, on its decoder G(z) in [-1, 1]:

* PPL in Z (lerp of z ~ N(0, I), t ~ U[0, 1]), exact mode, pixel distance (and LPIPS-VGG16 when its weights
  are found), with the bootstrap CI;
* spectra of M(z) = JᵀJ (pixels) over a few hundred latent points: condition number, effective ranks, axis
  alignment of the right singular vectors, column orthogonality, off-diagonal energy;
* the supervised disentanglement metrics of the encoder means: MIG, SAP, DCI, modularity, BetaVAE, FactorVAE;
* perceptual geodesics (pixels) between pairs z0, z1 ~ N(0, I): the efficiency of the lerp path (geodesic
  length / lerp length) over the pairs, with a bootstrap CI, and one pair's geodesic next to its lerp path;

and writes ``report.json``, ``report.md`` (β = 1 and β = 4 side by side) and PNG plots (eigenvalue decay,
alignment heat maps, latent traversals, PPL histograms, geodesics) into the output directory.
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["run_demo"]

STAT_KEYS = (
    "dims_99",
    "condition_number",
    "entropy_rank",
    "participation_ratio",
    "alignment_max",
    "alignment_distance",
    "column_orthogonality",
    "off_diagonal_energy",
)


def _encoder(vae: Any) -> Any:
    def represent(x: Any) -> np.ndarray:
        t = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        if t.ndim == 3:
            t = t.unsqueeze(1)
        with torch.no_grad():
            return vae.encode(t)[0].numpy()

    return represent


def _metrics(vae: Any, n_train: int, n_test: int, n_points: int, seed: int) -> dict[str, float]:
    from tangentlens.data import DSpritesSampler
    from tangentlens.metrics import functional as M

    sampler = DSpritesSampler()
    rs = np.random.RandomState(seed)
    rep = _encoder(vae)

    def codes_factors(n: int) -> tuple[np.ndarray, np.ndarray]:
        f = sampler.sample_factors(n, rs)
        return rep(sampler.sample_observations_from_factors(f, rs)), f

    c, f = codes_factors(n_train)
    ct, ft = codes_factors(n_test)
    dci = M.dci(c, f, ct, ft, random_state=seed)
    sap = M.sap(c, f, ct, ft)
    bv = M.beta_vae_score(sampler, rep, random_state=seed, num_train=n_points, num_eval=n_points // 2)
    fv = M.factor_vae_score(
        sampler,
        rep,
        random_state=seed,
        num_train=n_points,
        num_eval=n_points // 2,
        num_variance_estimate=n_train,
    )
    return {
        "mig": float(M.mig(c, f)),
        "sap": float(sap),
        "dci_disentanglement": float(dci.disentanglement),
        "dci_completeness": float(dci.completeness),
        "dci_informativeness_test": float(dci.informativeness_test),
        "modularity": float(M.modularity(c, f)),
        "beta_vae_eval_accuracy": float(bv.eval_accuracy),
        "factor_vae_eval_accuracy": float(fv.eval_accuracy),
        "factor_vae_active_dims": int(fv.num_active_dims),
    }


def _traversals(vae: Any, path: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    from tangentlens.data import dsprites

    # around the posterior mean of one image (a heart, mid scale, centred), as beta-VAE papers show them
    with torch.no_grad():
        x = torch.as_tensor(dsprites(np.array([[2, 3, 0, 16, 16]])), dtype=torch.float32).reshape(
            1, 1, 64, 64
        )
        base = vae.encode(x)[0][0]
    d = vae.z_dim
    values = torch.linspace(-2.5, 2.5, 9)
    z = base.repeat(d, len(values), 1)
    for i in range(d):
        z[i, :, i] = values
    with torch.no_grad():
        img = (vae.decode(z.reshape(-1, d), 1) + 1) / 2
    img = img.reshape(d, len(values), 64, 64).numpy()
    fig, axes = plt.subplots(d, len(values), figsize=(len(values) * 0.8, d * 0.8))
    for i in range(d):
        for j in range(len(values)):
            ax = axes[i, j]
            ax.imshow(img[i, j], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"z{i}", rotation=0, labelpad=12, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


GEODESIC_CONFIG = {"distance": "l2", "space": "z", "init": "lerp", "points": 16, "tol": 1e-3, "refine": True}


def _geodesics(gen: Any, pairs: int, seed: int, quiet: bool) -> tuple[dict[str, Any], Any, Any]:
    """The efficiency summary over ``pairs`` pairs, the scan, and the Geodesic of the median pair."""
    import tangentlens
    from tangentlens import geodesics

    cfg = {k: v for k, v in GEODESIC_CONFIG.items()}
    res = geodesics.scan(gen, pairs, seed, batch_size=8, progress=not quiet, store_paths=True, **cfg)
    agg = res.aggregate()
    agg["seconds"] = res.seconds
    eff = res.efficiency
    i = int(torch.argsort(eff)[len(eff) // 2])  # the median pair
    path = res.rows["path"][i : i + 1]
    example = tangentlens.geodesic(
        gen, path[:, 0], path[:, -1], **{k: v for k, v in cfg.items() if k != "refine"}, refine=False
    )
    return agg, res, example


def _geodesic_figure(path: Path, betas: tuple[int, ...], scans: dict, examples: dict) -> None:
    """Per model the median pair's geodesic and lerp strips with their speed profiles, then the efficiency
    histograms of both models."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(8.8 * len(betas) / 2 + 4.2, 4.6))
    subs = fig.subfigures(1, len(betas) + 1, width_ratios=[4.4] * len(betas) + [3.6])
    for sub, beta in zip(subs, betas, strict=False):
        examples[beta].plot(0, columns=8, fig=sub)
        sub.suptitle(f"β = {beta}: median pair", fontsize=10)
    ax = subs[-1].add_subplot(111)
    for k, beta in enumerate(betas):
        scans[beta].plot_histogram(ax=ax, bins=12, label=f"β = {beta}")
        ax.lines[-1].set_color(f"C{k}")
    ax.legend(fontsize=7)  # again, with the recoloured mean lines
    ax.set_title("efficiency over pairs", fontsize=10)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _fmt(x: Any) -> str:
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return str(x)
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def run_demo(
    out_dir: str | Path = "tangentlens-demo",
    *,
    betas: tuple[int, ...] = (1, 4),
    ppl_samples: int = 5000,
    spectra_points: int = 300,
    metric_samples: int = 2000,
    metric_points: int = 500,
    geodesic_pairs: int = 16,
    seed: int = 0,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run the demo (module docstring) and return the report (also written to ``out_dir/report.json``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import tangentlens
    from tangentlens import spectra
    from tangentlens.lpips import WeightsNotFoundError
    from tangentlens.models.vae import load_demo_vae

    for name, v in (
        ("ppl_samples", ppl_samples),
        ("spectra_points", spectra_points),
        ("geodesic_pairs", geodesic_pairs),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < 2:
            raise ValueError(f"{name}: expected an int >= 2, got {v!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        if not quiet:
            print(f"[demo {time.perf_counter() - t_start:6.1f} s] {msg}", file=sys.stderr, flush=True)

    distances: dict[str, object] = {"l2": "l2"}
    try:  # the demo downloads nothing: LPIPS when its weights are already there
        distances["lpips-vgg16"] = tangentlens.LPIPS("vgg16", download=False)  # built once, for both models
    except WeightsNotFoundError:
        log(
            "LPIPS-VGG16 weights not found: PPL in pixel space only (`tangentlens weights --download "
            "lpips-vgg16` fetches them; docs/lpips.md, 'Where the weights come from')"
        )

    report: dict[str, Any] = {
        "config": {
            "betas": list(betas),
            "ppl": {
                "space": "z",
                "z_interp": "lerp",
                "sampling": "full",
                "method": "jvp",
                "num_samples": ppl_samples,
                "distances": list(distances),
            },
            "spectra": {"distance": "l2", "space": "z", "points": spectra_points, "method": "full"},
            "geodesics": dict(GEODESIC_CONFIG, pairs=geodesic_pairs),
            "metrics": {"train": metric_samples, "test": metric_samples // 2, "points": metric_points},
            "seed": seed,
        },
        "versions": {
            "tangentlens": tangentlens.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "models": {},
    }
    scans, ppl_l2, geo_scans, geo_examples = {}, {}, {}, {}
    for beta in betas:
        vae = load_demo_vae(beta)
        gen = vae.generator(channels=1)
        entry: dict[str, Any] = {"ppl": {}}
        for dist, distance in distances.items():
            log(f"beta={beta}: PPL ({dist}, exact mode, {ppl_samples} samples)")
            r = tangentlens.ppl(
                gen,
                space="z",
                z_interp="lerp",
                sampling="full",
                method="jvp",
                distance=distance,
                num_samples=ppl_samples,
                batch_size=256,
                resize=None,
                seed=seed,
                progress=not quiet,
            )
            entry["ppl"][dist] = {
                "mean": r.mean,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "std": r.std,
                "num_samples": r.num_samples,
                "seconds": r.seconds,
            }
            if dist == "l2":
                ppl_l2[beta] = r
        log(f"beta={beta}: spectra of M = JᵀJ at {spectra_points} points")
        sc = spectra.scan(
            gen,
            spectra_points,
            seed,
            k=None,
            distance="l2",
            space="z",
            method="full",
            batch_size=64,
            store_eigenvectors=True,
            progress=not quiet,
            z_dim=vae.z_dim,
        )
        scans[beta] = sc
        agg = sc.aggregate()
        entry["spectra"] = {
            key: {q: float(agg[key][q]) for q in ("mean", "std", "q05", "q50", "q95")}
            for key in STAT_KEYS
            if key in agg
        }
        entry["spectra"]["mean_eigenvalues"] = sc.eigenvalues.mean(0).tolist()
        log(f"beta={beta}: disentanglement metrics")
        entry["metrics"] = _metrics(vae, metric_samples, metric_samples // 2, metric_points, seed)
        _traversals(
            vae,
            out / f"traversals_beta{beta}.png",
            f"β = {beta}: latent traversals (z_i in [-2.5, 2.5] around an image's code)",
        )
        log(f"beta={beta}: geodesics between {geodesic_pairs} latent pairs (pixels, lerp)")
        entry["geodesics"], geo_scans[beta], geo_examples[beta] = _geodesics(gen, geodesic_pairs, seed, quiet)
        report["models"][f"beta{beta}"] = entry

    def side_by_side(name: str, width: float, height: float, draw: Any) -> None:
        """One panel per model, ``draw(ax, beta)``, saved as ``out/name``."""
        fig, axes = plt.subplots(
            1, len(betas), figsize=(width * len(betas), height), squeeze=False, layout="constrained"
        )
        for col, beta in enumerate(betas):
            draw(axes[0, col], beta)
        fig.savefig(out / name, dpi=90, bbox_inches="tight")  # labels and colour bars inside
        plt.close(fig)

    def ppl_panel(ax: Any, beta: int) -> None:
        r = ppl_l2[beta]
        r.plot_histogram(ax=ax, log=True)
        ax.set_title(f"β = {beta}: PPL {r.mean:.4g} [{r.ci_low:.4g}, {r.ci_high:.4g}]", fontsize=9)

    def decay_panel(ax: Any, beta: int) -> None:
        scans[beta].plot_eigenvalue_decay(ax=ax)
        ax.set_title(f"β = {beta}: eigenvalues of M (median, quantile bands)", fontsize=9)

    def alignment_panel(ax: Any, beta: int) -> None:
        scans[beta].plot_alignment(ax=ax)
        ax.set_title(f"β = {beta}: mean |V| (right singular vectors)", fontsize=9)

    side_by_side("ppl_histogram.png", 5, 3.2, ppl_panel)
    side_by_side("eigenvalue_decay.png", 5, 3.5, decay_panel)
    side_by_side("alignment.png", 4.5, 4, alignment_panel)
    _geodesic_figure(out / "geodesics.png", betas, geo_scans, geo_examples)

    report["seconds"] = time.perf_counter() - t_start
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    (out / "report.md").write_text(_markdown(report, betas))
    log(f"wrote {out / 'report.md'}, report.json and plots in {report['seconds']:.0f} s")
    return report


def _markdown(report: dict[str, Any], betas: tuple[int, ...]) -> str:
    models = report["models"]
    head = "| | " + " | ".join(f"β = {b}" for b in betas) + " |\n|---|" + "---|" * len(betas) + "\n"
    rows = []
    for dist in report["config"]["ppl"]["distances"]:
        cells = []
        for b in betas:
            p = models[f"beta{b}"]["ppl"][dist]
            cells.append(f"{p['mean']:.4g} [{p['ci_low']:.4g}, {p['ci_high']:.4g}]")
        rows.append(f"| PPL, Z lerp, exact, {dist} (95 % CI) | " + " | ".join(cells) + " |")
    for key in STAT_KEYS:
        if all(key in models[f"beta{b}"]["spectra"] for b in betas):
            cells = [
                f"{models[f'beta{b}']['spectra'][key]['q50']:.4g} "
                f"({models[f'beta{b}']['spectra'][key]['q05']:.3g}–{models[f'beta{b}']['spectra'][key]['q95']:.3g})"
                for b in betas
            ]
            rows.append(f"| {key.replace('_', ' ')} (median, 5–95 %) | " + " | ".join(cells) + " |")
    for key, label in (
        ("efficiency", "geodesic efficiency, Z lerp, pixels (mean [95 % CI])"),
        ("efficiency_fine", f"same at {2 * report['config']['geodesics']['points'] - 1} points"),
    ):
        cells = []
        for b in betas:
            e = models[f"beta{b}"]["geodesics"][key]
            cells.append(f"{e['mean']:.3g} [{e['ci_low']:.3g}, {e['ci_high']:.3g}]")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    rows.append(
        "| geodesic efficiency (median, 5–95 %) | "
        + " | ".join(
            f"{models[f'beta{b}']['geodesics']['efficiency']['q50']:.3g} "
            f"({models[f'beta{b}']['geodesics']['efficiency']['q05']:.3g}–"
            f"{models[f'beta{b}']['geodesics']['efficiency']['q95']:.3g})"
            for b in betas
        )
        + " |"
    )
    rows.append(
        "| geodesic pairs converged | "
        + " | ".join(
            f"{models[f'beta{b}']['geodesics']['converged']}/{models[f'beta{b}']['geodesics']['num_pairs']}"
            for b in betas
        )
        + " |"
    )
    for key in models[f"beta{betas[0]}"]["metrics"]:
        rows.append(
            f"| {key.replace('_', ' ')} | "
            + " | ".join(_fmt(models[f"beta{b}"]["metrics"][key]) for b in betas)
            + " |"
        )
    cfg = report["config"]
    n_train, n_test, n_pts = cfg["metrics"]["train"], cfg["metrics"]["test"], cfg["metrics"]["points"]
    text = [
        "# tangentlens demo report",
        "",
        "Two β-VAEs (diagonal Gaussian posterior, 10 latents) trained on procedural dSprites, shipped with "
        "the package; the decoder is the generator G(z), images in [-1, 1].",
        "",
        f"PPL: {cfg['ppl']['num_samples']} samples, Z space, lerp of z0, z1 ~ N(0, I) at t ~ U[0, 1], the "
        "exact JVP limit. Spectra: M(z) = JᵀJ of the pixel embedding, full eigendecomposition at "
        f"{cfg['spectra']['points']} points z ~ N(0, I). Metrics: encoder means on {n_train} train / "
        f"{n_test} test samples; BetaVAE / FactorVAE on {n_pts} points.",
        "",
        head + "\n".join(rows),
        "",
        f"Geodesics: {cfg['geodesics']['pairs']} pairs z0, z1 ~ N(0, I), {cfg['geodesics']['points']} "
        "points, pixel distance, from the lerp path; efficiency = geodesic length / lerp length "
        "(1: lerp is already shortest).",
        "",
        "Plots: `ppl_histogram.png`, `eigenvalue_decay.png`, `alignment.png`, `geodesics.png`, "
        + ", ".join(f"`traversals_beta{b}.png`" for b in betas)
        + ".",
        "",
        f"Total time: {report['seconds']:.0f} s.",
        "",
    ]
    return "\n".join(text)
