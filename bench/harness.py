"""Timing primitives shared by every bench case.

A case is a set of variants that do the same work (ours, the peer or baseline); the harness runs them
interleaved, repeat by repeat, so drift of the machine hits all variants alike, and reports medians.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Case:
    """One benchmark: every variant does the same ``work`` units per call."""

    name: str
    variants: dict[str, Callable[[], Any]]
    ours: str
    baseline: str
    work: float = 1.0
    work_unit: str = "call"
    repeats: int = 5
    warmup: int = 1
    meta: dict[str, Any] = field(default_factory=dict)
    # Bytes the job must move at least (reads + writes), for the "fraction of the floor" column.
    floor_bytes: float | None = None
    # The physical floor in seconds on this machine, where the case can measure it (e.g. writing floor_bytes).
    floor_seconds: Callable[[], float] | None = None
    check: Callable[[], None] | None = None
    # Work units per variant where one does a measured fraction of the job (e.g. a baseline timed on some
    # rows of a Hessian and extrapolated linearly): speed-up and throughput then compare time per unit.
    variant_work: dict[str, float] | None = None
    # Adds derived figures to the finished result (e.g. PPL's time to a +-1 % CI from the medians and the
    # check's pilot), in place.
    summarize: Callable[[dict[str, Any]], None] | None = None


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device | None = None) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def run_case(case: Case, device: torch.device | None = None, deadline: float | None = None) -> dict[str, Any]:
    """Check, warm up, then ``case.repeats`` interleaved rounds of every variant; with a ``deadline``
    (``time.perf_counter()`` value), no round starts that the previous rounds say would end after it (at
    least one round runs)."""
    if case.check is not None:
        case.check()
    for _ in range(case.warmup):
        for fn in case.variants.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in case.variants}
    rounds = 0
    t_start = time.perf_counter()
    for _ in range(case.repeats):
        per_round = (time.perf_counter() - t_start) / max(rounds, 1)
        if deadline is not None and rounds > 0 and time.perf_counter() + per_round > deadline:
            break
        for label, fn in case.variants.items():
            times[label].append(time_call(fn, device))
        rounds += 1
    med = {k: statistics.median(v) for k, v in times.items()}
    work = {k: (case.variant_work or {}).get(k, case.work) for k in case.variants}
    per_unit = {k: med[k] / work[k] for k in med}
    result: dict[str, Any] = {
        "name": case.name,
        "ours": case.ours,
        "baseline": case.baseline,
        "repeats": rounds,
        "work": case.work,
        "work_unit": case.work_unit,
        "median_s": med,
        "all_s": times,
        "throughput_per_s": {k: work[k] / v for k, v in med.items()},
        "speedup_vs_baseline": per_unit[case.baseline] / per_unit[case.ours],
        "meta": case.meta,
    }
    if case.variant_work is not None:
        result["variant_work"] = work
    if rounds < case.repeats:
        result["repeats_cut_by_budget"] = case.repeats
    if case.floor_bytes is not None:
        result["floor_bytes"] = case.floor_bytes
        result["achieved_GBps"] = case.floor_bytes / med[case.ours] / 1e9
    if case.floor_seconds is not None:
        floor = statistics.median(case.floor_seconds() for _ in range(case.repeats))
        result["floor_s"] = floor
        result["fraction_of_floor"] = floor / med[case.ours]
    if case.summarize is not None:
        case.summarize(result)
    return result
