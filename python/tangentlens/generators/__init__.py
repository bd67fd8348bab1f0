"""Generators: protocol adapters (:func:`as_generator`) and loaders of NVIDIA StyleGAN2 files."""

from __future__ import annotations

from tangentlens.generators.adapters import GeneratorAdapter, as_generator, fingerprint

__all__ = ["GeneratorAdapter", "as_generator", "fingerprint"]
