"""NVIDIA StyleGAN2(-ADA) generators as :class:`~tangentlens.models.StyleGAN2Generator`.

* :func:`load_stylegan2_pkl` reads a stylegan2-ada-pytorch ``.pkl`` (``{'G', 'D', 'G_ema',
  'training_set_kwargs', 'augment_pipe'}``) **without running code from the file**: a restricted
  unpickler resolves only an allow-list of globals and records NVIDIA's persistent objects as inert
  stand-ins (class name + ``__dict__``); the Python source pickled with them (``module_src``) is never
  executed, compiled or imported. The tensors and constructor arguments found in the stand-ins build our
  generator, whose parameter names are NVIDIA's.
* :func:`convert_nvidia_generator` does the same for a live NVIDIA ``Generator`` object.
* :func:`nvidia_reference_ops` switches NVIDIA's ``torch_utils.ops`` to their pure-PyTorch reference paths
  (their CUDA kernels have no forward-mode AD rules) while an NVIDIA network itself is evaluated.

How NVIDIA's files are laid out (``torch_utils/persistence.py``, torch's ``__reduce_ex__``): a persistent
network pickles as ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with ``meta = dict(
type='class', version=6, module_src=<source>, class_name=<name>, state=<the module's __dict__>)``; the
state holds ``_parameters`` / ``_buffers`` / ``_modules`` OrderedDicts, ``_init_args`` / ``_init_kwargs``
(``dnnlib.util.EasyDict``) and plain attributes (floats, some numpy float64 scalars). Parameters pickle as
``torch._utils._rebuild_parameter(tensor, requires_grad, hooks)``, tensors as
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`` and
storages as ``torch.storage._load_from_bytes(<legacy torch.save blob>)``. See docs/generators.md.
"""

from __future__ import annotations

import _compat_pickle
import contextlib
import io
import numbers
import os
import pickle
import sys
import types
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tangentlens._extension import Impl
from tangentlens.models.stylegan2 import ARCHITECTURES, StyleGAN2Generator

__all__ = [
    "NvidiaPickleError",
    "UnsupportedGeneratorError",
    "convert_nvidia_generator",
    "load_stylegan2_pkl",
    "load_stylegan2_state_dict",
    "nvidia_reference_ops",
]

PathLike = str | os.PathLike
DeviceLike = str | torch.device | None

# The keys of a pickle written by stylegan2-ada-pytorch's training loop (only the generators are needed).
PKL_KEYS = ("G", "D", "G_ema", "training_set_kwargs", "augment_pipe")


class NvidiaPickleError(pickle.UnpicklingError, ValueError):
    """The file is not a StyleGAN2-ADA pickle we can read without running code from it."""


class UnsupportedGeneratorError(NotImplementedError):
    """The network is not one our StyleGAN2Generator reproduces (other class, architecture or arguments)."""


# ---------------------------------------------------------------------------------------------------------
# Inert stand-ins for the objects a StyleGAN2-ADA pickle reconstructs


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
    return _PersistentModule(class_name, state)  # meta['module_src'] is dropped here, unread


def _reconstructor(cls: object, base: object, state: object) -> object:
    # copyreg._reconstructor (pickle protocols 0 and 1): only for our stand-in classes.
    if isinstance(cls, type) and issubclass(cls, _PickledModule) and base is object and state is None:
        return cls.__new__(cls)
    if cls is _EasyDict and base is dict:
        return _EasyDict(state or {})
    raise NvidiaPickleError(f"copyreg._reconstructor: refused for {cls!r} (base {base!r})")


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


class _NumpyDType:
    """``numpy.dtype(spec, align, copy)`` for plain numeric dtypes only (NVIDIA's np.float64 gains)."""

    def __init__(self, spec: object, align: object = False, copy: object = True) -> None:
        dtype = np.dtype(spec) if isinstance(spec, str) and spec.isalnum() else None
        if dtype is None or dtype.kind not in "biufc":
            raise NvidiaPickleError(f"numpy.dtype: only numeric dtypes are read, got {spec!r:.50}")
        self.dtype = dtype

    def __setstate__(self, state: object) -> None:
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "="):
            self.dtype = self.dtype.newbyteorder(state[1])


def _numpy_scalar(dtype: object, data: object = None) -> int | float | complex | bool:
    if not isinstance(dtype, _NumpyDType) or not isinstance(data, bytes) or len(data) != dtype.dtype.itemsize:
        raise NvidiaPickleError("numpy scalar: expected (numeric dtype, bytes of its size)")
    return np.frombuffer(data, dtype=dtype.dtype, count=1)[0].item()


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


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "dict"): dict,  # the base class argument of copyreg._reconstructor (protocol <= 1)
    ("builtins", "object"): object,  # same
    ("builtins", "bytes"): _bytes,
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
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,  # numpy 1.x
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,  # numpy 2.x
}


def _fresh(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        return fn(*args)

    return call


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the allow-listed globals above (to our own functions and stand-ins), never imports."""

    def __init__(self, file: Any, source: str) -> None:
        super().__init__(file)
        self._source = source
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
            f"{self._source}: refused global {module}.{name}: it is not one of the classes or functions a "
            "StyleGAN2-ADA pickle uses, so the file is not such a pickle or would need code execution to "
            "load. If you trust the file, load_stylegan2_pkl(..., allow_unsafe_pickle=True) unpickles it "
            "with NVIDIA's code (which runs code from the file)."
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


# ---------------------------------------------------------------------------------------------------------
# From recorded (or live) networks to our generator


def _plain(x: Any) -> Any:
    """EasyDicts to dicts, recursively (the kwargs are compared and passed on as plain values)."""
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    if isinstance(x, tuple):
        return tuple(_plain(v) for v in x)
    return x


def _pickled_state_dict(obj: _PickledModule, prefix: str = "") -> dict[str, torch.Tensor]:
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
    for name, child in _modules_of(obj).items():
        if child is not None:
            out.update(_pickled_state_dict(child, f"{prefix}{name}."))
    return out


def _modules_of(obj: _PickledModule) -> Mapping[str, Any]:
    modules = obj.state.get("_modules") or {}
    if not isinstance(modules, Mapping) or not all(
        m is None or isinstance(m, _PickledModule) for m in modules.values()
    ):
        raise NvidiaPickleError(
            f"{obj.class_name}: _modules: expected a dict of networks, got {modules!r:.100}"
        )
    return modules


def _pickled_children(obj: _PickledModule) -> dict[str, tuple[str, Any]]:
    return {n: (m.class_name, m) for n, m in _modules_of(obj).items() if m is not None}


def _live_children(obj: Any) -> dict[str, tuple[str, Any]]:
    if not isinstance(obj, nn.Module):
        return {}
    # NVIDIA's persistent classes carry the original class name (Decorator.__name__ = orig.__name__).
    return {n: (type(m).__name__, m) for n, m in obj.named_children()}


def _check_structure(
    class_name: str,
    names: tuple[str, ...],
    children: Callable[[Any], dict[str, tuple[str, Any]]],
    obj: Any,
    where: str,
) -> None:
    """NVIDIA's StyleGAN2 layout: mapping (MappingNetwork), synthesis (SynthesisNetwork of SynthesisBlock)."""
    top = children(obj)
    expected = "a StyleGAN2 Generator (stylegan2-ada-pytorch training/networks.py, or stylegan3's "
    expected += "training/networks_stylegan2.py) with mapping: MappingNetwork, synthesis: SynthesisNetwork"
    got = {n: c for n, (c, _) in top.items()}
    if class_name not in names or set(top) != {"mapping", "synthesis"} or got["mapping"] != "MappingNetwork":
        raise UnsupportedGeneratorError(f"{where}: expected {expected}; got {class_name} with children {got}")
    syn_name, syn = top["synthesis"]
    blocks = {n: c for n, (c, _) in children(syn).items()}
    if "input" in blocks or any(c == "SynthesisInput" for c in blocks.values()):
        raise UnsupportedGeneratorError(
            f"{where}: this is a StyleGAN3 generator (synthesis has {sorted(blocks)[:4]}...); only StyleGAN2 "
            "generators can be converted to tangentlens' StyleGAN2Generator"
        )
    if (
        syn_name != "SynthesisNetwork"
        or not blocks
        or any(not n.startswith("b") or c != "SynthesisBlock" for n, c in blocks.items())
    ):
        raise UnsupportedGeneratorError(
            f"{where}: expected {expected} of SynthesisBlocks b4, b8, ...; got synthesis {syn_name} with "
            f"children {blocks}"
        )


# NVIDIA's Generator positional arguments, in order.
_GENERATOR_ARGS = (
    "z_dim",
    "c_dim",
    "w_dim",
    "img_resolution",
    "img_channels",
    "mapping_kwargs",
    "synthesis_kwargs",
)
_SIZE_ARGS = _GENERATOR_ARGS[:5]
# NVIDIA synthesis kwargs that only choose a memory layout or fused-vs-unfused modulated convolution:
# the function computed is the same.
_LAYOUT_ONLY = ("fp16_channels_last", "channels_last", "fused_modconv_default")
_TOP_SYNTHESIS = ("channel_base", "channel_max", "conv_clamp")  # our constructor takes these directly
_PASSED_SYNTHESIS = (
    "num_fp16_res",
    "architecture",
    "resample_filter",
    "kernel_size",
    "use_noise",
    "activation",
)
_PASSED_MAPPING = ("embed_features", "layer_features", "activation", "lr_multiplier", "w_avg_beta")


def _as_int(x: Any, what: str) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise UnsupportedGeneratorError(f"{what}: expected an int, got {x!r}")
    return int(x)


def _generator_kwargs(
    init_args: Any, init_kwargs: Any, attrs: Mapping[str, Any], where: str
) -> dict[str, Any]:
    """NVIDIA's constructor arguments to StyleGAN2Generator's (unsupported ones refused by name)."""
    if not isinstance(init_args, tuple | list | type(None)) or not isinstance(init_kwargs, Mapping | None):
        raise UnsupportedGeneratorError(
            f"{where}: expected init args as a tuple and init kwargs as a dict, got "
            f"{type(init_args).__name__} and {type(init_kwargs).__name__}"
        )
    init_args = _plain(tuple(init_args or ()))
    init_kwargs = _plain(dict(init_kwargs or {}))
    if len(init_args) > len(_GENERATOR_ARGS):
        raise UnsupportedGeneratorError(
            f"{where}: expected at most 7 positional init args, got {len(init_args)}"
        )
    kw: dict[str, Any] = dict(zip(_GENERATOR_ARGS, init_args, strict=False))
    both = sorted(set(kw) & set(init_kwargs))
    if both:
        raise UnsupportedGeneratorError(f"{where}: init args given both positionally and by name: {both}")
    kw.update(init_kwargs)
    out: dict[str, Any] = {}
    for name in _SIZE_ARGS:  # the persistent object also keeps them as attributes
        value = kw.pop(name, attrs.get(name))
        if value is None:
            raise UnsupportedGeneratorError(f"{where}: the constructor argument {name!r} is missing")
        out[name] = _as_int(value, f"{where}: {name}")
    mapping = dict(kw.pop("mapping_kwargs", None) or {})
    synthesis = dict(kw.pop("synthesis_kwargs", None) or {})
    # stylegan3's networks_stylegan2.Generator takes the synthesis arguments flat (**synthesis_kwargs).
    clash = sorted(set(kw) & set(synthesis))
    if clash:
        raise UnsupportedGeneratorError(f"{where}: {clash} given both in synthesis_kwargs and directly")
    synthesis.update(kw)

    unsupported: list[str] = []
    syn_kw: dict[str, Any] = {}
    for k, v in synthesis.items():
        if k in _TOP_SYNTHESIS:
            out[k] = v
        elif k in _PASSED_SYNTHESIS:
            syn_kw[k] = list(v) if k == "resample_filter" else v
        elif k not in _LAYOUT_ONLY:
            unsupported.append(f"synthesis_kwargs[{k!r}]={v!r}")
    map_kw: dict[str, Any] = {}
    for k, v in mapping.items():
        if k == "num_layers":
            out["mapping_layers"] = _as_int(v, f"{where}: mapping_kwargs['num_layers']")
        elif k in _PASSED_MAPPING:
            map_kw[k] = v
        else:
            unsupported.append(f"mapping_kwargs[{k!r}]={v!r}")
    if syn_kw.get("architecture", "skip") not in ARCHITECTURES:
        unsupported.append(f"architecture={syn_kw['architecture']!r} (supported: {', '.join(ARCHITECTURES)})")
    if unsupported:
        raise UnsupportedGeneratorError(
            f"{where}: StyleGAN2Generator cannot reproduce these NVIDIA constructor arguments: "
            + ", ".join(unsupported)
        )
    out["mapping_kwargs"] = map_kw
    out["synthesis_kwargs"] = syn_kw
    return out


def _load_strict(G: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    expected = G.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: expected {tuple(expected[k].shape)}, got {tuple(state[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or shapes:

        def show(xs: list[str]) -> str:
            return f"{xs[:6]}{' ...' if len(xs) > 6 else ''} ({len(xs)})"

        raise UnsupportedGeneratorError(
            f"{where}: the tensors do not match a StyleGAN2Generator built from its constructor arguments: "
            f"missing {show(missing)}, unexpected {show(unexpected)}, shape mismatches {show(shapes)}"
        )
    G.load_state_dict(state, strict=True)


def _finish(G: StyleGAN2Generator, device: DeviceLike) -> StyleGAN2Generator:
    G.eval().requires_grad_(False)
    return G.to(device) if device is not None else G


def _build(
    kwargs: dict[str, Any], state: Mapping[str, torch.Tensor], impl: Impl, where: str
) -> StyleGAN2Generator:
    try:
        G = StyleGAN2Generator(**kwargs, impl=impl)
    except (TypeError, ValueError) as exc:
        raise UnsupportedGeneratorError(f"{where}: StyleGAN2Generator({kwargs}) failed: {exc}") from exc
    _load_strict(G, state, where)
    return G


def _check_impl(impl: object) -> None:
    if impl not in ("auto", "native", "reference"):
        raise ValueError(f"impl: expected 'auto', 'native' or 'reference', got {impl!r}")


# ---------------------------------------------------------------------------------------------------------
# Public API


def load_stylegan2_pkl(
    path: PathLike,
    *,
    key: str = "G_ema",
    device: DeviceLike = None,
    impl: Impl = "auto",
    allow_unsafe_pickle: bool = False,
) -> StyleGAN2Generator:
    """Our StyleGAN2Generator with the weights of network ``key`` of an NVIDIA stylegan2-ada-pytorch ``.pkl``.

    Args:
        path: the ``.pkl`` file (a pickled dict with 'G', 'D', 'G_ema', 'training_set_kwargs',
            'augment_pipe'; stylegan3's StyleGAN2 pickles, e.g. ``stylegan2-ffhq-1024x1024.pkl``, work too).
        key: which network: ``"G_ema"`` (default; the one to evaluate) or ``"G"`` (the raw training weights).
        device: where the returned generator lives (default: CPU; the file's tensors are read onto the CPU
            whatever device they were saved from).
        impl: StyleGAN2Generator's op implementation ("auto", "native", "reference").
        allow_unsafe_pickle: False (default): no code from the file runs; only the globals a StyleGAN2-ADA
            pickle uses are resolved and NVIDIA's pickled source code is ignored. True: the file is unpickled
            with ``pickle`` (this **runs code from the file**, including the source NVIDIA pickles with each
            network, and needs NVIDIA's ``dnnlib`` and ``torch_utils`` importable), then converted with
            :func:`convert_nvidia_generator`. Only for files you trust that the safe path cannot read.

    Returns the generator in eval mode with ``requires_grad=False``. Raises NvidiaPickleError (a
    ``pickle.UnpicklingError`` and ``ValueError``) for files that are not such pickles or need code execution,
    and UnsupportedGeneratorError for networks StyleGAN2Generator cannot reproduce (e.g. StyleGAN3).
    """
    _check_impl(impl)
    if not isinstance(key, str):
        raise TypeError(f"key: expected a str such as 'G_ema' or 'G', got {type(key).__name__}")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"path: no such file {str(p)!r}")
    where = f"{p.name}[{key!r}]"
    with open(p, "rb") as f:
        if allow_unsafe_pickle:
            try:
                data = _UnsafeUnpickler(f).load()
            except ModuleNotFoundError as exc:
                raise ModuleNotFoundError(
                    f"{p}: allow_unsafe_pickle=True unpickles with NVIDIA's code, which is not importable "
                    f"({exc}); put stylegan2-ada-pytorch's dnnlib and torch_utils on sys.path, or use the "
                    "safe loader (allow_unsafe_pickle=False)"
                ) from exc
        else:
            try:
                data = _RestrictedUnpickler(f, str(p)).load()
            except NvidiaPickleError:
                raise
            except Exception as exc:  # truncated or damaged file, wrong arguments to an allowed function
                raise NvidiaPickleError(
                    f"{p}: not a readable StyleGAN2-ADA pickle ({type(exc).__name__}: {exc})"
                ) from exc
    if not isinstance(data, Mapping):
        raise NvidiaPickleError(
            f"{p}: expected a pickled dict with keys {list(PKL_KEYS)}, got {type(data).__name__}"
        )
    if key not in data:
        raise KeyError(f"key: {key!r} is not in {p.name}; its keys are {sorted(map(str, data))}")
    obj = data[key]
    if allow_unsafe_pickle:
        return convert_nvidia_generator(obj, device=device if device is not None else "cpu", impl=impl)
    if not isinstance(obj, _PickledModule):
        raise NvidiaPickleError(f"{where}: expected a pickled network, got {type(obj).__name__}")
    _check_structure(obj.class_name, ("Generator",), _pickled_children, obj, where)
    attrs = obj.state
    kwargs = _generator_kwargs(attrs.get("_init_args"), attrs.get("_init_kwargs"), attrs, where)
    G = _build(kwargs, _pickled_state_dict(obj), impl, where)
    return _finish(G, device)


def convert_nvidia_generator(G: Any, *, device: DeviceLike = None, impl: Impl = "auto") -> StyleGAN2Generator:
    """A live NVIDIA StyleGAN2 ``Generator`` (``mapping``, ``synthesis``, ``z_dim`` ... and ``init_kwargs`` or
    ``_init_kwargs``) as our StyleGAN2Generator, its state dict loaded strictly.

    ``device`` defaults to the device of G's parameters. Raises UnsupportedGeneratorError (a
    NotImplementedError) saying why when the architecture or a constructor argument cannot be matched.
    """
    _check_impl(impl)
    where = f"convert_nvidia_generator({type(G).__name__})"
    if not isinstance(G, nn.Module):
        raise TypeError(f"G: expected an NVIDIA Generator (a torch.nn.Module), got {type(G).__name__}")
    # Our own class is accepted too (it has NVIDIA's layout): a copy with NVIDIA's init_kwargs converts.
    _check_structure(type(G).__name__, ("Generator", "StyleGAN2Generator"), _live_children, G, where)
    init_kwargs = getattr(G, "_init_kwargs", None)
    if init_kwargs is None:
        init_kwargs = getattr(G, "init_kwargs", None)
    init_args = getattr(G, "_init_args", None)
    if init_args is None:
        init_args = getattr(G, "init_args", ())
    if init_kwargs is None and not init_args:
        raise UnsupportedGeneratorError(
            f"{where}: G has no init_kwargs / _init_kwargs (NVIDIA's persistent classes record them); the "
            "constructor arguments (channel_base, channel_max, ...) cannot be recovered"
        )
    attrs = {name: getattr(G, name, None) for name in _SIZE_ARGS}
    kwargs = _generator_kwargs(init_args, init_kwargs, attrs, where)
    state = {k: v.detach() for k, v in G.state_dict().items()}
    if device is None:
        first = next(iter(state.values()), None)
        device = first.device if first is not None else None
    return _finish(_build(kwargs, state, impl, where), device)


def load_stylegan2_state_dict(
    source: PathLike | Mapping[str, torch.Tensor],
    *,
    device: DeviceLike = None,
    impl: Impl = "auto",
    **generator_kwargs: Any,
) -> StyleGAN2Generator:
    """StyleGAN2Generator(**generator_kwargs) with a state dict (NVIDIA's names) loaded strictly.

    ``source``: a dict, or a ``torch.save`` file read with ``torch.load(weights_only=True)``.
    ``generator_kwargs`` are StyleGAN2Generator's (``channel_base``, ``mapping_layers``, ...), not NVIDIA's.
    """
    _check_impl(impl)
    if isinstance(source, Mapping):
        state, where = source, "load_stylegan2_state_dict"
    else:
        p = Path(source)
        if not p.is_file():
            raise FileNotFoundError(f"source: no such file {str(p)!r}")
        state, where = torch.load(p, map_location="cpu", weights_only=True), str(p)
        if not isinstance(state, Mapping):
            raise ValueError(f"source: expected a state dict in {str(p)!r}, got {type(state).__name__}")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"source: expected tensors only, got non-tensors at {bad[:6]}")
    try:
        G = StyleGAN2Generator(**generator_kwargs, impl=impl)
    except TypeError as exc:
        raise TypeError(f"generator_kwargs: not StyleGAN2Generator's arguments ({exc})") from exc
    _load_strict(G, state, where)
    return _finish(G, device)


# ---------------------------------------------------------------------------------------------------------
# NVIDIA's custom ops: reference paths

_PLUGIN_OPS = ("bias_act", "upfirdn2d", "filtered_lrelu")  # use the CUDA plugin when _init() is True
_GRADFIX_OPS = ("conv2d_gradfix", "grid_sample_gradfix")  # use a custom autograd.Function when enabled
_OPS = (*_PLUGIN_OPS, *_GRADFIX_OPS, "fma")


def _cuda_plugin_unavailable() -> bool:
    return False


def _fma_reference(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    # torch_utils.ops.fma.fma is an autograd.Function computing exactly this (no forward-mode rule).
    return torch.addcmul(c, a, b)


def _find_ops_modules(G: object | None) -> dict[str, types.ModuleType]:
    found: dict[str, types.ModuleType] = {}
    for name, mod in list(sys.modules.items()):
        if isinstance(mod, types.ModuleType) and any(
            name == f"torch_utils.ops.{op}" or name.endswith(f".torch_utils.ops.{op}") for op in _OPS
        ):
            found[name] = mod
    # Modules that G's classes use, in case NVIDIA's code was imported under another package name.
    nets = list(G.modules()) if isinstance(G, nn.Module) else ([G] if G is not None else [])
    owners = {cls.__module__ for net in nets for cls in type(net).__mro__}
    for owner_name in sorted(owners):
        owner = sys.modules.get(owner_name)
        if owner is not None:
            for value in list(vars(owner).values()):
                name = getattr(value, "__name__", "")
                if isinstance(value, types.ModuleType) and any(name.endswith(f"ops.{op}") for op in _OPS):
                    found.setdefault(name, value)
    return found


@contextlib.contextmanager
def nvidia_reference_ops(G: object | None = None) -> Iterator[list[str]]:
    """Within the block, NVIDIA's ``torch_utils.ops`` take their pure-PyTorch reference paths.

    Their CUDA ops are ``torch.autograd.Function``s without forward-mode rules, so ``torch.func.jvp``
    through an NVIDIA network fails unless they are off: ``bias_act``, ``upfirdn2d``, ``filtered_lrelu``
    (StyleGAN3) get ``_init`` returning False (no CUDA plugin: the 'ref' path), ``conv2d_gradfix`` and
    ``grid_sample_gradfix`` get ``enabled = False``, ``fma.fma`` becomes ``torch.addcmul``. The modules are
    found in ``sys.modules`` by name (``*torch_utils.ops.<op>``) and among the modules G's classes use.
    Process-wide while active; everything is restored on exit, exceptions included.

    Yields the list of what was switched (strings, for a result's config); empty when no module is loaded.
    """
    switched: list[str] = []
    saved: list[tuple[types.ModuleType, str, Any]] = []

    def switch(mod: types.ModuleType, attr: str, value: Any, note: str) -> None:
        saved.append((mod, attr, getattr(mod, attr)))
        setattr(mod, attr, value)
        switched.append(f"{mod.__name__}.{attr}: {note}")

    try:
        for name, mod in sorted(_find_ops_modules(G).items()):
            op = name.rsplit(".", 1)[-1]
            if op in _PLUGIN_OPS and callable(getattr(mod, "_init", None)):
                switch(mod, "_init", _cuda_plugin_unavailable, "returns False (reference path)")
            elif op in _GRADFIX_OPS and hasattr(mod, "enabled"):
                switch(mod, "enabled", False, f"{mod.enabled!r} -> False")
            elif op == "fma" and callable(getattr(mod, "fma", None)):
                switch(mod, "fma", _fma_reference, "torch.addcmul")
        yield switched
    finally:
        for mod, attr, value in reversed(saved):
            setattr(mod, attr, value)
