"""Pieces shared by the sub-commands: the CLI's small exception vocabulary, argument help with defaults,
output-path checks and the generator loader."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import os
import pickle
import tempfile
import time
from pathlib import Path

from tangentlens.generators.nvidia import UnsupportedGeneratorError

__all__ = [
    "GENERATOR_HELP",
    "USER_ERRORS",
    "UsageError",
    "HelpFormatter",
    "add_generator_options",
    "add_run_options",
    "add_weights_options",
    "apply_offline",
    "check_output_path",
    "generator_from_args",
    "load_array",
    "load_generator",
    "run_options",
    "write_result",
]

#: what every command's --generator / --network accepts (load_generator)
GENERATOR_HELP = (
    "file.pkl (an NVIDIA StyleGAN2 or StyleGAN3 network pickle, read without running its code), "
    "module:attr or path/file.py:attr (a generator object, or a class / zero-argument function returning one)"
)


class UsageError(ValueError):
    """A mistake on the command line the user can fix: one line on stderr, exit status 2."""


#: what ``main`` answers with one line and exit status 2 (``--debug`` shows the traceback): bad arguments
#: and values (ValueError, TypeError; checkpoint and generator-output errors are ValueErrors), files
#: (OSError: missing weights, unwritable paths), NaN / inf results (FloatingPointError), unreadable or
#: unsupported generator files
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    FloatingPointError,
    OSError,
    pickle.UnpicklingError,
    UnsupportedGeneratorError,
)


class HelpFormatter(argparse.HelpFormatter):
    """``--help`` with each option's default, where it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        flags = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction)
        if (
            "default" not in text
            and action.default is not None
            and action.default is not argparse.SUPPRESS
            and action.option_strings
            and not isinstance(action, flags)
        ):
            text += " (default: %(default)s)"
        return text

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        # an "examples:" epilog keeps its lines (command lines must not be re-flowed into one paragraph)
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds >= 0, got {text!r}")
    return value


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options every streamed run takes (ppl, spectrum): a plain callable's z_dim and range, the range
    check, the checkpoint and how often it is written, and the explicit resume of an unverified run."""
    p.add_argument("--z-dim", type=int, help="latent size of a plain callable generator")
    p.add_argument("--output-range", choices=["-1_1", "0_1", "0_255"], help="the generator's image range")
    p.add_argument(
        "--no-check-range",
        dest="check_range",
        action="store_false",
        help="do not compare the images with the declared range (it only ever warns)",
    )
    p.add_argument("--checkpoint", metavar="PATH", help="resume from / write this checkpoint file")
    p.add_argument(
        "--checkpoint-every",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="write the checkpoint this often",
    )
    p.add_argument(
        "--resume-unverified",
        action="store_true",
        help="resume a checkpoint even though the generator or distance cannot be fingerprinted reliably",
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the generator's)")


def add_generator_options(p: argparse.ArgumentParser) -> None:
    """``--generator`` (alias ``--network``, calc_metrics.py's name), ``--pkl-key``,
    ``--allow-unsafe-pickle``."""
    p.add_argument(
        "--generator", "--network", dest="generator", required=True, metavar="SPEC", help=GENERATOR_HELP
    )
    p.add_argument("--pkl-key", default="G_ema", help="network in the .pkl")
    p.add_argument(
        "--allow-unsafe-pickle",
        action="store_true",
        help="unpickle with pickle.load (RUNS code from the file)",
    )


def generator_from_args(args: argparse.Namespace) -> object:
    return load_generator(args.generator, key=args.pkl_key, allow_unsafe_pickle=args.allow_unsafe_pickle)


def add_weights_options(p: argparse.ArgumentParser, nvidia: bool = False) -> None:
    """Where the perceptual distance's weights come from (docs/lpips.md): explicit files, offline mode."""
    p.add_argument(
        "--trunk-weights", metavar="PATH", help="torchvision's trunk state dict (e.g. vgg16-397923af.pth)"
    )
    p.add_argument("--linear-weights", metavar="PATH", help="lpips' v0.1 linear layers (e.g. vgg.pth)")
    if nvidia:
        p.add_argument(
            "--nvidia-vgg16",
            metavar="PATH",
            help="NVIDIA's TorchScript vgg16.pt as the distance (TorchScript is code: a file you trust)",
        )
    p.add_argument(
        "--offline",
        action="store_true",
        help="never download weights (as $TANGENTLENS_OFFLINE=1): a missing file is an error naming it",
    )


def apply_offline(args: argparse.Namespace) -> None:
    """``--offline``: set ``$TANGENTLENS_OFFLINE`` for this process (and the processes it starts)."""
    if getattr(args, "offline", False):
        from tangentlens.weights import ENV_OFFLINE

        os.environ[ENV_OFFLINE] = "1"


def load_array(spec: str, option: str) -> object:
    """A numpy array from ``.npy``, ``.npz`` (``PATH`` with one array, or ``PATH:KEY``) or ``.pt``
    (``torch.load(weights_only=True)``: a tensor, or ``PATH:KEY`` of a dict of tensors). Nothing is
    unpickled."""
    import numpy as np

    path, key = spec, None
    for ext in (".npz", ".pt", ".pth"):
        head, sep, tail = spec.rpartition(":")
        if sep and head.endswith(ext) and tail:
            path, key = head, tail
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{option} {spec}: no such file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            data: object = np.load(p, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        elif suffix in (".pt", ".pth"):
            import torch

            data = torch.load(p, map_location="cpu", weights_only=True)
        else:
            raise UsageError(f"{option} {spec}: expected a .npy, .npz or .pt file")
    except (ValueError, OSError, pickle.UnpicklingError, RuntimeError) as exc:
        if isinstance(exc, UsageError):
            raise
        raise UsageError(f"{option} {spec}: cannot be read ({type(exc).__name__}: {exc})") from exc
    if isinstance(data, dict):
        if key is None:
            if len(data) != 1:
                raise UsageError(f"{option} {spec}: holds {sorted(data)}; name one as {path}:KEY")
            key = next(iter(data))
        if key not in data:
            raise UsageError(f"{option} {spec}: no array {key!r} (found {sorted(data)})")
        data = data[key]
    elif key is not None:
        raise UsageError(f"{option} {spec}: holds one array, not a dict: give the path without :{key}")
    if hasattr(data, "detach"):
        data = data.detach().cpu().numpy()  # type: ignore[union-attr]
    if not isinstance(data, np.ndarray):
        raise UsageError(f"{option} {spec}: expected an array, got {type(data).__name__}")
    return data


def run_options(args: argparse.Namespace) -> dict[str, object]:
    """The keyword arguments of :func:`add_run_options` for ``ppl`` / ``scan``."""
    return dict(
        z_dim=args.z_dim,
        output_range=args.output_range,
        check_range=args.check_range,
        checkpoint=args.checkpoint,
        checkpoint_every=args.checkpoint_every,
        resume_unverified=args.resume_unverified,
        device=args.device,
    )


def check_output_path(path: str | None, option: str) -> Path | None:
    """An output file the run can write: checked before the run starts (its directory exists and is
    writable, it is not a directory, an existing file is writable), so that a long run is not lost at the
    end."""
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{option} {path}: is a directory, expected a file path")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: the directory {str(parent)!r} does not exist")
    if p.exists():
        if not os.access(p, os.W_OK):
            raise UsageError(f"{option} {path}: the file is not writable")
        return p
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".tangentlens-write-test-"):
            pass
    except OSError as exc:
        raise UsageError(
            f"{option} {path}: cannot create a file in {str(parent)!r} ({exc.strerror})"
        ) from exc
    return p


def write_result(write: object, path: Path, option: str) -> None:
    """``write(path)``; if that fails after all (the disk filled up, the directory went away), the result
    goes to a file in the temporary directory and the error names both: a finished run is never lost."""
    try:
        write(path)  # type: ignore[operator]
    except OSError as exc:
        fallback = Path(tempfile.gettempdir()) / f"tangentlens-{int(time.time())}-{os.getpid()}{path.suffix}"
        write(fallback)  # type: ignore[operator]
        raise UsageError(
            f"{option} {path}: cannot be written ({exc.strerror or exc}); the result was written to "
            f"{fallback}"
        ) from exc


def load_generator(spec: str, *, key: str = "G_ema", allow_unsafe_pickle: bool = False) -> object:
    """A generator from ``file.pkl`` (NVIDIA StyleGAN2 / StyleGAN3, read without running its code unless
    ``allow_unsafe_pickle``) or ``module:attr`` / ``path/file.py:attr``: a class or a function without
    required arguments is called (a factory), anything else is used as it is."""
    if spec.endswith(".pkl"):
        from tangentlens.generators import load_nvidia_pkl

        return load_nvidia_pkl(spec, key=key, allow_unsafe_pickle=allow_unsafe_pickle)
    mod_name, sep, attr = spec.rpartition(":")
    if not sep or not mod_name or not attr:
        raise UsageError(
            f"--generator: expected 'module:attr', 'path/file.py:attr' or 'file.pkl', got {spec!r}"
        )
    if mod_name.endswith(".py"):
        path = Path(mod_name)
        if not path.is_file():
            raise UsageError(f"--generator: no such file {str(path)!r}")
        loader = importlib.util.spec_from_file_location(path.stem, path)
        if loader is None or loader.loader is None:
            raise UsageError(f"--generator: {str(path)!r} is not a Python file")
        module = importlib.util.module_from_spec(loader)
        try:
            loader.loader.exec_module(module)
        except Exception as exc:
            raise UsageError(
                f"--generator: running {str(path)!r} failed with {type(exc).__name__}: {exc}"
            ) from exc
    else:
        try:
            module = importlib.import_module(mod_name)
        except ImportError as exc:
            raise UsageError(f"--generator: cannot import module {mod_name!r} of {spec!r}: {exc}") from exc
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"--generator: {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if inspect.isclass(obj):
        return _call_factory(obj, spec)
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
            return _call_factory(obj, spec)
    return obj


def _call_factory(factory: object, spec: str) -> object:
    try:
        return factory()  # type: ignore[operator]
    except Exception as exc:
        raise UsageError(f"--generator: calling {spec!r} failed with {type(exc).__name__}: {exc}") from exc
