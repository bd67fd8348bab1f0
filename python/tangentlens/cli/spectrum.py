"""``tangentlens spectrum``: spectra of the latent metric M = JᵀJ over many points (SPEC §5)."""

from __future__ import annotations

import argparse
import json

from tangentlens.cli._common import (
    UsageError,
    add_generator_options,
    add_run_options,
    add_weights_options,
    apply_offline,
    check_output_path,
    generator_from_args,
    run_options,
    write_result,
)
from tangentlens.jvp import PRECISIONS


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "spectrum",
        help="spectra of the latent metric M = JᵀJ over many latent points (SPEC §5)",
        description="Spectra of the latent metric M = JᵀJ of F = φ∘G over many latent points (SPEC §5, "
        "docs/spectra.md): the aggregate statistics on stdout, the per-point rows with --json. LPIPS "
        "distances find or download their weights on first use (docs/lpips.md; --offline never downloads).",
    )
    add_generator_options(p)
    p.add_argument("--points", type=int, default=1000, help="number of latent points")
    p.add_argument("--k", type=int, default=32, help="top eigenvalues per point; 0 = all")
    p.add_argument("--distance", default="l2", help="l2, lpips-vgg16, lpips-alex, lpips-squeeze")
    add_weights_options(p)
    p.add_argument("--space", default="z", choices=["z", "w", "w+"], help="latent space of the points")
    p.add_argument(
        "--method", default="auto", choices=["auto", "full", "randomized", "lanczos"], help="eigensolver"
    )
    p.add_argument("--tol", type=float, default=1e-3, help="relative residual tolerance")
    p.add_argument("--batch-size", type=int, default=8, help="points per pass")
    p.add_argument("--seed", type=int, default=0, help="point i is drawn from (seed, i)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help="of the JVPs")
    add_run_options(p)
    p.add_argument("--eigenvectors", action="store_true", help="store the eigenvectors (for the alignment)")
    p.add_argument(
        "--json", metavar="PATH", default=None, help="write the per-point rows and aggregate to PATH"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    def run(args: argparse.Namespace) -> int:
        from tangentlens import spectra

        apply_offline(args)
        json_path = check_output_path(args.json, "--json")
        check_output_path(args.checkpoint, "--checkpoint")
        distance: object = args.distance
        if args.trunk_weights or args.linear_weights:
            if not args.distance.startswith("lpips-"):
                raise UsageError(
                    f"--trunk-weights / --linear-weights: need --distance lpips-..., got {args.distance}"
                )
            from tangentlens.lpips import LPIPS

            distance = LPIPS(
                args.distance.removeprefix("lpips-"),
                trunk_weights=args.trunk_weights,
                linear_weights=args.linear_weights,
            )
        obj = generator_from_args(args)
        if hasattr(obj, "eval"):
            obj.eval()
        if args.device is not None and hasattr(obj, "to"):
            obj = obj.to(args.device)
        res = spectra.scan(
            obj,
            args.points,
            args.seed,
            k=args.k or None,
            distance=distance,
            space=args.space,
            method=args.method,
            tol=args.tol,
            batch_size=args.batch_size,
            precision=args.precision,
            store_eigenvectors=args.eigenvectors,
            progress=not args.no_progress,
            **run_options(args),  # type: ignore[arg-type]
        )
        agg = res.aggregate()
        summary = {
            name: {key: agg[name][key] for key in ("mean", "std", "q05", "q50", "q95")}
            for name in sorted(agg)
            if name != "eigenvalues"
        }
        print(json.dumps({"points": res.num_points, "seconds": res.seconds, "stats": summary}, indent=1))
        if json_path is not None:
            write_result(res.to_json, json_path, "--json")
        return 0

    p.set_defaults(run=run)
