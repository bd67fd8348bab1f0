"""NVIDIA's StyleGAN2 and StyleGAN3 generators as tangentlens models.

* :func:`load_nvidia_pkl` (alias :func:`load_stylegan2_pkl`) reads a network pickle written by
  stylegan2-ada-pytorch or stylegan3 (``{'G', 'D', 'G_ema', 'training_set_kwargs', 'augment_pipe'}``)
  **without running code from the file** (:mod:`.unpickle`), then builds our
  :class:`~tangentlens.models.StyleGAN2Generator` (:mod:`.stylegan2_convert`) or
  :class:`~tangentlens.models.StyleGAN3Generator` (:mod:`.stylegan3_convert`) from the recorded
  constructor arguments and tensors, whose names are NVIDIA's.
* :func:`convert_nvidia_generator` does the same for a live NVIDIA ``Generator`` object.
* :func:`nvidia_reference_ops` switches NVIDIA's ``torch_utils.ops`` to their pure-PyTorch reference paths
  (their CUDA kernels have no forward-mode AD rules) while an NVIDIA network itself is evaluated.
"""

from __future__ import annotations

import contextlib
import os
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tangentlens._extension import Impl
from tangentlens.generators import stylegan2_convert, stylegan3_convert
from tangentlens.generators._convert import (
    DeviceLike,
    UnsupportedGeneratorError,
    build,
    check_impl,
    finish,
    live_children,
    load_strict,
)
from tangentlens.generators.unpickle import (
    NvidiaPickleError,
    identify_family,
    is_pickled_module,
    pickled_children,
    pickled_state_dict,
    read_pickle,
)
from tangentlens.models.stylegan2 import StyleGAN2Generator
from tangentlens.models.stylegan3 import StyleGAN3Generator

__all__ = [
    "NvidiaPickleError",
    "UnsupportedGeneratorError",
    "convert_nvidia_generator",
    "load_nvidia_pkl",
    "load_stylegan2_pkl",
    "load_stylegan2_state_dict",
    "load_stylegan3_state_dict",
    "nvidia_reference_ops",
]

PathLike = str | os.PathLike
NvidiaGenerator = StyleGAN2Generator | StyleGAN3Generator

# The keys of a pickle written by NVIDIA's training loops (only the generators are needed).
PKL_KEYS = ("G", "D", "G_ema", "training_set_kwargs", "augment_pipe")
_GENERATOR_CLASSES = ("Generator", "StyleGAN2Generator", "StyleGAN3Generator")
_EXPECTED = (
    "a StyleGAN2 or StyleGAN3 Generator (NVIDIA's training/networks.py, networks_stylegan2.py or "
    "networks_stylegan3.py) with mapping: MappingNetwork, synthesis: SynthesisNetwork"
)


def _convert(
    obj: Any,
    class_name: str,
    children: Callable[[Any], dict[str, tuple[str, Any]]],
    attrs_of: Callable[[Any], Mapping[str, Any]],
    state: Mapping[str, torch.Tensor],
    impl: Impl,
    where: str,
) -> NvidiaGenerator:
    """A recorded or live NVIDIA generator (``children`` / ``attrs_of`` read either kind) as our model."""
    top = children(obj)
    got = {n: c for n, (c, _) in top.items()}
    if (
        class_name not in _GENERATOR_CLASSES
        or set(top) != {"mapping", "synthesis"}
        or got["mapping"] != "MappingNetwork"
    ):
        raise UnsupportedGeneratorError(
            f"{where}: expected {_EXPECTED}; got {class_name} with children {got}"
        )
    syn_name, syn = top["synthesis"]
    syn_children = children(syn)
    blocks = {n: c for n, (c, _) in syn_children.items()}
    attrs = attrs_of(obj)
    init_args = attrs.get("_init_args", attrs.get("init_args"))
    init_kwargs = attrs.get("_init_kwargs", attrs.get("init_kwargs"))
    if init_kwargs is None and not init_args:
        raise UnsupportedGeneratorError(
            f"{where}: G has no init_kwargs / _init_kwargs (NVIDIA's persistent classes record them); the "
            "constructor arguments (channel_base, channel_max, ...) cannot be recovered"
        )
    if stylegan3_convert.is_stylegan3(blocks):
        stylegan3_convert.check_structure(syn_name, blocks, where)
        kwargs = stylegan3_convert.generator_kwargs(init_args, init_kwargs, attrs, where)
        G = build(StyleGAN3Generator, kwargs, state, impl, where)

        def recorded(name: str) -> Mapping[str, Any]:  # the synthesis network's attributes, or a child's
            if name == "":
                return attrs_of(syn)
            return attrs_of(syn_children[name][1]) if name in syn_children else {}

        stylegan3_convert.check_attributes(G, recorded, where)
        return G
    stylegan2_convert.check_structure(syn_name, blocks, where)
    kwargs = stylegan2_convert.generator_kwargs(init_args, init_kwargs, attrs, where)
    return build(StyleGAN2Generator, kwargs, state, impl, where)


# ---------------------------------------------------------------------------------------------------------
# Public API


def load_nvidia_pkl(
    path: PathLike,
    *,
    key: str = "G_ema",
    device: DeviceLike = None,
    impl: Impl = "auto",
    allow_unsafe_pickle: bool = False,
) -> NvidiaGenerator:
    """Our StyleGAN2Generator or StyleGAN3Generator with the weights of network ``key`` of an NVIDIA ``.pkl``.

    Args:
        path: a pickle written by stylegan2-ada-pytorch or stylegan3 (a pickled dict with 'G', 'D',
            'G_ema', 'training_set_kwargs', 'augment_pipe': training snapshots and the released networks,
            e.g. ``stylegan3-r-ffhqu-1024x1024.pkl`` or ``stylegan2-ffhq-1024x1024.pkl``).
        key: which network: ``"G_ema"`` (default; the one to evaluate) or ``"G"`` (the raw training weights).
        device: where the returned generator lives (default: CPU; the file's tensors are read onto the CPU
            whatever device they were saved from).
        impl: the generator's op implementation ("auto", "native", "reference").
        allow_unsafe_pickle: False (default): no code from the file runs; only the globals NVIDIA's pickles
            use are resolved (torch tensors, numpy arrays and scalars rebuilt as data) and NVIDIA's pickled
            source code is only parsed (a source that would run code at import is refused). True: the file
            is unpickled with ``pickle`` (this **runs code from the file**, including the source NVIDIA
            pickles with each network, and needs NVIDIA's ``dnnlib`` and ``torch_utils`` importable), then
            converted with :func:`convert_nvidia_generator`. Only for files you trust that the safe path
            cannot read.

    Returns the generator in eval mode with ``requires_grad=False``. Raises NvidiaPickleError (a
    ``pickle.UnpicklingError`` and ``ValueError``) for files that are not such pickles, need code execution
    or were altered, and UnsupportedGeneratorError for networks our generators do not reproduce (EG3D,
    StyleGAN-XL, other architectures or arguments). Messages name the family of a recognised file first.
    """
    check_impl(impl)
    if not isinstance(key, str):
        raise TypeError(f"key: expected a str such as 'G_ema' or 'G', got {type(key).__name__}")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"path: no such file {str(p)!r}")
    family = identify_family(p)
    where = f"{p.name}[{key!r}]" + (f": {family.description}" if family is not None else "")
    data = read_pickle(p, family, allow_unsafe_pickle=allow_unsafe_pickle)
    if not isinstance(data, Mapping):
        raise NvidiaPickleError(
            f"{p}: expected a pickled dict with keys {list(PKL_KEYS)}, got {type(data).__name__}"
        )
    if key not in data:
        raise KeyError(f"key: {key!r} is not in {p.name}; its keys are {sorted(map(str, data))}")
    obj = data[key]
    if allow_unsafe_pickle:
        return convert_nvidia_generator(obj, device=device if device is not None else "cpu", impl=impl)
    if not is_pickled_module(obj):
        raise NvidiaPickleError(f"{where}: expected a pickled network, got {type(obj).__name__}")
    G = _convert(
        obj, obj.class_name, pickled_children, lambda m: m.state, pickled_state_dict(obj), impl, where
    )
    return finish(G, device)


load_stylegan2_pkl = load_nvidia_pkl  # its name before StyleGAN3 pickles were read too


def convert_nvidia_generator(G: Any, *, device: DeviceLike = None, impl: Impl = "auto") -> NvidiaGenerator:
    """A live NVIDIA ``Generator`` (StyleGAN2 or StyleGAN3: ``mapping``, ``synthesis``, ``z_dim`` ... and
    ``init_kwargs`` or ``_init_kwargs``) as our StyleGAN2Generator / StyleGAN3Generator, its state dict
    loaded strictly.

    ``device`` defaults to the device of G's parameters. Raises UnsupportedGeneratorError (a
    NotImplementedError) saying why when the architecture or a constructor argument cannot be matched.
    """
    check_impl(impl)
    where = f"convert_nvidia_generator({type(G).__name__})"
    if not isinstance(G, nn.Module):
        raise TypeError(f"G: expected an NVIDIA Generator (a torch.nn.Module), got {type(G).__name__}")
    attrs = dict(vars(G))
    for name in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "init_args", "init_kwargs"):
        if name not in attrs and hasattr(G, name):  # properties of NVIDIA's persistent classes
            attrs[name] = getattr(G, name)
    state = {k: v.detach() for k, v in G.state_dict().items()}
    # Our own classes are accepted too (they have NVIDIA's layout): a copy with NVIDIA's init_kwargs converts.
    out = _convert(
        G, type(G).__name__, live_children, lambda m: attrs if m is G else vars(m), state, impl, where
    )
    if device is None:
        first = next(iter(state.values()), None)
        device = first.device if first is not None else None
    return finish(out, device)


def _load_state_dict(
    cls: type[nn.Module],
    source: PathLike | Mapping[str, torch.Tensor],
    device: DeviceLike,
    impl: Impl,
    **kwargs: Any,
) -> Any:
    check_impl(impl)
    if isinstance(source, Mapping):
        state, where = source, f"load_{cls.__name__[:9].lower()}_state_dict"
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
        G = cls(**kwargs, impl=impl)
    except TypeError as exc:
        raise TypeError(f"generator_kwargs: not {cls.__name__}'s arguments ({exc})") from exc
    load_strict(G, state, where)
    return finish(G, device)


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
    return _load_state_dict(StyleGAN2Generator, source, device, impl, **generator_kwargs)


def load_stylegan3_state_dict(
    source: PathLike | Mapping[str, torch.Tensor],
    *,
    device: DeviceLike = None,
    impl: Impl = "auto",
    **generator_kwargs: Any,
) -> StyleGAN3Generator:
    """StyleGAN3Generator(**generator_kwargs) with a state dict (NVIDIA's names) loaded strictly, as
    :func:`load_stylegan2_state_dict`."""
    return _load_state_dict(StyleGAN3Generator, source, device, impl, **generator_kwargs)


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
