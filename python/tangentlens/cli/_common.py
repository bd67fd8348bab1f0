"""Pieces shared by the sub-commands."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from pathlib import Path


def load_generator(spec: str, *, key: str = "G_ema", allow_unsafe_pickle: bool = False) -> object:
    """A generator from ``file.pkl`` (NVIDIA StyleGAN2 / StyleGAN3, read without running its code unless
    ``allow_unsafe_pickle``) or ``module:attr`` / ``path/file.py:attr``: a class or a function without
    required arguments is called (a factory), anything else is used as it is."""
    if spec.endswith(".pkl"):
        from tangentlens.generators import load_nvidia_pkl

        return load_nvidia_pkl(spec, key=key, allow_unsafe_pickle=allow_unsafe_pickle)
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
