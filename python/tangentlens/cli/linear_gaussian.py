"""``tangentlens linear-gaussian``: success rates of the linear-Gaussian VAE study (SPEC §6)."""

from __future__ import annotations

import argparse
import json
import sys


def add(sub: argparse._SubParsersAction) -> None:
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
