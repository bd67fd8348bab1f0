"""Generators from other code bases as tangentlens models (NVIDIA's StyleGAN2 pickles: :mod:`.nvidia`)."""

from tangentlens.generators.nvidia import (
    NvidiaPickleError,
    UnsupportedGeneratorError,
    convert_nvidia_generator,
    load_stylegan2_pkl,
    load_stylegan2_state_dict,
    nvidia_reference_ops,
)

__all__ = [
    "NvidiaPickleError",
    "UnsupportedGeneratorError",
    "convert_nvidia_generator",
    "load_stylegan2_pkl",
    "load_stylegan2_state_dict",
    "nvidia_reference_ops",
]
