"""``tangentlens geodesic``: perceptual geodesics of many latent pairs and the efficiency of the
interpolation paths (docs/geodesics.md)."""

from __future__ import annotations

import argparse
import json

from tangentlens.cli._common import (
    UsageError,
    add_run_options,
    check_output_path,
    load_generator,
    run_options,
    write_result,
)
from tangentlens.jvp import PRECISIONS


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "geodesic",
        help="shortest perceptual paths between latent pairs and how much longer lerp / slerp is",
    )
    p.add_argument(
        "--generator",
        required=True,
        metavar="MODULE:ATTR",
        help="a generator object (mapping/synthesis, decode, ...), a file.pkl, or a zero-argument factory",
    )
    p.add_argument("--pairs", type=int, default=100, help="number of latent pairs")
    p.add_argument("--points", type=int, default=16, help="points per discrete curve")
    p.add_argument("--distance", default="auto", help="auto, l2, lpips-vgg16, lpips-alex, lpips-squeeze")
    p.add_argument("--space", default="z", choices=["z", "w", "w+"], help="latent space of the paths")
    p.add_argument("--init", default="lerp", choices=["lerp", "slerp"], help="the interpolation path")
    p.add_argument(
        "--constrain", default="none", choices=["none", "sphere"], help="keep the points on the latent shell"
    )
    p.add_argument("--method", default="lbfgs", choices=["lbfgs", "gauss-newton"], help="the optimiser")
    p.add_argument("--tol", type=float, default=1e-4, help="relative energy tolerance")
    p.add_argument("--max-iters", type=int, default=None, help="iterations per pair (default: per method)")
    p.add_argument("--no-refine", action="store_true", help="skip the check at 2n - 1 points")
    p.add_argument("--batch-size", type=int, default=8, help="pairs per batch")
    p.add_argument("--seed", type=int, default=0, help="pair i is drawn from (seed, i)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help="of the JVPs")
    add_run_options(p)
    p.add_argument("--store-paths", action="store_true", help="keep every pair's geodesic in the JSON")
    p.add_argument("--json", metavar="PATH", default=None, help="write the per-pair rows and aggregate")
    p.add_argument("--plot", metavar="PNG", default=None, help="write the efficiency histogram (matplotlib)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    def run(args: argparse.Namespace) -> int:
        from tangentlens import geodesics

        json_path = check_output_path(args.json, "--json")
        plot_path = check_output_path(args.plot, "--plot")
        check_output_path(args.checkpoint, "--checkpoint")
        if plot_path is not None:
            try:
                import matplotlib
            except ImportError as exc:
                raise UsageError("--plot: needs matplotlib (pip install matplotlib)") from exc
            matplotlib.use("Agg")
        obj = load_generator(args.generator)
        if args.device is not None and hasattr(obj, "to"):
            obj = obj.to(args.device)
        res = geodesics.scan(
            obj,
            args.pairs,
            args.seed,
            space=args.space,
            distance=args.distance,
            points=args.points,
            init=args.init,
            constrain=args.constrain,
            method=args.method,
            max_iters=args.max_iters,
            tol=args.tol,
            refine=not args.no_refine,
            batch_size=args.batch_size,
            store_paths=args.store_paths,
            progress=not args.no_progress,
            precision=args.precision,
            **run_options(args),  # type: ignore[arg-type]
        )
        agg = res.aggregate()
        summary = {
            "pairs": res.num_pairs,
            "seconds": res.seconds,
            "pairs_per_second": (res.num_pairs - res.resumed_from) / res.seconds if res.seconds > 0 else None,
            **{k: v for k, v in agg.items() if k != "num_pairs"},
        }
        for key in ("efficiency", "efficiency_fine"):
            if key in summary:
                summary[key] = {k: v for k, v in summary[key].items() if k != "histogram"}
        print(json.dumps(summary, indent=1))
        if json_path is not None:
            write_result(res.to_json, json_path, "--json")
        if plot_path is not None:
            ax = res.plot_histogram()
            ax.set_title(
                f"{res.num_pairs} pairs, {args.points} points, {args.distance}, {args.space}", fontsize=9
            )
            ax.figure.tight_layout()
            write_result(lambda path: ax.figure.savefig(path, dpi=100), plot_path, "--plot")
        return 0

    p.set_defaults(run=run)
