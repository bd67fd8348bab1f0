"""Loading of the compiled operator library and the native/reference switch.

The compiled library registers its operators under ``torch.ops.tangentlens``. When it is missing
(a source checkout that was never built, a platform without a compiler) ``import tangentlens`` still
works: every op falls back to its pure-PyTorch reference and one warning says so.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from collections.abc import Iterable, Iterator
from typing import Literal

import torch

Impl = Literal["auto", "native", "reference"]

_load_error: str | None = None


def _load() -> bool:
    global _load_error
    if os.environ.get("TANGENTLENS_DISABLE_NATIVE") == "1":
        _load_error = "disabled by TANGENTLENS_DISABLE_NATIVE=1"
        return False
    try:
        # Importing the module runs the operator registrations (TORCH_LIBRARY) of the compiled library.
        importlib.import_module("tangentlens._C")
    except ImportError as exc:  # never built, built against another torch, missing CUDA runtime, ...
        _load_error = f"tangentlens._C could not be imported ({exc})"
        return False
    return True


NATIVE_AVAILABLE: bool = _load()
if not NATIVE_AVAILABLE and os.environ.get("TANGENTLENS_QUIET_FALLBACK") != "1":
    warnings.warn(
        f"tangentlens: the compiled extension is not available ({_load_error}); "
        "all ops use their pure-PyTorch reference implementations (correct but slower). "
        "Reinstall with `pip install --no-build-isolation .` to build it.",
        RuntimeWarning,
        stacklevel=2,
    )


def native_build_info() -> dict[str, object]:
    """What the compiled library was built with (empty when it is not loaded)."""
    if not NATIVE_AVAILABLE:
        return {"available": False, "reason": _load_error}
    info = torch.ops.tangentlens.build_info()
    return {"available": True, "cuda": bool(info[0]), "cuda_version": int(info[1]), "openmp": bool(info[2])}


IMPLS = ("auto", "native", "reference")
IMPL_ENV = "TANGENTLENS_IMPL"
_default_impl: str = os.environ.get(IMPL_ENV, "auto") or "auto"


def _check_env_impl() -> None:
    """An unknown ``$TANGENTLENS_IMPL`` is an error at the first op that resolves it (not at import, so that
    ``import tangentlens`` and the CLI's ``--help`` still work), never silently ``auto``."""
    if _default_impl not in IMPLS:
        raise ValueError(
            f"${IMPL_ENV}: expected one of 'auto', 'native', 'reference' (or unset), got {_default_impl!r}"
        )


def set_default_impl(impl: Impl) -> None:
    """Process-wide default for ``impl="auto"`` (also settable with the TANGENTLENS_IMPL variable)."""
    global _default_impl
    if impl not in ("auto", "native", "reference"):
        raise ValueError(f"impl: expected 'auto', 'native' or 'reference', got {impl!r}")
    _default_impl = impl


@contextlib.contextmanager
def default_impl(impl: Impl) -> Iterator[None]:
    """Within the block, ops called with ``impl="auto"`` resolve as if the default were ``impl``."""
    global _default_impl
    if impl not in ("auto", "native", "reference"):
        raise ValueError(f"impl: expected 'auto', 'native' or 'reference', got {impl!r}")
    saved = _default_impl
    if impl != "auto":
        _default_impl = impl
    try:
        yield
    finally:
        _default_impl = saved


def under_forward_ad(tensors: Iterable[object]) -> bool:
    """True if a tensor is wrapped by a torch.func transform (jvp, vmap, grad) or has a forward-AD tangent.

    Native ops whose autograd is registered for the backward pass only would give a ZERO tangent there
    (PyTorch does not raise), so their wrappers use the reference ops in that case.
    """
    import torch.autograd.forward_ad as fwad

    if torch.compiler.is_compiling():  # traced graphs run the op as it is (dynamo cannot trace the checks)
        return False
    level = getattr(fwad, "_current_level", -1)
    for t in tensors:
        if not isinstance(t, torch.Tensor):
            continue
        if torch._C._functorch.is_functorch_wrapped_tensor(t):
            return True
        if level >= 0 and fwad.unpack_dual(t).tangent is not None:
            return True
    return False


def resolve_impl(
    impl: Impl, device: torch.device | str | None = None, *, backward_only: Iterable[object] = ()
) -> Literal["native", "reference"]:
    """Turn ``impl`` into the implementation that will run.

    ``auto`` picks the native kernel when the library is loaded and has a kernel for ``device``.
    Asking for ``native`` where it cannot run is an error, never a silent fallback. For ops whose native
    version has a backward rule only, pass their tensor inputs as ``backward_only``: under forward-mode AD
    ``auto`` then picks the reference, and ``native`` is an error.
    """
    if under_forward_ad(backward_only):
        if impl == "native" or (impl == "auto" and _default_impl == "native"):
            raise RuntimeError(
                "impl='native': this op has no forward-mode (JVP) rule in its native form; use impl='auto' "
                "or "
                "'reference' under torch.func.jvp / forward AD"
            )
        return "reference"
    if impl not in IMPLS:
        raise ValueError(f"impl: expected 'auto', 'native' or 'reference', got {impl!r}")
    if impl == "auto":
        _check_env_impl()
        impl = _default_impl  # type: ignore[assignment]
    dev = torch.device(device) if device is not None else torch.device("cpu")
    native_ok = NATIVE_AVAILABLE and (
        dev.type == "cpu" or (dev.type == "cuda" and native_build_info()["cuda"])
    )
    if impl == "reference":
        return "reference"
    if impl == "native":
        if not NATIVE_AVAILABLE:
            raise RuntimeError(
                f"impl='native' requested but the compiled extension is not available: {_load_error}"
            )
        if not native_ok:
            raise RuntimeError(f"impl='native' requested but the extension has no kernels for device {dev}")
        return "native"
    return "native" if native_ok else "reference"
