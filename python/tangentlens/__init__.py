"""tangentlens: exact, fast metrics for the latent geometry of generative models."""

from __future__ import annotations

from tangentlens import ops, paths
from tangentlens._extension import NATIVE_AVAILABLE, native_build_info, set_default_impl

__version__ = "0.1.0"

__all__ = ["NATIVE_AVAILABLE", "__version__", "native_build_info", "ops", "paths", "set_default_impl"]
