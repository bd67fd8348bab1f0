"""``scan(generator, num_pairs, seed=...)``: geodesics of many pairs, streamed through
``tangentlens._streaming.stream`` (rounds of batches, torch.distributed sharding, atomic checkpoints,
resume), summarised by :class:`~tangentlens.geodesics.result.GeodesicScan`."""

from __future__ import annotations

import os
import warnings
from typing import Literal

import torch
from torch import nn

from tangentlens import _streaming, ops
from tangentlens._checks import check_bool, check_float_dtype, check_number
from tangentlens._checks import check_int as _check_int
from tangentlens._fingerprint import run_identity
from tangentlens._operator import _generator, _Operator
from tangentlens.generators.adapters import OutputRange
from tangentlens.generators.outputs import RangeMonitor
from tangentlens.geodesics.checks import check_settings
from tangentlens.geodesics.curves import Constrain, Init
from tangentlens.geodesics.optim import MAX_ITERS
from tangentlens.geodesics.result import GeodesicScan, efficiency
from tangentlens.geodesics.solve import Method, solve_pairs
from tangentlens.jvp import Precision

__all__ = ["STREAM_Z0", "STREAM_Z1", "scan"]

# Counter streams of ops.philox_normal for the pairs' endpoints (row = the pair's index), apart from the
# streams of paths.sample (0-2), the adapters' noise and labels (3, 4) and spectra (0-3).
STREAM_Z0, STREAM_Z1 = 32, 33


def endpoints(
    op: _Operator, seed: int, start: int, count: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs ``start .. start + count - 1``: z0, z1 ~ N(0, I) from their own counter streams (a pair
    depends on (seed, index) only), mapped to w (one w, ``[count, w_dim]``) or w+ (flattened) for those
    spaces."""
    z_dim = op.adapter.z_dim  # type: ignore[attr-defined]
    z0 = ops.philox_normal(seed, start, count, z_dim, stream=STREAM_Z0, dtype=dtype, device=device)
    z1 = ops.philox_normal(seed, start, count, z_dim, stream=STREAM_Z1, dtype=dtype, device=device)
    x = op.from_latents(torch.cat([z0, z1]))
    return x[:count], x[count:]


def scan(
    generator: object,
    num_pairs: int,
    seed: int = 0,
    *,
    space: Literal["z", "w", "w+"] = "z",
    distance: object = "auto",
    points: int = 16,
    init: Init = "lerp",
    constrain: Constrain = "none",
    method: Method = "lbfgs",
    max_iters: int | None = None,
    tol: float = 1e-4,
    refine: bool = True,
    batch_size: int = 8,
    store_paths: bool = False,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: float = 60.0,
    progress: bool = True,
    precision: Precision = "fp32",
    chunk_size: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    z_dim: int | None = None,
    output_range: OutputRange | None = None,
    check_range: bool = True,
    resume_unverified: bool = False,
) -> GeodesicScan:
    """Geodesics of ``num_pairs`` pairs of latents (arguments as :func:`geodesic`).

    Pair i is ``z0 = philox_normal(seed, i, stream=STREAM_Z0)``, ``z1 = philox_normal(seed, i,
    stream=STREAM_Z1)`` (mapped to w for ``space="w"``), so every row depends only on (seed, i): the result
    does not depend on ``batch_size`` or the number of torch.distributed processes (ranks share the
    batches), and a run resumed from ``checkpoint`` (written atomically every ``checkpoint_every`` seconds)
    equals an uninterrupted one; a checkpoint written with other arguments, another generator or distance
    (compared by fingerprint) is refused, and one whose fingerprint cannot be computed reliably is resumed
    only with ``resume_unverified=True``. ``store_paths`` keeps every pair's geodesic ``[n, d]``.
    ``dtype`` / ``device`` default to the generator's. A plain callable z -> tensor needs ``z_dim``; its
    image range is ``output_range`` (default ``"-1_1"``); ``check_range`` warns at most once per run. Every
    argument is checked before the run starts, and each batch's endpoints probe the generator as in
    :func:`geodesic` (docs/geodesics.md, "Errors and warnings").
    """
    _check_int(num_pairs, "num_pairs", 1)
    _check_int(batch_size, "batch_size", 1)
    ops.check_u64(seed, "seed")
    settings = check_settings(
        points=points,
        init=init,
        constrain=constrain,
        method=method,
        max_iters=max_iters,
        tol=tol,
        refine=refine,
        memory=10,
    )
    check_bool(store_paths, "store_paths")
    check_bool(progress, "progress")
    check_bool(check_range, "check_range")
    check_bool(resume_unverified, "resume_unverified")
    checkpoint_every = check_number(checkpoint_every, "checkpoint_every", 0)
    if z_dim is not None:
        z_dim = _check_int(z_dim, "z_dim", 1)
    op = _Operator(
        _generator(generator, z_dim, output_range, None),
        distance,
        space,
        precision,
        chunk_size,
        z_dim=z_dim,
        name="generator",
    )
    ad = op.adapter
    if isinstance(ad.module, nn.Module):
        ad.module.eval()
    if dtype is not None:
        check_float_dtype(dtype, "dtype")
    dtype = dtype or ad.dtype
    dev = torch.device(device) if device is not None else ad.device
    notes: list[str] = []
    monitor = RangeMonitor(ad.output_range, check_range, notes)
    kwargs = dict(
        space=space,
        points=settings.points,
        init=settings.init,
        constrain=settings.constrain,
        method=settings.method,
        max_iters=settings.max_iters,
        tol=settings.tol,
        refine=settings.refine,
        precision=precision,
    )

    def compute(start: int, count: int) -> dict[str, torch.Tensor]:
        x0, x1 = endpoints(op, seed, start, count, dtype, dev)
        g = solve_pairs(op, x0, x1, settings, monitor, notes, first_index=start)
        rows = {
            "length": g.length,
            "interp_length": g.interp_length,
            "energy": g.energy,
            "interp_energy": g.interp_energy,
            "iterations": g.iterations,
            "status": g.status,
        }
        if refine:
            assert g.length_fine is not None and g.interp_length_fine is not None
            rows.update(length_fine=g.length_fine, interp_length_fine=g.interp_length_fine)
            assert g.status_fine is not None and g.iterations_fine is not None
            rows.update(status_fine=g.status_fine, iterations_fine=g.iterations_fine)
        if store_paths:
            rows["path"] = g.path
        return rows

    def postfix(rows: dict[str, torch.Tensor], n: int) -> str:
        eff = efficiency(rows["length"], rows["interp_length"])
        return f"efficiency {float(eff.mean()):.4g}"

    identity, unverified = run_identity(ad, op.distance)
    config = {
        "kind": "tangentlens.geodesics.scan",
        **identity,
        "seed": seed,
        **kwargs,
        "store_paths": store_paths,
        "dtype": str(dtype),
    }
    res = _streaming.stream(
        compute,
        num_samples=num_pairs,
        batch_size=batch_size,
        config=config,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        progress=progress,
        desc="tangentlens geodesics",
        postfix=postfix,
        device=dev,
        unverified=unverified,
        resume_unverified=resume_unverified,
    )
    out = dict(config)
    out["distance_name"] = op.distance_name
    out["world_size"] = _streaming._dist()[1]
    if notes:
        out["notes"] = notes
    result = GeodesicScan(out, res.rows, res.resumed_from, res.seconds)
    stopped = int((result.rows["status"] == MAX_ITERS).sum())
    if "status_fine" in result.rows:
        stopped += int((result.rows["status_fine"] == MAX_ITERS).sum())
    if stopped:
        warnings.warn(
            f"geodesics.scan: {stopped} optimisation(s) of {result.num_pairs} pairs stopped at max_iters "
            "before the tolerance; their lengths and efficiencies are upper bounds (raise max_iters, or see "
            "the rows' status)",
            RuntimeWarning,
            stacklevel=2,
        )
    return result
