"""Perceptual geodesics: the shortest paths between latents under the metric ``M = JᵀJ`` of ``F = φ ∘ G``
and how much longer the interpolation paths (lerp / slerp, the paths PPL walks) are.

* :func:`geodesic` (``tangentlens.geodesic``): a batch of pairs -> :class:`Geodesic` (paths, lengths,
  energies, efficiency = geodesic length / interpolation length, convergence, images, plots);
* :func:`scan`: many pairs drawn from the counter-based sampler, streamed, checkpointed, resumable and
  sharded over torch.distributed ranks -> :class:`GeodesicScan` (mean efficiency with a bootstrap CI,
  quantiles, histogram).

Modules: ``curves`` (interpolation paths, the shell parametrisation, energy and length), ``optim``
(L-BFGS and block-tridiagonal Gauss-Newton minimisers), ``solve`` (:func:`geodesic`), ``result``,
``scan``. See docs/geodesics.md.
"""

from tangentlens.geodesics.curves import energy, interpolation_path, length, segments
from tangentlens.geodesics.result import Geodesic, GeodesicScan, efficiency
from tangentlens.geodesics.scan import STREAM_Z0, STREAM_Z1, scan
from tangentlens.geodesics.solve import geodesic

__all__ = [
    "STREAM_Z0",
    "STREAM_Z1",
    "Geodesic",
    "GeodesicScan",
    "efficiency",
    "energy",
    "geodesic",
    "interpolation_path",
    "length",
    "scan",
    "segments",
]
