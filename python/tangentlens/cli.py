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


# Registration order = order in --help. Add new commands here.
_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_cmd_info]


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
