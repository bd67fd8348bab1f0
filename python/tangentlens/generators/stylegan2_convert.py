"""NVIDIA StyleGAN2 networks (stylegan2-ada-pytorch ``training/networks.py``, stylegan3's
``training/networks_stylegan2.py``) as :class:`~tangentlens.models.StyleGAN2Generator`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tangentlens.generators._convert import UnsupportedGeneratorError, as_int, generator_arguments
from tangentlens.models.stylegan2 import ARCHITECTURES

EXPECTED = (
    "a StyleGAN2 Generator (stylegan2-ada-pytorch training/networks.py, or stylegan3's "
    "training/networks_stylegan2.py) with mapping: MappingNetwork, synthesis: SynthesisNetwork"
)
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


def is_stylegan2(synthesis_children: Mapping[str, str]) -> bool:
    return bool(synthesis_children) and all(
        n.startswith("b") and c == "SynthesisBlock" for n, c in synthesis_children.items()
    )


def check_structure(syn_name: str, blocks: Mapping[str, str], where: str) -> None:
    """NVIDIA's StyleGAN2 synthesis: a SynthesisNetwork of SynthesisBlocks b4, b8, ..."""
    if syn_name != "SynthesisNetwork" or not is_stylegan2(blocks):
        raise UnsupportedGeneratorError(
            f"{where}: expected {EXPECTED} of SynthesisBlocks b4, b8, ...; got synthesis {syn_name} with "
            f"children {dict(blocks)}"
        )


def generator_kwargs(
    init_args: Any, init_kwargs: Any, attrs: Mapping[str, Any], where: str
) -> dict[str, Any]:
    """NVIDIA's constructor arguments to StyleGAN2Generator's (unsupported ones refused by name)."""
    sizes, mapping, synthesis = generator_arguments(init_args, init_kwargs, attrs, where)
    out: dict[str, Any] = dict(sizes)
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
            out["mapping_layers"] = as_int(v, f"{where}: mapping_kwargs['num_layers']")
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


def synthesis_children(children: Callable[[Any], dict[str, tuple[str, Any]]], syn: Any) -> dict[str, str]:
    return {n: c for n, (c, _) in children(syn).items()}
