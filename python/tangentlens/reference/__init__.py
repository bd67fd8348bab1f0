"""Pure-PyTorch reference implementations of every native op.

They are the oracles the kernels are tested against and the fallback when the compiled extension is
missing. They follow the textbook formulas (float64 throughout) rather than the kernels' code paths.
"""

from tangentlens.reference.filtered_lrelu import filtered_lrelu, filtered_lrelu_jvp
from tangentlens.reference.lpips import layer_distance as lpips_layer_distance
from tangentlens.reference.lpips import normalization_tangent
from tangentlens.reference.lpips import tangent_norm as lpips_tangent_norm
from tangentlens.reference.paths import interpolate, sample
from tangentlens.reference.philox import philox4x32_10, philox_normal, philox_uniform53

__all__ = [
    "filtered_lrelu",
    "filtered_lrelu_jvp",
    "interpolate",
    "lpips_layer_distance",
    "lpips_tangent_norm",
    "normalization_tangent",
    "philox4x32_10",
    "philox_normal",
    "philox_uniform53",
    "sample",
]
