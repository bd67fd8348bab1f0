"""Generators: protocol adapters for the engines (:func:`as_generator`, :mod:`.adapters`) and NVIDIA's
StyleGAN2 / StyleGAN3 files and objects as tangentlens models (:mod:`.nvidia`; the safe unpickler is
:mod:`.unpickle`, the per-architecture conversions :mod:`.stylegan2_convert` and
:mod:`.stylegan3_convert`)."""

from __future__ import annotations

from tangentlens.generators.adapters import GeneratorAdapter, as_generator, fingerprint
from tangentlens.generators.nvidia import (
    NvidiaPickleError,
    UnsupportedGeneratorError,
    convert_nvidia_generator,
    load_nvidia_pkl,
    load_stylegan2_pkl,
    load_stylegan2_state_dict,
    load_stylegan3_state_dict,
    nvidia_reference_ops,
)

__all__ = [
    "GeneratorAdapter",
    "NvidiaPickleError",
    "UnsupportedGeneratorError",
    "as_generator",
    "convert_nvidia_generator",
    "fingerprint",
    "load_nvidia_pkl",
    "load_stylegan2_pkl",
    "load_stylegan2_state_dict",
    "load_stylegan3_state_dict",
    "nvidia_reference_ops",
]
