"""NVIDIA StyleGAN2 networks (stylegan2-ada-pytorch ``training/networks.py``, stylegan3's
``training/networks_stylegan2.py``) as :class:`~tangentlens.models.StyleGAN2Generator`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tangentlens.generators._convert import ArgumentMap, UnsupportedGeneratorError, our_kwargs
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
_ARGUMENTS = ArgumentMap(
    "StyleGAN2Generator", _TOP_SYNTHESIS, _PASSED_SYNTHESIS, _PASSED_MAPPING, _LAYOUT_ONLY
)


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


def _problems(syn_kw: dict[str, Any]) -> list[str]:
    if "resample_filter" in syn_kw:
        syn_kw["resample_filter"] = list(syn_kw["resample_filter"])
    if syn_kw.get("architecture", "skip") not in ARCHITECTURES:
        return [f"architecture={syn_kw['architecture']!r} (supported: {', '.join(ARCHITECTURES)})"]
    return []


def generator_kwargs(
    init_args: Any, init_kwargs: Any, attrs: Mapping[str, Any], where: str
) -> dict[str, Any]:
    """NVIDIA's constructor arguments to StyleGAN2Generator's (unsupported ones refused by name)."""
    return our_kwargs(init_args, init_kwargs, attrs, where, _ARGUMENTS, _problems)
