"""The ``tangentlens`` command line.

Each sub-command lives in a small ``_cmd_*`` pair (argument set-up, run) and imports its module lazily,
so ``tangentlens --help`` starts fast and does not need the optional dependencies of every command.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

import tangentlens

Runner = Callable[[argparse.Namespace], int]


def _cmd_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print the version, the build configuration and the available devices")

    def run(args: argparse.Namespace) -> int:
        import torch

        info = {
            "tangentlens": tangentlens.__version__,
            "torch": torch.__version__,
            "native": tangentlens.native_build_info(),
            "cuda_available": torch.cuda.is_available(),
        }
        print(json.dumps(info, indent=2))
        return 0

    p.set_defaults(run=run)


def _cmd_linear_gaussian(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "linear-gaussian",
        help="success rates of I_m and SAP for the linear-Gaussian (γλ-)VAE study (SPEC §6)",
    )
    p.add_argument(
        "--config",
        action="append",
        default=None,
        help="s,n,m of a named configuration (3,4,3 or 5,5,4); repeatable; default: both",
    )
    p.add_argument("--gamma", default="0.5,1,2", help="comma list of γ values (default: 0.5,1,2)")
    p.add_argument("--lam", default="0,0.5,2", help="comma list of λ values (default: 0,0.5,2)")
    p.add_argument("--seeds", type=int, default=10, help="number of seeds, 0..N-1 (default: 10)")
    p.add_argument("--restarts", type=int, default=4, help="random restarts per seed (default: 4)")
    p.add_argument("--max-iters", type=int, default=5000, help="iterations per run (default: 5000)")
    p.add_argument("--diagonal", action="store_true", help="mean-field (diagonal Σ_W) encoder")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the tables as JSON to PATH")

    def run(args: argparse.Namespace) -> int:
        from tangentlens import linear_gaussian as lg

        def floats(text: str, name: str) -> list[float]:
            try:
                return [float(x) for x in text.split(",") if x.strip()]
            except ValueError:
                raise SystemExit(f"--{name}: expected a comma list of numbers, got {text!r}") from None

        configs = args.config or [",".join(map(str, c)) for c in lg.CONFIGURATIONS]
        tables = []
        try:
            for config in configs:
                table = lg.success_rates(
                    config,
                    floats(args.gamma, "gamma"),
                    floats(args.lam, "lam"),
                    args.seeds,
                    restarts=args.restarts,
                    diagonal=args.diagonal,
                    max_iters=args.max_iters,
                )
                print(table.format())
                print()
                tables.append(table.to_dict())
        except ValueError as err:
            print(f"tangentlens linear-gaussian: {err}", file=sys.stderr)
            return 2
        if args.json:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump({"tables": tables}, fh, indent=1)
        return 0

    p.set_defaults(run=run)


def _resolve_object(spec: str) -> object:
    """``"package.module:attr.sub"`` -> the object (imported; attributes followed through dots)."""
    import importlib

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected 'module:attr' (e.g. mypkg.models:make_generator), got {spec!r}")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} of {spec!r}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(
                f"{spec!r}: {type(obj).__name__} {getattr(obj, '__name__', '')!r} has no {part!r}"
            )
        obj = getattr(obj, part)
    return obj


def _cmd_spectrum(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "fp16", "bf16"])
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
            obj = _resolve_object(args.generator)
            if not (hasattr(obj, "mapping") and hasattr(obj, "synthesis")) and callable(obj):
                obj = obj()  # a zero-argument factory
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


# Registration order = order in --help. Add new commands here.
_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_cmd_info, _cmd_linear_gaussian]
_COMMANDS.append(_cmd_spectrum)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tangentlens", description=tangentlens.__doc__)
    parser.add_argument("--version", action="version", version=f"tangentlens {tangentlens.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
