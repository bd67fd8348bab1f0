"""Reading NVIDIA's network pickles without running code from them (stylegan2-ada-pytorch, stylegan3).

A restricted unpickler resolves only an allow-list of globals and records NVIDIA's persistent objects as
inert stand-ins (class name + ``__dict__``); the Python source pickled with them (``module_src``) is never
executed, compiled or imported (it is parsed, to refuse files whose source would run code at import).
Tensors are rebuilt by torch's functions behind checked wrappers; numpy arrays, scalars and dtypes are
rebuilt as data (numeric dtypes only, from their bytes) without calling numpy's pickle reducers.

How NVIDIA's files are laid out (``torch_utils/persistence.py``, torch's and numpy's ``__reduce_ex__``): a
persistent network pickles as ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with ``meta =
dict(type='class', version=6, module_src=<source>, class_name=<name>, state=<the module's __dict__>)``;
the state holds ``_parameters`` / ``_buffers`` / ``_modules`` OrderedDicts, ``_init_args`` /
``_init_kwargs`` and plain attributes (floats, numpy float64 scalars, and in StyleGAN3 small numpy arrays
such as ``size = np.broadcast_to(...)``). Parameters pickle as ``torch._utils._rebuild_parameter(tensor,
requires_grad, hooks)``, tensors as ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
requires_grad, hooks[, metadata])``, storages as ``torch.storage._load_from_bytes(<torch.save blob>)``,
numpy arrays as ``numpy._core.multiarray._reconstruct(numpy.ndarray, (0,), b'b')`` + BUILD ``(1, shape,
dtype, is_fortran, raw bytes)`` (protocol 5: ``numpy._core.numeric._frombuffer(buffer, dtype, shape,
order)``), numpy scalars as ``numpy._core.multiarray.scalar(dtype, bytes)``, dtypes as ``numpy.dtype(code,
False, True)`` + BUILD. See docs/generators.md.
"""

from __future__ import annotations

import _compat_pickle
import ast
import hashlib
import io
import os
import pickle
import pickletools
import types
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["NvidiaPickleError", "PickleFamily", "identify_family", "read_pickle"]

PathLike = str | os.PathLike


class NvidiaPickleError(pickle.UnpicklingError, ValueError):
    """The file is not an NVIDIA network pickle we can read without running code from it."""


# ---------------------------------------------------------------------------------------------------------
# Which code base wrote a pickle: read from its opcodes (nothing is unpickled)


@dataclass(frozen=True)
class PickleFamily:
    name: str  # short name, e.g. "StyleGAN3"
    description: str  # what the file is, for messages
    supported: bool


_FAMILIES = {
    "stylegan3": PickleFamily(
        "StyleGAN3", "a StyleGAN3 pickle (NVlabs/stylegan3, training/networks_stylegan3.py)", True
    ),
    "stylegan2": PickleFamily(
        "StyleGAN2",
        "a StyleGAN2 pickle (NVlabs/stylegan2-ada-pytorch training/networks.py or stylegan3's "
        "training/networks_stylegan2.py)",
        True,
    ),
    "eg3d": PickleFamily("EG3D", "an EG3D pickle (NVlabs/eg3d TriPlaneGenerator)", False),
    "stylegan_xl": PickleFamily("StyleGAN-XL", "a StyleGAN-XL pickle (autonomousvision/stylegan-xl)", False),
    "tensorflow": PickleFamily(
        "TensorFlow StyleGAN",
        "a legacy TensorFlow StyleGAN/StyleGAN2 pickle (dnnlib.tflib; convert it with NVIDIA's legacy.py "
        "first)",
        False,
    ),
}
# class names (exact pickled strings) that identify a family, checked in this order
_MARKERS = (
    ("eg3d", ("TriPlaneGenerator",)),
    ("stylegan_xl", ("SuperresGenerator", "ProjectedDiscriminator")),
    ("stylegan3", ("SynthesisInput",)),
    ("stylegan2", ("SynthesisBlock",)),
)


def identify_family(path: PathLike, max_bytes: int = 1 << 30) -> PickleFamily | None:
    """The code base that wrote the pickle at ``path``, from its global names and the class-name strings
    NVIDIA's persistence records (``pickletools.genops``: the opcodes are read, nothing is built or run);
    None when not recognised or unreadable."""
    strings: set[str] = set()
    modules: set[str] = set()
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > max_bytes:
                return None
            for op, arg, _ in pickletools.genops(f):
                if isinstance(arg, str) and len(arg) < 64:
                    strings.add(arg)
                    if op.name in ("GLOBAL", "INST"):
                        modules.add(arg.split(" ", 1)[0])
    except Exception:  # a damaged or non-pickle file: the loader reports it
        pass
    if any(m.startswith("dnnlib.tflib") for m in modules | strings):
        return _FAMILIES["tensorflow"]
    for key, markers in _MARKERS:
        if any(m in strings for m in markers):
            return _FAMILIES[key]
    return None


def _describe(family: PickleFamily | None) -> str:
    return f"{family.description}: " if family is not None else ""


# ---------------------------------------------------------------------------------------------------------
# Inert stand-ins for the objects a pickle reconstructs


class _PickledModule:
    """A network recorded from the pickle: its class name and ``__dict__``; nothing of it is executed."""

    kind = "object"
    class_name = "?"
    state: Mapping[str, Any] = types.MappingProxyType({})  # until BUILD sets it (NEWOBJ skips __init__)

    def __init__(self, class_name: str | None = None, state: dict[str, Any] | None = None) -> None:
        if class_name is not None:
            self.class_name = class_name
        self.state = state if state is not None else {}

    def __setstate__(self, state: object) -> None:  # BUILD of a plain torch.nn module
        if not isinstance(state, dict):
            raise NvidiaPickleError(
                f"{self.class_name}: expected a dict as its state, got {type(state).__name__}"
            )
        self.state = state

    def __repr__(self) -> str:
        return f"<pickled {self.kind} {self.class_name}>"


class _PersistentModule(_PickledModule):
    kind = "torch_utils.persistence object"


class _TorchModule(_PickledModule):
    kind = "torch.nn module"


_TORCH_MODULE_STANDINS: dict[str, type[_TorchModule]] = {}


def _torch_module_standin(qualname: str) -> type[_TorchModule]:
    # A class per torch.nn class: pickle's NEWOBJ needs a class to call __new__ on.
    if qualname not in _TORCH_MODULE_STANDINS:
        _TORCH_MODULE_STANDINS[qualname] = type(
            "PickledTorchModule", (_TorchModule,), {"class_name": qualname.rsplit(".", 1)[-1]}
        )
    return _TORCH_MODULE_STANDINS[qualname]


class _EasyDict(dict):
    """``dnnlib.util.EasyDict`` read as a plain dict (it is one; only attribute access is lost)."""

    def __setstate__(self, state: object) -> None:
        if state:  # an EasyDict has no instance attributes; anything else is not NVIDIA's EasyDict
            raise NvidiaPickleError("dnnlib.util.EasyDict: unexpected instance state in the pickle")


# ---------------------------------------------------------------------------------------------------------
# The pickled source: parsed (never executed) to refuse files whose source runs code at import

_MAX_SOURCE_CHARS = 4 << 20
_DECORATORS = {
    "persistence.persistent_class",
    "misc.profiled_function",
    "staticmethod",
    "classmethod",
    "property",
}
# expressions evaluated when a module is imported (decorators, bases, defaults, annotations, assigned
# values) may not contain these: calling, assigning or running a generator is running code
_RUNS_CODE = (ast.Call, ast.NamedExpr, ast.Await, ast.Yield, ast.YieldFrom, ast.ListComp, ast.SetComp,
              ast.DictComp, ast.GeneratorExp)  # fmt: skip


def _import_time_exprs(node: ast.AST) -> list[ast.expr]:
    """The expressions that ``def`` / ``class`` / ``x = ...`` statements evaluate when executed."""
    out: list[ast.expr] = []
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        a = node.args
        out += [*a.defaults, *(d for d in a.kw_defaults if d is not None)]
        out += [x.annotation for x in (*a.posonlyargs, *a.args, *a.kwonlyargs) if x.annotation is not None]
        out += [x.annotation for x in (a.vararg, a.kwarg) if x is not None and x.annotation is not None]
        if node.returns is not None:
            out.append(node.returns)
    elif isinstance(node, ast.ClassDef):
        out += [*node.bases, *(k.value for k in node.keywords)]
    elif isinstance(node, ast.Assign | ast.AnnAssign):
        out += [node.value] if node.value is not None else []
    return out


def _source_problem(body: list[ast.stmt], where: str) -> str | None:
    """What in ``body`` (a module's or a class's statements) would run code when the source is imported."""
    for node in body:
        line = f"{where} line {getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring
        if isinstance(node, ast.Import | ast.ImportFrom | ast.Pass):
            continue
        if not isinstance(
            node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Assign | ast.AnnAssign
        ):
            return f"{line}: a top-level {type(node).__name__} statement"
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if not all(isinstance(t, ast.Name) for t in targets):
                return f"{line}: an assignment to {ast.unparse(targets[0])[:60]}"
        if isinstance(node, ast.ClassDef) and node.keywords:
            return (
                f"{line}: class {node.name} with {ast.unparse(node.keywords[0])[:60]} (a metaclass runs code)"
            )
        for deco in getattr(node, "decorator_list", []):
            if ast.unparse(deco) not in _DECORATORS:
                return f"{line}: the decorator @{ast.unparse(deco)[:60]}"
        for expr in _import_time_exprs(node):
            bad = next((n for n in ast.walk(expr) if isinstance(n, _RUNS_CODE)), None)
            if bad is not None:
                return f"{line}: {ast.unparse(bad)[:60]!r} is evaluated at import"
        if isinstance(node, ast.ClassDef):
            problem = _source_problem(node.body, f"{where} class {node.name}")
            if problem is not None:
                return problem
    return None


_CHECKED_SOURCES: dict[str, str | None] = {}


def check_module_source(src: object, class_name: str) -> None:
    """Refuse a pickled ``module_src`` that would run code when imported (code appended to NVIDIA's source,
    a call in a decorator, a default value or a class body). The source is parsed with ``ast``, never
    compiled to bytecode or executed."""
    if not isinstance(src, str) or len(src) > _MAX_SOURCE_CHARS:
        got = type(src).__name__ if not isinstance(src, str) else f"{len(src)} characters"
        raise NvidiaPickleError(
            f"persistent object {class_name}: expected its module source as a str, got {got}"
        )
    key = hashlib.sha256(src.encode("utf-8", "surrogatepass")).hexdigest()
    if key not in _CHECKED_SOURCES:
        try:
            tree = ast.parse(src)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            _CHECKED_SOURCES[key] = f"it does not parse as Python ({type(exc).__name__})"
        else:
            _CHECKED_SOURCES[key] = _source_problem(tree.body, "module_src")
    problem = _CHECKED_SOURCES[key]
    if problem is not None:
        raise NvidiaPickleError(
            f"persistent object {class_name}: the source pickled with it would run code when imported "
            f"({problem}); NVIDIA's sources only define classes and functions, so the file was altered"
        )


def _reconstruct_persistent_obj(meta: object) -> _PersistentModule:
    # Stands in for torch_utils.persistence._reconstruct_persistent_obj, which exec()s meta['module_src'].
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise NvidiaPickleError(
            f"persistent object: expected meta dict(type='class', ...), got {meta!r:.200}"
        )
    class_name, state = meta.get("class_name"), meta.get("state")
    if not isinstance(class_name, str) or not isinstance(state, dict):
        raise NvidiaPickleError(
            f"persistent object: expected a str class_name and a dict state, got {type(class_name).__name__} "
            f"and {type(state).__name__}"
        )
    check_module_source(meta.get("module_src"), class_name)  # parsed only
    return _PersistentModule(class_name, state)


def _reconstructor(cls: object, base: object, state: object) -> object:
    # copyreg._reconstructor (pickle protocols 0 and 1): only for our stand-in classes.
    if isinstance(cls, type) and issubclass(cls, _PickledModule) and base is object and state is None:
        return cls.__new__(cls)
    if cls is _EasyDict and base is dict:
        return _EasyDict(state or {})
    raise NvidiaPickleError(f"copyreg._reconstructor: refused for {cls!r} (base {base!r})")


# ---------------------------------------------------------------------------------------------------------
# torch tensors and parameters


def _load_storage(data: object) -> torch.storage.TypedStorage:
    # torch.storage._load_from_bytes runs torch.load(weights_only=False); the blob is a legacy torch.save
    # file of one storage, which the weights-only unpickler reads. map_location: files written on GPUs.
    if not isinstance(data, bytes | bytearray):
        raise NvidiaPickleError(f"torch.storage._load_from_bytes: expected bytes, got {type(data).__name__}")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated")
            storage = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    except Exception as exc:  # the weights-only unpickler refused it, or the blob is damaged
        raise NvidiaPickleError(
            f"torch.storage._load_from_bytes: not a loadable storage blob ({exc})"
        ) from exc
    if not isinstance(storage, torch.storage.TypedStorage):
        raise NvidiaPickleError(
            f"torch.storage._load_from_bytes: expected a TypedStorage, got {type(storage).__name__}"
        )
    return storage


def _int_tuple(x: object, what: str) -> tuple[int, ...]:
    if not isinstance(x, tuple | list) or not all(isinstance(v, int) for v in x):
        raise NvidiaPickleError(f"torch._utils._rebuild_tensor_v2: {what}: expected ints, got {x!r:.100}")
    return tuple(x)


def _rebuild_tensor_v2(
    storage: object,
    storage_offset: object,
    size: object,
    stride: object,
    requires_grad: object,
    backward_hooks: object,
    metadata: object = None,
) -> torch.Tensor:
    if not isinstance(storage, torch.storage.TypedStorage) or not isinstance(storage_offset, int):
        raise NvidiaPickleError(
            "torch._utils._rebuild_tensor_v2: expected (TypedStorage, int offset, ...), got "
            f"({type(storage).__name__}, {type(storage_offset).__name__}, ...)"
        )
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, bool) for v in metadata.values())
    ):
        raise NvidiaPickleError(f"torch._utils._rebuild_tensor_v2: unexpected metadata {metadata!r:.100}")
    # The file's hooks are not used (torch pickles an empty OrderedDict; anything else is not ours to keep).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated")
        return torch._utils._rebuild_tensor_v2(
            storage,
            storage_offset,
            _int_tuple(size, "size"),
            _int_tuple(stride, "stride"),
            bool(requires_grad),
            OrderedDict(),
            metadata,
        )


def _rebuild_parameter(data: object, requires_grad: object, backward_hooks: object) -> nn.Parameter:
    if not isinstance(data, torch.Tensor):
        raise NvidiaPickleError(
            f"torch._utils._rebuild_parameter: expected a tensor, got {type(data).__name__}"
        )
    return nn.Parameter(data, requires_grad=bool(requires_grad))


def _rebuild_parameter_with_state(
    data: object, requires_grad: object, backward_hooks: object, state: object
) -> nn.Parameter:
    # The state holds Python attributes set on the Parameter object; a state dict does not carry them.
    return _rebuild_parameter(data, requires_grad, backward_hooks)


# ---------------------------------------------------------------------------------------------------------
# numpy: numeric dtypes, scalars and arrays rebuilt from bytes

_MAX_ARRAY_BYTES = 1 << 26  # NVIDIA pickles sizes and rates, not data, as numpy arrays


class _NumpyDType:
    """``numpy.dtype(spec, align, copy)`` for plain numeric dtypes only (bool, ints, floats, complex)."""

    def __init__(self, spec: object, align: object = False, copy: object = True) -> None:
        dtype = np.dtype(spec) if isinstance(spec, str) and spec.isalnum() and len(spec) <= 4 else None
        if dtype is None or dtype.kind not in "biufc":
            raise NvidiaPickleError(f"numpy.dtype: only numeric dtypes are read, got {spec!r:.50}")
        self.dtype = dtype

    def __setstate__(self, state: object) -> None:
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        if not isinstance(state, tuple) or len(state) < 2 or any(v is not None for v in state[2:5]):
            raise NvidiaPickleError(
                f"numpy.dtype: only plain numeric dtypes are read, got state {state!r:.80}"
            )
        if state[1] in ("<", ">", "="):
            self.dtype = self.dtype.newbyteorder(state[1])


def _numpy_scalar(dtype: object, data: object = None) -> int | float | complex | bool:
    if not isinstance(dtype, _NumpyDType) or not isinstance(data, bytes) or len(data) != dtype.dtype.itemsize:
        raise NvidiaPickleError("numpy scalar: expected (numeric dtype, bytes of its size)")
    return np.frombuffer(data, dtype=dtype.dtype, count=1)[0].item()


def _array_from_bytes(data: object, dtype: object, shape: object, fortran: bool, what: str) -> np.ndarray:
    """A fresh, writable numpy array of a numeric dtype from its raw bytes; everything checked."""
    if not isinstance(dtype, _NumpyDType):
        raise NvidiaPickleError(f"{what}: expected a numeric numpy dtype, got {type(dtype).__name__}")
    if (
        not isinstance(shape, tuple)
        or not all(isinstance(v, int) and 0 <= v for v in shape)
        or len(shape) > 32
    ):
        raise NvidiaPickleError(f"{what}: expected a shape of non-negative ints, got {shape!r:.80}")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if not isinstance(data, bytes | bytearray) or count * dtype.dtype.itemsize > _MAX_ARRAY_BYTES:
        raise NvidiaPickleError(f"{what}: expected the array's bytes (at most {_MAX_ARRAY_BYTES})")
    if len(data) != count * dtype.dtype.itemsize:
        raise NvidiaPickleError(
            f"{what}: {len(data)} bytes for shape {shape} of {dtype.dtype} "
            f"({count * dtype.dtype.itemsize} expected)"
        )
    flat = np.frombuffer(bytes(data), dtype=dtype.dtype, count=count)
    return flat.reshape(shape, order="F" if fortran else "C").copy()


class _NumpyNdarrayClass:
    """What ``numpy.ndarray`` resolves to: only a marker for ``_reconstruct``."""


_NDARRAY = _NumpyNdarrayClass()


class _PickledArray:
    """``numpy._core.multiarray._reconstruct(ndarray, (0,), b'b')``: an empty array that BUILD fills with
    ``(version, shape, dtype, is_fortran, raw bytes)``; read it with :func:`plain` (``.array``)."""

    array: np.ndarray | None = None

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, tuple) or len(state) != 5 or state[0] != 1 or not isinstance(state[3], bool):
            raise NvidiaPickleError(f"numpy array: unexpected state {state!r:.80}")
        _, shape, dtype, fortran, data = state
        self.array = _array_from_bytes(data, dtype, shape, fortran, "numpy array")


def _numpy_reconstruct(cls: object, shape: object, typecode: object) -> _PickledArray:
    if cls is not _NDARRAY or shape != (0,) or typecode != b"b":
        raise NvidiaPickleError("numpy _reconstruct: only (numpy.ndarray, (0,), b'b') is read")
    return _PickledArray()


def _numpy_frombuffer(buffer: object, dtype: object, shape: object, order: object) -> np.ndarray:
    # numpy._core.numeric._frombuffer (protocol 5, contiguous arrays); the buffer comes in-band as bytes.
    if order not in ("C", "F"):
        raise NvidiaPickleError(f"numpy _frombuffer: expected order 'C' or 'F', got {order!r:.20}")
    return _array_from_bytes(buffer, dtype, shape, order == "F", "numpy _frombuffer")


def plain(x: Any) -> Any:
    """EasyDicts to dicts and pickled numpy arrays to arrays, recursively (values as the code used them)."""
    if isinstance(x, _PickledArray):
        if x.array is None:
            raise NvidiaPickleError("numpy array: no state was given to it in the pickle")
        return x.array
    if isinstance(x, Mapping):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [plain(v) for v in x]
    if isinstance(x, tuple):
        return tuple(plain(v) for v in x)
    return x


# ---------------------------------------------------------------------------------------------------------
# Protocol helpers and the allow-list


def _bytes(*args: object) -> bytes:
    # builtins.bytes: protocol <= 2 pickles b'' as bytes(); nothing else (bytes(n) would allocate n).
    if args == () or (len(args) == 1 and isinstance(args[0], bytes)):
        return bytes(*args)
    raise NvidiaPickleError("builtins.bytes: only bytes() is allowed")


def _codecs_encode(text: object, encoding: object = "utf-8") -> bytes:
    # Protocol <= 2 pickles bytes as _codecs.encode(str, 'latin1'); no other codec is needed.
    if isinstance(text, str) and encoding == "latin1":
        return text.encode("latin1")
    raise NvidiaPickleError(f"_codecs.encode: only (str, 'latin1') is allowed, got encoding {encoding!r:.30}")


def _bytearray(*args: object) -> bytearray:
    # builtins.bytearray: protocol <= 4 pickles a bytearray as bytearray(bytes); nothing else.
    if len(args) == 1 and isinstance(args[0], bytes):
        return bytearray(args[0])
    raise NvidiaPickleError("builtins.bytearray: only bytearray(bytes) is allowed")


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "dict"): dict,  # the base class argument of copyreg._reconstructor (protocol <= 1)
    ("builtins", "object"): object,  # same
    ("builtins", "bytes"): _bytes,
    ("builtins", "bytearray"): _bytearray,
    ("_codecs", "encode"): _codecs_encode,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
    ("numpy", "dtype"): _NumpyDType,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,  # numpy 1.x
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,  # numpy 2.x
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numpy_frombuffer,
}


def _fresh(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        return fn(*args)

    return call


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the allow-listed globals above (to our own functions and stand-ins), never imports."""

    def __init__(self, file: Any, source: str, family: PickleFamily | None = None) -> None:
        super().__init__(file)
        self._source = source
        self._family = family
        # BUILD can set attributes on any object the stream holds, globals included: functions get a
        # fresh wrapper per load so a file cannot alter ours (e.g. their __defaults__) for later loads.
        # (Our classes define __setstate__, which BUILD on the class itself calls unbound: a TypeError.)
        self._globals = {
            k: _fresh(v) if isinstance(v, types.FunctionType) else v for k, v in _ALLOWED_GLOBALS.items()
        }

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names, which Python 3 writes in protocols <= 2 (copy_reg, __builtin__).
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        found = self._globals.get((module, name))
        if found is not None:
            return found
        if module.startswith("torch.nn.modules."):
            # A plain torch.nn module (e.g. an nn.Linear inside a network): recorded by name, never built.
            cls = getattr(torch.nn, name, None)
            if isinstance(cls, type) and issubclass(cls, nn.Module) and cls.__module__ == module:
                return _torch_module_standin(f"{module}.{name}")
        raise NvidiaPickleError(
            f"{self._source}: {_describe(self._family)}refused global {module}.{name}: it is not one of the "
            "classes or functions NVIDIA's StyleGAN2/StyleGAN3 pickles use, so the file is not such a pickle "
            "or would need code execution to load. If you trust the file, load_nvidia_pkl(..., "
            "allow_unsafe_pickle=True) unpickles it with NVIDIA's code (which runs code from the file)."
        )

    def persistent_load(self, pid: Any) -> Any:
        raise NvidiaPickleError(
            f"{self._source}: refused persistent id {pid!r:.80} (not used by NVIDIA's pickles)"
        )


class _UnsafeUnpickler(pickle.Unpickler):
    """pickle's own resolution (imports and runs code), except that storages load onto the CPU."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return _load_storage
        return super().find_class(module, name)


def read_pickle(path: Path, family: PickleFamily | None, *, allow_unsafe_pickle: bool = False) -> Any:
    """The unpickled object of ``path``: by the restricted unpickler (stand-ins, nothing run), or with
    ``allow_unsafe_pickle`` by pickle's own (imports NVIDIA's code and runs the file's)."""
    with open(path, "rb") as f:
        if allow_unsafe_pickle:
            try:
                return _UnsafeUnpickler(f).load()
            except ModuleNotFoundError as exc:
                raise ModuleNotFoundError(
                    f"{path}: allow_unsafe_pickle=True unpickles with NVIDIA's code, which is not importable "
                    f"({exc}); put the stylegan2-ada-pytorch or stylegan3 checkout (its dnnlib and "
                    "torch_utils) on sys.path, or use the safe loader (allow_unsafe_pickle=False)"
                ) from exc
        try:
            return _RestrictedUnpickler(f, str(path), family).load()
        except NvidiaPickleError as exc:
            if str(exc).startswith(str(path)):
                raise
            raise NvidiaPickleError(f"{path}: {_describe(family)}{exc}") from exc
        except Exception as exc:  # truncated or damaged file, wrong arguments to an allowed function
            raise NvidiaPickleError(
                f"{path}: {_describe(family)}not a readable NVIDIA network pickle "
                f"({type(exc).__name__}: {exc})"
            ) from exc


# ---------------------------------------------------------------------------------------------------------
# Reading the recorded networks


def pickled_state_dict(obj: _PickledModule, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict a live module would give: parameters, persistent buffers, children, by name."""
    state = obj.state
    out: dict[str, torch.Tensor] = {}
    skip = state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        entries = state.get(group) or {}
        if not isinstance(entries, Mapping):
            raise NvidiaPickleError(
                f"{prefix or 'network'}: {group}: expected a dict, got {type(entries).__name__}"
            )
        for name, t in entries.items():
            if t is None or (group == "_buffers" and name in skip):
                continue
            if not isinstance(t, torch.Tensor):
                raise NvidiaPickleError(f"{prefix}{name}: expected a tensor, got {type(t).__name__}")
            out[prefix + name] = t.detach()
    for name, child in modules_of(obj).items():
        if child is not None:
            out.update(pickled_state_dict(child, f"{prefix}{name}."))
    return out


def modules_of(obj: _PickledModule) -> Mapping[str, Any]:
    modules = obj.state.get("_modules") or {}
    if not isinstance(modules, Mapping) or not all(
        m is None or isinstance(m, _PickledModule) for m in modules.values()
    ):
        raise NvidiaPickleError(
            f"{obj.class_name}: _modules: expected a dict of networks, got {modules!r:.100}"
        )
    return modules


def pickled_children(obj: Any) -> dict[str, tuple[str, Any]]:
    """``{name: (class name, child)}`` of a recorded network."""
    if not isinstance(obj, _PickledModule):
        return {}
    return {n: (m.class_name, m) for n, m in modules_of(obj).items() if m is not None}


def is_pickled_module(obj: object) -> bool:
    return isinstance(obj, _PickledModule)
