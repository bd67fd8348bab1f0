"""NVIDIA StyleGAN3 networks (stylegan3 ``training/networks_stylegan3.py``, configs T and R) as
:class:`~tangentlens.models.StyleGAN3Generator`."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tangentlens.generators._convert import ArgumentMap, UnsupportedGeneratorError, our_kwargs
from tangentlens.generators.unpickle import plain
from tangentlens.models.stylegan3 import StyleGAN3Generator

EXPECTED = (
    "a StyleGAN3 Generator (stylegan3 training/networks_stylegan3.py) with mapping: MappingNetwork, "
    "synthesis: SynthesisNetwork of input: SynthesisInput and layers L<i>_<size>_<channels>: SynthesisLayer"
)
_LAYER_NAME = re.compile(r"L\d+_\d+_\d+")
_TOP_SYNTHESIS = ("channel_base", "channel_max", "conv_clamp")
_PASSED_SYNTHESIS = (
    "num_layers",
    "num_critical",
    "first_cutoff",
    "first_stopband",
    "last_stopband_rel",
    "margin_size",
    "output_scale",
    "num_fp16_res",
    "conv_kernel",
    "filter_size",
    "lrelu_upsampling",
    "use_radial_filters",
    "magnitude_ema_beta",
)
_PASSED_MAPPING = ("lr_multiplier", "w_avg_beta")
_ARGUMENTS = ArgumentMap("StyleGAN3Generator", _TOP_SYNTHESIS, _PASSED_SYNTHESIS, _PASSED_MAPPING)
# recorded attributes that fix the computation, compared with the rebuilt network's
_NETWORK_ATTRS = ("num_ws", "num_layers", "num_critical", "margin_size", "output_scale", "layer_names")
_INPUT_ATTRS = ("channels", "size", "sampling_rate", "bandwidth")
_LAYER_ATTRS = (
    "is_torgb",
    "in_channels",
    "out_channels",
    "in_size",
    "out_size",
    "in_sampling_rate",
    "out_sampling_rate",
    "tmp_sampling_rate",
    "conv_kernel",
    "conv_clamp",
    "up_factor",
    "down_factor",
    "up_taps",
    "down_taps",
    "down_radial",
    "padding",
)


def is_stylegan3(synthesis_children: Mapping[str, str]) -> bool:
    return (
        synthesis_children.get("input") == "SynthesisInput" or "SynthesisInput" in synthesis_children.values()
    )


def check_structure(syn_name: str, children: Mapping[str, str], where: str) -> None:
    layers = {n: c for n, c in children.items() if n != "input"}
    if (
        syn_name != "SynthesisNetwork"
        or children.get("input") != "SynthesisInput"
        or not layers
        or any(not _LAYER_NAME.fullmatch(n) or c != "SynthesisLayer" for n, c in layers.items())
    ):
        raise UnsupportedGeneratorError(
            f"{where}: expected {EXPECTED}; got synthesis {syn_name} with children {dict(children)}"
        )


def generator_kwargs(
    init_args: Any, init_kwargs: Any, attrs: Mapping[str, Any], where: str
) -> dict[str, Any]:
    """NVIDIA's ``Generator(z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs,
    **synthesis_kwargs)`` to StyleGAN3Generator's arguments (unsupported ones refused by name)."""
    out = our_kwargs(init_args, init_kwargs, attrs, where, _ARGUMENTS)
    syn_kw = out["synthesis_kwargs"]
    # NVIDIA's defaults are config T's; conv_kernel and use_radial_filters say which config it is.
    syn_kw.setdefault("conv_kernel", 3)
    syn_kw["use_radial_filters"] = bool(syn_kw.get("use_radial_filters", False))
    return out


def _same(recorded: Any, ours: Any) -> bool:
    a, b = plain(recorded), ours
    if isinstance(a, np.ndarray | list | tuple) or isinstance(b, list | tuple):
        a, b = np.asarray(a).reshape(-1).tolist(), np.asarray(b).reshape(-1).tolist()
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if a is None or b is None:
        return a is b
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return float(a) == float(b)


def check_attributes(
    G: StyleGAN3Generator,
    synthesis_attrs: Callable[[str], Mapping[str, Any]],
    where: str,
) -> None:
    """The attributes NVIDIA's objects recorded (sizes, rates, factors, padding, clamp ...) equal those of
    the network rebuilt from the constructor arguments; ``synthesis_attrs(name)`` gives the recorded
    attributes of ``synthesis`` (name "") or of its child ``name``."""
    ours = {"": G.synthesis, "input": G.synthesis.input}
    ours.update({n: getattr(G.synthesis, n) for n in G.synthesis.layer_names})
    differ: list[str] = []
    for name, module in ours.items():
        recorded = synthesis_attrs(name)
        keys = _NETWORK_ATTRS if name == "" else _INPUT_ATTRS if name == "input" else _LAYER_ATTRS
        for key in keys:
            if key in recorded and not _same(recorded[key], getattr(module, key)):
                differ.append(
                    f"synthesis{'.' + name if name else ''}.{key}: recorded {plain(recorded[key])!r}, "
                    f"rebuilt {getattr(module, key)!r}"
                )
    if differ:
        raise UnsupportedGeneratorError(
            f"{where}: the network rebuilt from its constructor arguments differs from the recorded one: "
            + "; ".join(differ[:6])
            + (" ..." if len(differ) > 6 else "")
        )
