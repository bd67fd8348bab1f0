"""tangentlens: exact, fast metrics for the latent geometry of generative models."""

from __future__ import annotations

from tangentlens import distances, generators, geodesics, ops, paths, spectra
from tangentlens._extension import NATIVE_AVAILABLE, native_build_info, set_default_impl
from tangentlens.distances import make_distance
from tangentlens.geodesics import Geodesic, geodesic
from tangentlens.jvp import coverage, jvp
from tangentlens.lpips import LPIPS
from tangentlens.ppl import PPLResult, ppl, ppl_distances
from tangentlens.spectra import spectrum

__version__ = "0.1.0"

__all__ = [
    "LPIPS",
    "Geodesic",
    "NATIVE_AVAILABLE",
    "PPLResult",
    "__version__",
    "coverage",
    "distances",
    "generators",
    "geodesic",
    "geodesics",
    "jvp",
    "make_distance",
    "native_build_info",
    "ops",
    "paths",
    "ppl",
    "ppl_distances",
    "set_default_impl",
    "spectra",
    "spectrum",
]
