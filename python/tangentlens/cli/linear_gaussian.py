"""``tangentlens linear-gaussian``: success rates of the linear-Gaussian VAE study (SPEC §6).

Two protocols: the library's own study (``--protocol tangentlens``, :func:`linear_gaussian.success_rates` on a
γ × λ grid) and the Vu–Wei–Wan notebooks as their authors ran them (``--protocol vu2024``,
:func:`linear_gaussian.vu2024`, their grids and constants).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

# Options that only one protocol takes (dest -> protocol), to refuse the others instead of ignoring them.
_ONLY = {
    "gamma": "tangentlens",
    "lam": "tangentlens",
    "restarts": "tangentlens",
    "max_iters": "tangentlens",
    "sigma_v": "vu2024",
    "workers": "vu2024",
    "pairs": "vu2024",
    "plot": "vu2024",
}


def _number_list(text: str) -> list[float]:
    """``"-0.02,-0.01,0"`` -> [-0.02, -0.01, 0.0] (argparse ``type``)."""
    try:
        out = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of numbers, got {text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError(f"expected at least one number, got {text!r}")
    return out


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "linear-gaussian",
        help="success rates of I_m and SAP for the linear-Gaussian (γλ-)VAE study (SPEC §6)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # `--lam -0.02,-0.01,0`: Python < 3.13 takes a token starting with '-' for an option unless it is a plain
    # negative number; this parser has no option that looks like a number, so treat "-<digit>..." (and
    # "-.<digit>...") as a value, which is what Python 3.13's argparse does.
    p._negative_number_matcher = re.compile(r"^-\.?\d")
    p.add_argument(
        "--protocol",
        choices=("tangentlens", "vu2024"),
        default="tangentlens",
        help="tangentlens: the library's study on a γ × λ grid (default); vu2024: the Vu–Wei–Wan notebooks "
        "exactly (their grids, constants, solver and metrics)",
    )
    p.add_argument(
        "--config",
        action="append",
        default=None,
        help="s,n,m of a named configuration (3,4,3 or 5,5,4); repeatable; default: both",
    )
    p.add_argument(
        "--seeds", type=int, default=None, help="number of seeds, 0..N-1 (default: 10; vu2024: 20)"
    )
    p.add_argument(
        "--encoder",
        choices=("full", "diagonal"),
        default=None,
        help="Σ_W of the encoder: full (default) or diagonal (mean-field)",
    )
    p.add_argument("--diagonal", action="store_true", help="same as --encoder diagonal")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON to PATH")
    own = p.add_argument_group("--protocol tangentlens")
    own.add_argument(
        "--gamma", type=_number_list, default=None, help="comma list of γ values (default: 0.5,1,2)"
    )
    own.add_argument(
        "--lam",
        type=_number_list,
        default=None,
        help="comma list of λ values, negatives allowed: --lam -0.02,0,0.5 (default: 0,0.5,2)",
    )
    own.add_argument("--restarts", type=int, default=None, help="random restarts per seed (default: 4)")
    own.add_argument("--max-iters", type=int, default=None, help="iterations per run (default: 5000)")
    vu = p.add_argument_group("--protocol vu2024")
    vu.add_argument(
        "--sigma-v",
        choices=("sampled", "exact"),
        default=None,
        help="Σ_V as the notebooks had it (sampled: 10⁷ draws, rounded to 4 decimals; default) or analytic",
    )
    vu.add_argument("--workers", type=int, default=None, help="worker processes (default: one per CPU core)")
    vu.add_argument("--pairs", action="store_true", help="also print the per-(γ, λ) success fractions")
    vu.add_argument(
        "--plot", metavar="PATH", default=None, help="save per-(γ, λ) heat maps (needs matplotlib)"
    )

    def run(args: argparse.Namespace) -> int:
        from tangentlens import linear_gaussian as lg

        for dest, protocol in _ONLY.items():
            value = getattr(args, dest)
            if protocol != args.protocol and value not in (None, False):
                flag = "--" + dest.replace("_", "-")
                msg = f"{flag} applies to --protocol {protocol}, not {args.protocol}"
                print(f"tangentlens linear-gaussian: {msg}", file=sys.stderr)
                return 2
        if args.diagonal and args.encoder == "full":
            print("tangentlens linear-gaussian: --diagonal contradicts --encoder full", file=sys.stderr)
            return 2
        encoder = "diagonal" if args.diagonal else (args.encoder or "full")
        configs = args.config or [",".join(map(str, c)) for c in lg.CONFIGURATIONS]
        try:
            if args.protocol == "vu2024":
                payload = _run_vu2024(lg, args, configs, encoder)
            else:
                payload = _run_tangentlens(lg, args, configs, encoder)
        except ValueError as err:
            print(f"tangentlens linear-gaussian: {err}", file=sys.stderr)
            return 2
        if args.json:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(payload, fh, indent=1)
        return 0

    p.set_defaults(run=run)


def _run_tangentlens(lg: Any, args: argparse.Namespace, configs: list[str], encoder: str) -> dict[str, Any]:
    tables = []
    for config in configs:
        table = lg.success_rates(
            config,
            args.gamma if args.gamma is not None else [0.5, 1.0, 2.0],
            args.lam if args.lam is not None else [0.0, 0.5, 2.0],
            args.seeds if args.seeds is not None else 10,
            restarts=args.restarts if args.restarts is not None else 4,
            diagonal=encoder == "diagonal",
            max_iters=args.max_iters if args.max_iters is not None else 5000,
        )
        print(table.format())
        print()
        tables.append(table.to_dict())
    return {"protocol": "tangentlens", "tables": tables}


def _run_vu2024(lg: Any, args: argparse.Namespace, configs: list[str], encoder: str) -> dict[str, Any]:
    results = []
    for config in configs:
        res = lg.vu2024(
            config,
            seeds=args.seeds if args.seeds is not None else 20,
            encoder=encoder,
            sigma_v=args.sigma_v or "sampled",
            workers=args.workers,
        )
        print(res.format())
        t = res.timing
        print(
            f"\n(wall {t['wall_s']:.1f} s over {int(t['workers'])} worker(s); CPU: drawing "
            f"{t['draw_cpu_s']:.1f} s, solving {t['solve_cpu_s']:.1f} s, busiest worker + scoring "
            f"{t['critical_cpu_s']:.1f} s)"
        )
        if args.pairs:
            print()
            print(res.format_pairs())
        print()
        if args.plot:
            path = args.plot
            if len(configs) > 1:
                stem, dot, ext = path.rpartition(".")
                tag = config.replace(",", "")
                path = f"{stem}_{tag}.{ext}" if dot else f"{path}_{tag}"
            res.plot(path)
            print(f"heat maps written to {path}")
        results.append(res.to_dict())
    return {"protocol": "vu2024", "results": results}
