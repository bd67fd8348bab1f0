"""Perceptual Path Length (SPEC section 4): peer-exact presets, the exact JVP mode, statistics, streaming.

``ppl(generator, ...)`` draws sample i's latents, position t, labels and noise from ``(seed, i)`` only
(counter-based RNG), computes one distance per sample, trims and reports the mean with a bootstrap CI.
``ppl_distances(generator, z0, z1, t, ...)`` computes the per-sample distances of explicit latents, so a
peer's own samples can be replayed number for number.

One sample, for a path p (slerp of unit z in Z, lerp of w = f(z) in W, or torchmetrics' lerp of raw z):

* ``method="fd"``: ``d(G(p(t)), G(p(t + eps))) / eps**2`` (the peers' definition);
* ``method="jvp"``: the eps -> 0 limit ``|d/dt e(G(p(t)))|**2``: one JVP along the analytic path tangent
  through G and the distance's embedding e (LPIPS is a squared Euclidean distance of e), no eps, and no
  cancellation, so it survives fp16/bf16/TF32 where finite differences do not.

Images pass, in this order, through: conversion to [-1, 1] from the generator's range; uint8 quantisation
(torch-fidelity's protocol); 1 -> 3 channels for LPIPS; the centre crop; the resize; then the distance. All
steps but the quantisation are linear, so the JVP mode applies them to the tangent as well.
"""

from tangentlens.ppl.protocol import (
    AUTO_BF16_MAX_ERROR,
    AUTO_BF16_PROBE_SAMPLES,
    AUTO_BF16_PROBE_SEED,
    CPU_BATCH_MAX,
    CPU_BATCH_SECONDS,
    CPU_BATCH_SIZE,
    DEFAULT,
    NVIDIA_METRICS,
    PRESETS,
    DegenerateResultWarning,
    FiniteDifferenceWarning,
    Interp,
    Method,
    PPLPrecision,
    PPLProtocol,
    Sampling,
    Space,
)
from tangentlens.ppl.result import PPLResult
from tangentlens.ppl.run import ppl, ppl_distances
from tangentlens.ppl.statistics import bootstrap_ci, trim, trimmed_stats

__all__ = [
    "AUTO_BF16_MAX_ERROR",
    "AUTO_BF16_PROBE_SAMPLES",
    "AUTO_BF16_PROBE_SEED",
    "CPU_BATCH_MAX",
    "CPU_BATCH_SECONDS",
    "CPU_BATCH_SIZE",
    "DEFAULT",
    "Interp",
    "Method",
    "PPLPrecision",
    "Sampling",
    "Space",
    "NVIDIA_METRICS",
    "PRESETS",
    "DegenerateResultWarning",
    "FiniteDifferenceWarning",
    "PPLProtocol",
    "PPLResult",
    "bootstrap_ci",
    "ppl",
    "ppl_distances",
    "trim",
    "trimmed_stats",
]
