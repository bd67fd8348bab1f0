"""``tangentlens demo``: PPL, spectra and disentanglement metrics of the shipped dSprites VAEs."""

from __future__ import annotations

import argparse
from pathlib import Path


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="PPL, spectra, geodesics and disentanglement metrics of the shipped dSprites VAEs (beta 1 vs 4)",
    )
    p.add_argument("--out", default="tangentlens-demo", help="output directory (default: tangentlens-demo)")
    p.add_argument("--ppl-samples", type=int, default=5000)
    p.add_argument("--spectra-points", type=int, default=300)
    p.add_argument(
        "--metric-samples", type=int, default=2000, help="encoder codes for MIG/SAP/DCI/modularity"
    )
    p.add_argument("--metric-points", type=int, default=500, help="training points of BetaVAE / FactorVAE")
    p.add_argument("--geodesic-pairs", type=int, default=16, help="latent pairs for the geodesics section")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")

    def run(args: argparse.Namespace) -> int:
        from tangentlens.demo import run_demo

        run_demo(
            args.out,
            ppl_samples=args.ppl_samples,
            spectra_points=args.spectra_points,
            metric_samples=args.metric_samples,
            metric_points=args.metric_points,
            geodesic_pairs=args.geodesic_pairs,
            seed=args.seed,
            quiet=args.quiet,
        )
        print((Path(args.out) / "report.md").read_text())
        return 0

    p.set_defaults(run=run)
