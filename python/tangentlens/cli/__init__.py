"""The ``tangentlens`` command line.

One module per sub-command, each with ``add(sub)`` (argument set-up and its ``run``). The heavy modules are
imported inside ``run``, so ``tangentlens --help`` starts fast and does not need the optional dependencies
of every command.

Errors are answered here, in one place: a user error (``_common.USER_ERRORS``: bad arguments, generator
loading, weights, checkpoints, NaN output) prints one line ``tangentlens <command>: error: ...`` and exits
with status 2; ``--debug`` (anywhere on the line) prints the traceback too. Argument-parsing errors are one
line as well. Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import tangentlens
from tangentlens.cli import demo, geodesic, info, linear_gaussian, metrics, ppl, spectrum, weights
from tangentlens.cli._common import USER_ERRORS, HelpFormatter, UsageError, load_generator

__all__ = ["UsageError", "build_parser", "load_generator", "main"]

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

# Registration order = order in --help. Add new commands here.
_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    info.add,
    linear_gaussian.add,
    ppl.add,
    spectrum.add,
    geodesic.add,
    metrics.add,
    weights.add,
    demo.add,
]


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (and where to look), not the whole usage; defaults in ``--help``."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tangentlens", description=tangentlens.__doc__)
    parser.add_argument("--version", action="version", version=f"tangentlens {tangentlens.__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="on an error, print the traceback too (also accepted after the command)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


def _one_line(err: BaseException) -> str:
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__


@contextmanager
def _plain_warnings() -> Iterator[None]:
    """Warnings as ``tangentlens: warning: <message>`` lines (the source line of the library is noise)."""
    saved = warnings.formatwarning

    def fmt(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
        return f"tangentlens: {category.__name__}: {message}\n"

    warnings.formatwarning = fmt  # type: ignore[assignment]
    try:
        yield
    finally:
        warnings.formatwarning = saved


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list
    args_list = [a for a in args_list if a != "--debug"]
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # --help, --version (0) and argument errors (2, already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_USER_ERROR
    # the command line as given (a command may start more processes running it)
    args.argv = args_list + (["--debug"] if debug else [])
    prog = f"tangentlens {args.command}"
    try:
        with _plain_warnings():
            return int(args.run(args))
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (a --checkpoint keeps the samples done)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as exc:  # a command that exits with a message
        if isinstance(exc.code, int) or exc.code is None:
            return exc.code or 0
        print(f"{prog}: error: {exc.code}", file=sys.stderr)
        return EXIT_USER_ERROR
    except USER_ERRORS as err:
        if debug:
            traceback.print_exc()
        hint = "" if debug else " (--debug shows the traceback)"
        print(f"{prog}: error: {_one_line(err)}{hint}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
