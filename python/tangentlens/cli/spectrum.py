"""``tangentlens spectrum``: spectra of the latent metric M = JᵀJ over many points (SPEC §5)."""

from __future__ import annotations

import argparse
import json
import sys

from tangentlens.cli._common import load_generator
from tangentlens.jvp import PRECISIONS


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "spectrum", help="spectra of the latent metric M = JᵀJ over many latent points (SPEC §5)"
    )
    p.add_argument(
        "--generator",
        required=True,
        metavar="MODULE:ATTR",
        help="a generator object (mapping/synthesis) or a zero-argument factory returning one",
    )
    p.add_argument("--points", type=int, default=1000, help="number of latent points (default: 1000)")
    p.add_argument("--k", type=int, default=32, help="top eigenvalues per point; 0 = all (default: 32)")
    p.add_argument(
        "--distance", default="l2", help="l2, lpips-vgg16, lpips-alex, lpips-squeeze (default: l2)"
    )
    p.add_argument("--space", default="z", choices=["z", "w", "w+"])
    p.add_argument("--method", default="auto", choices=["auto", "full", "randomized", "lanczos"])
    p.add_argument("--tol", type=float, default=1e-3, help="relative residual tolerance (default: 1e-3)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("--device", default=None, help="default: the generator's")
    p.add_argument("--checkpoint", default=None, metavar="PATH", help="resume from / write to PATH")
    p.add_argument("--eigenvectors", action="store_true", help="store the eigenvectors (for the alignment)")
    p.add_argument(
        "--json", metavar="PATH", default=None, help="write the per-point rows and aggregate to PATH"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    def run(args: argparse.Namespace) -> int:
        from tangentlens import spectra

        try:
            obj = load_generator(args.generator)
            if hasattr(obj, "eval"):
                obj.eval()
            if args.device is not None and hasattr(obj, "to"):
                obj = obj.to(args.device)
            res = spectra.scan(
                obj,
                args.points,
                args.seed,
                k=args.k or None,
                distance=args.distance,
                space=args.space,
                method=args.method,
                tol=args.tol,
                batch_size=args.batch_size,
                precision=args.precision,
                checkpoint=args.checkpoint,
                store_eigenvectors=args.eigenvectors,
                progress=not args.no_progress,
                device=args.device,
            )
        except (ValueError, TypeError) as err:
            print(f"tangentlens spectrum: {err}", file=sys.stderr)
            return 2
        agg = res.aggregate()
        summary = {
            name: {key: agg[name][key] for key in ("mean", "std", "q05", "q50", "q95")}
            for name in sorted(agg)
            if name != "eigenvalues"
        }
        print(json.dumps({"points": res.num_points, "seconds": res.seconds, "stats": summary}, indent=1))
        if args.json:
            res.to_json(args.json)
        return 0

    p.set_defaults(run=run)
