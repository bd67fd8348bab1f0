"""The ``tangentlens`` command line.

Each sub-command lives in a small ``_cmd_*`` pair (argument set-up, run) and imports its module lazily,
so ``tangentlens --help`` starts fast and does not need the optional dependencies of every command.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import get_args

import tangentlens
from tangentlens.jvp import PRECISIONS
from tangentlens.ppl import Interp

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
            obj = _load_generator(args.generator)
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
def _load_generator(spec: str, *, key: str = "G_ema", allow_unsafe_pickle: bool = False) -> object:
    """A generator from ``file.pkl`` (NVIDIA StyleGAN2-ADA, read without running its code unless
    ``allow_unsafe_pickle``) or ``module:attr`` / ``path/file.py:attr``: a class or a function without
    required arguments is called (a factory), anything else is used as it is."""
    import importlib
    import importlib.util
    import inspect
    from pathlib import Path

    if spec.endswith(".pkl"):
        from tangentlens.generators import load_stylegan2_pkl

        return load_stylegan2_pkl(spec, key=key, allow_unsafe_pickle=allow_unsafe_pickle)
    mod_name, sep, attr = spec.rpartition(":")
    if not sep or not mod_name or not attr:
        raise ValueError(
            f"--generator: expected 'module:attr', 'path/file.py:attr' or 'file.pkl', got {spec!r}"
        )
    if mod_name.endswith(".py"):
        path = Path(mod_name)
        if not path.is_file():
            raise ValueError(f"--generator: no such file {str(path)!r}")
        loader = importlib.util.spec_from_file_location(path.stem, path)
        assert loader is not None and loader.loader is not None
        module = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(mod_name)
        except ImportError as exc:
            raise ValueError(f"--generator: cannot import module {mod_name!r} of {spec!r}: {exc}") from exc
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"--generator: {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if inspect.isclass(obj):
        return obj()
    looks_like_generator = any(hasattr(obj, a) for a in ("mapping", "synthesis", "decode", "sample", "z_dim"))
    if callable(obj) and not looks_like_generator:
        try:
            params = inspect.signature(obj).parameters.values()
        except (TypeError, ValueError):  # no signature (a builtin): use it as it is
            return obj
        required = [
            p
            for p in params
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if not required:  # a factory
            return obj()
    return obj


def _cmd_ppl(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ppl", help="Perceptual Path Length of a generator (SPEC §4)")
    p.add_argument(
        "--generator", required=True, help="file.pkl (NVIDIA StyleGAN2-ADA), module:attr or file.py:attr"
    )
    p.add_argument("--pkl-key", default="G_ema", help="network in the .pkl (default G_ema)")
    p.add_argument(
        "--allow-unsafe-pickle",
        action="store_true",
        help="unpickle with pickle.load (RUNS code from the file)",
    )
    p.add_argument("--preset", choices=["stylegan2", "stylegan2_crop", "torchmetrics", "torch_fidelity"])
    p.add_argument("--space", choices=["w", "z"])
    p.add_argument("--sampling", choices=["end", "full"])
    p.add_argument("--method", choices=["fd", "jvp"])
    p.add_argument("--z-interp", choices=get_args(Interp))
    p.add_argument("--num-samples", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--distance", default="auto", help="auto, lpips-vgg16, lpips-alex, lpips-squeeze or l2")
    p.add_argument("--epsilon", type=float)
    p.add_argument("--crop", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--resize", help="box256, none, area_or_bilinear:S or bilinear:S")
    p.add_argument("--precision", choices=PRECISIONS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--z-dim", type=int, help="latent size of a plain callable generator")
    p.add_argument("--output-range", choices=["-1_1", "0_1", "0_255"], help="the generator's image range")
    p.add_argument(
        "--target-rel-ci", type=float, help="stop when the 95%% CI half-width / mean is below this"
    )
    p.add_argument("--checkpoint", help="resume from / write this checkpoint file")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the generator's)")
    p.add_argument("--json", help="write the result (with per-sample distances) to this file")
    p.add_argument("--no-progress", action="store_true")

    def run(args: argparse.Namespace) -> int:
        from tangentlens.generators import as_generator
        from tangentlens.ppl import ppl

        try:
            G = _load_generator(
                args.generator, key=args.pkl_key, allow_unsafe_pickle=args.allow_unsafe_pickle
            )
        except ValueError as err:
            print(f"tangentlens ppl: {err}", file=sys.stderr)
            return 2
        if args.z_dim is not None or args.output_range is not None:
            G = as_generator(G, z_dim=args.z_dim, output_range=args.output_range)
        result = ppl(
            G,
            preset=args.preset,
            space=args.space,
            sampling=args.sampling,
            method=args.method,
            z_interp=args.z_interp,
            num_samples=args.num_samples,
            batch_size=args.batch_size,
            distance=args.distance,
            epsilon=args.epsilon,
            crop=args.crop,
            resize=args.resize,
            precision=args.precision,
            seed=args.seed,
            target_rel_ci=args.target_rel_ci,
            checkpoint=args.checkpoint,
            progress=not args.no_progress,
            device=args.device,
        )
        print(result)
        if args.json:
            result.to_json(args.json)
            print(f"wrote {args.json}", file=sys.stderr)
        return 0

    p.set_defaults(run=run)


def _cmd_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="PPL, spectra and disentanglement metrics of the shipped dSprites VAEs (beta 1 vs 4)",
    )
    p.add_argument("--out", default="tangentlens-demo", help="output directory (default: tangentlens-demo)")
    p.add_argument("--ppl-samples", type=int, default=5000)
    p.add_argument("--spectra-points", type=int, default=300)
    p.add_argument(
        "--metric-samples", type=int, default=2000, help="encoder codes for MIG/SAP/DCI/modularity"
    )
    p.add_argument("--metric-points", type=int, default=500, help="training points of BetaVAE / FactorVAE")
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
            seed=args.seed,
            quiet=args.quiet,
        )
        print((Path(args.out) / "report.md").read_text())
        return 0

    p.set_defaults(run=run)


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _cmd_info,
    _cmd_linear_gaussian,
    _cmd_ppl,
    _cmd_spectrum,
    _cmd_demo,
]


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
