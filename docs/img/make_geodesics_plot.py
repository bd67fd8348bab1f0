"""Regenerates docs/img/geodesics.png and prints the README's efficiency figures:
`python docs/img/make_geodesics_plot.py` (the geodesics section of `tangentlens demo`, same pairs and seed;
a few minutes on 2 cores)."""

import json
import os
import time

import matplotlib

matplotlib.use("Agg")

from tangentlens import demo  # noqa: E402
from tangentlens.models.vae import load_demo_vae  # noqa: E402

PAIRS, SEED = 16, 0
scans, examples, summary = {}, {}, {}
for beta in (1, 4):
    t0 = time.perf_counter()
    agg, scans[beta], examples[beta] = demo._geodesics(
        load_demo_vae(beta).generator(channels=1), PAIRS, SEED, True
    )
    keep = ("mean", "ci_low", "ci_high", "q05", "q50", "q95")
    summary[f"beta{beta}"] = {
        "efficiency": {k: round(agg["efficiency"][k], 4) for k in keep},
        "efficiency_fine": {k: round(agg["efficiency_fine"][k], 4) for k in keep},
        "converged": f"{agg['converged']}/{agg['num_pairs']}",
        "length_change_max": round(agg["length_change_max"], 4),
        "interp_excess_mean": round(agg["interp_excess_mean"], 4),
        "seconds": round(time.perf_counter() - t0, 1),
    }
demo._geodesic_figure(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "geodesics.png"), (1, 4), scans, examples
)
print(json.dumps(summary, indent=1))
