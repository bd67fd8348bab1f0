"""Fingerprints of what determines a run's numbers: a checkpoint refuses to resume with something else.

* an ``nn.Module``: its class, its parameters and buffers (names, shapes, dtypes and every byte of their
  values) and its plain attributes;
* a Python function (also a lambda, a nested function, a bound method, a ``functools.partial``): its
  code (bytecode, constants, names, nested code), defaults, closure values and the globals it reads, each
  fingerprinted in turn (tensors by value, modules as above);
* a callable object: its class's ``__call__`` (or ``forward``) and its attributes;
* numbers, strings, tensors, arrays, containers: by value.

What cannot be fingerprinted reliably (a C extension's callable object, an object without inspectable
state, a structure too large) makes the fingerprint *unverified*, with the reason: resuming a checkpoint
then needs an explicit ``resume_unverified=True``.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import types
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["Fingerprint", "fingerprint", "fingerprint_of", "run_identity"]

_MAX_ITEMS = 200_000  # values visited before giving up (a closure over a whole dataset)
_MAX_DEPTH = 12
_PRIMITIVES = (type(None), bool, int, float, complex, str, bytes)


@dataclass(frozen=True)
class Fingerprint:
    """``digest``: 16 hex digits; ``unverified``: None, or why the digest may miss a change."""

    digest: str
    unverified: str | None = None


class _Unverifiable(Exception):
    pass


class _Hasher:
    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.items = 0
        self.seen: dict[int, int] = {}  # id -> visit number: shared and cyclic references

    def text(self, s: str) -> None:
        self.h.update(s.encode("utf-8", "surrogatepass") + b"\0")

    def tensor(self, t: torch.Tensor) -> None:
        t = t.detach()
        self.text(f"tensor{tuple(t.shape)}{t.dtype}")
        if t.numel() == 0:
            return
        if t.is_sparse or t.layout != torch.strided or t.device.type == "meta":
            raise _Unverifiable(f"a {t.layout} / {t.device.type} tensor")
        # every byte (about 0.5 GB/s: 0.1 s for VGG16's 59 MB); a memoryview avoids a copy
        self.h.update(memoryview(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy()))

    def module(self, m: nn.Module, depth: int) -> None:
        self.text(f"module {type(m).__module__}.{type(m).__qualname__}")
        for name, t in sorted(m.state_dict(keep_vars=True).items()):
            self.text(name)
            if isinstance(t, torch.Tensor):
                self.tensor(t)
        for name, sub in m.named_modules():
            plain = {
                k: v
                for k, v in vars(sub).items()
                if not k.startswith("_") and k != "training" and isinstance(v, (*_PRIMITIVES, tuple))
            }
            for k in sorted(plain):
                self.text(f"{name}.{k}")
                self.value(plain[k], depth + 1)

    def code(self, co: types.CodeType, depth: int) -> None:
        self.text(f"code {co.co_name} {co.co_argcount} {co.co_kwonlyargcount}")
        self.h.update(co.co_code)
        self.text(repr(co.co_names))
        for c in co.co_consts:
            if isinstance(c, types.CodeType):
                self.code(c, depth + 1)
            else:
                self.value(c, depth + 1)

    def function(self, fn: types.FunctionType, depth: int) -> None:
        self.text(f"function {fn.__module__}.{fn.__qualname__}")
        self.code(fn.__code__, depth)
        self.value(fn.__defaults__, depth + 1)
        self.value(fn.__kwdefaults__, depth + 1)
        for cell in fn.__closure__ or ():
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell (a name assigned after the function was made)
                self.text("<empty cell>")
                continue
            self.value(contents, depth + 1)
        # the globals the code reads (its own module's functions, tensors, constants, ...)
        names: set[str] = set()
        stack = [fn.__code__]
        while stack:
            co = stack.pop()
            names.update(co.co_names)
            stack += [c for c in co.co_consts if isinstance(c, types.CodeType)]
        g = fn.__globals__
        for name in sorted(names):
            if name not in g or g[name] is fn:
                continue
            v = g[name]
            self.text(f"global {name}")
            if isinstance(v, types.FunctionType) and v.__module__ != fn.__module__:
                self.text(f"function-ref {v.__module__}.{v.__qualname__}")  # library code: by name
            else:
                self.value(v, depth + 1)

    def value(self, obj: Any, depth: int = 0) -> None:
        self.items += 1
        if self.items > _MAX_ITEMS:
            raise _Unverifiable(f"more than {_MAX_ITEMS} values reachable from it")
        if depth > _MAX_DEPTH:
            raise _Unverifiable(f"objects nested more than {_MAX_DEPTH} levels deep")
        if isinstance(obj, _PRIMITIVES):
            self.text(f"{type(obj).__name__}:{obj!r}")
            return
        key = id(obj)
        if key in self.seen:  # shared or cyclic: its position is enough
            self.text(f"ref {self.seen[key]}")
            return
        self.seen[key] = len(self.seen)
        if isinstance(obj, torch.Tensor):
            self.tensor(obj)
        elif isinstance(obj, np.ndarray):
            if obj.dtype == object:
                self.value(obj.tolist(), depth + 1)
            else:
                self.text(f"ndarray{obj.shape}{obj.dtype}")
                self.h.update(np.ascontiguousarray(obj).tobytes())
        elif isinstance(obj, (np.generic, torch.dtype, torch.device, torch.Size)):
            self.text(f"{type(obj).__name__}:{obj!r}")
        elif isinstance(obj, nn.Module):
            self.module(obj, depth)
        elif isinstance(obj, (list, tuple, set, frozenset)):
            self.text(f"{type(obj).__name__}[{len(obj)}]")
            items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
            for v in items:
                self.value(v, depth + 1)
        elif isinstance(obj, dict):
            self.text(f"dict[{len(obj)}]")
            for k in sorted(obj, key=repr):
                self.value(k, depth + 1)
                self.value(obj[k], depth + 1)
        elif isinstance(obj, types.ModuleType):
            self.text(f"module-ref {obj.__name__}")
        elif isinstance(obj, type):
            self.text(f"class {obj.__module__}.{obj.__qualname__}")
        elif isinstance(obj, (types.BuiltinFunctionType, types.BuiltinMethodType)):
            owner = getattr(obj, "__self__", None)
            if owner is not None and not isinstance(owner, types.ModuleType):
                self.value(owner, depth + 1)  # a builtin method of an object: the object's state counts
            self.text(f"builtin {getattr(obj, '__module__', None)}.{obj.__qualname__}")
        elif isinstance(obj, functools.partial):
            self.text("partial")
            self.value(obj.func, depth + 1)
            self.value(obj.args, depth + 1)
            self.value(obj.keywords, depth + 1)
        elif inspect.ismethod(obj):
            self.value(obj.__self__, depth + 1)
            self.value(obj.__func__, depth + 1)
        elif isinstance(obj, types.FunctionType):
            self.function(obj, depth)
        elif isinstance(obj, types.CodeType):
            self.code(obj, depth)
        elif type(obj).__module__ in ("torch", "builtins") or type(obj).__module__.startswith("torch._"):
            # torch's own callables (ops, OpOverloadPackets, ...): fixed code, identified by name
            name = (
                getattr(obj, "__qualname__", None)
                or getattr(obj, "__name__", None)
                or getattr(obj, "_qualified_op_name", None)
            )
            if name is None:
                raise _Unverifiable(f"a {type(obj).__module__}.{type(obj).__qualname__} object")
            self.text(f"torch-callable {type(obj).__qualname__} {name}")
        else:
            cls = type(obj)
            state = getattr(obj, "__dict__", None)
            slots = [s for c in cls.__mro__ for s in getattr(c, "__slots__", ())]
            methods = {
                attr: fn
                for attr in ("__call__", "forward", "decode", "sample")
                if isinstance(fn := inspect.getattr_static(cls, attr, None), types.FunctionType)
            }
            if state is None and not slots and not methods:
                raise _Unverifiable(f"a {cls.__module__}.{cls.__qualname__} object (no inspectable state)")
            self.text(f"object {cls.__module__}.{cls.__qualname__}")
            for attr, fn in methods.items():
                self.text(attr)
                self.function(fn, depth + 1)
            if state is not None:
                self.value(dict(state), depth + 1)
            for s in slots:
                if hasattr(obj, s):
                    self.text(f"slot {s}")
                    self.value(getattr(obj, s), depth + 1)


def fingerprint_of(obj: object) -> Fingerprint:
    """The :class:`Fingerprint` of ``obj`` (module docstring)."""
    h = _Hasher()
    try:
        h.value(obj)
    except _Unverifiable as why:
        h2 = hashlib.sha256(f"{type(obj).__module__}.{type(obj).__qualname__}".encode())
        return Fingerprint(h2.hexdigest()[:16], f"cannot fingerprint {type(obj).__qualname__}: {why}")
    except RecursionError:
        h2 = hashlib.sha256(f"{type(obj).__module__}.{type(obj).__qualname__}".encode())
        return Fingerprint(
            h2.hexdigest()[:16], f"cannot fingerprint {type(obj).__qualname__}: nested too deeply"
        )
    return Fingerprint(h.h.hexdigest()[:16])


def fingerprint(obj: object) -> str:
    """A short hash of what determines ``obj``'s numbers (:func:`fingerprint_of`'s digest)."""
    return fingerprint_of(obj).digest


def run_identity(adapter: Any, distance: object) -> tuple[dict[str, Any], list[str]]:
    """What identifies a streamed run's generator and distance in its checkpoint configuration: the
    generator's fingerprint, kind, z_dim and output range, the distance's fingerprint (or its name), and
    why any of the fingerprints may miss a change (resuming then needs ``resume_unverified=True``)."""
    gen_fp = fingerprint_of(adapter.module)
    dist_fp = fingerprint_of(distance) if distance is not None and not isinstance(distance, str) else None
    config = {
        "generator": gen_fp.digest,
        "generator_kind": adapter.kind,
        "z_dim": adapter.z_dim,
        "output_range": adapter.output_range,
        "distance": dist_fp.digest if dist_fp is not None else str(distance),
    }
    unverified = [
        f"{what}: {fp.unverified}"
        for what, fp in (("generator", gen_fp), ("distance", dist_fp))
        if fp is not None and fp.unverified is not None
    ]
    return config, unverified
