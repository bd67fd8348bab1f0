"""The ``tangentlens`` command line.

One module per sub-command, each with ``add(sub)`` (argument set-up and its ``run``). The heavy modules are
imported inside ``run``, so ``tangentlens --help`` starts fast and does not need the optional dependencies
of every command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import tangentlens
from tangentlens.cli import demo, geodesic, info, linear_gaussian, ppl, spectrum
from tangentlens.cli._common import load_generator

__all__ = ["build_parser", "load_generator", "main"]

# Registration order = order in --help. Add new commands here.
_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    info.add,
    linear_gaussian.add,
    ppl.add,
    spectrum.add,
    geodesic.add,
    demo.add,
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
