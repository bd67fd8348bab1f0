"""``ppl`` and ``ppl_distances``: resolving a protocol, a generator and a distance into an engine (the
CPU batch, precision="auto", the finite-difference warnings), then streaming the samples."""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tangentlens import _streaming, ops
from tangentlens._checks import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_positive,
    check_tensor,
    check_u64,
    check_u64_range,
)
from tangentlens.bf16 import auto_precision, native_bf16
from tangentlens.distances import (
    evaluate,
)
from tangentlens.generators.adapters import GeneratorAdapter, OutputRange, adapt
from tangentlens.generators.outputs import (
    RangeMonitor,
)
from tangentlens.lpips import LPIPS, NvidiaTorchScriptLPIPS, unchecked_range
from tangentlens.ppl.engine import _describe_distance, _Engine, _Pipeline, _resolve_distance
from tangentlens.ppl.protocol import (
    AUTO_BF16_MAX_ERROR,
    AUTO_BF16_PROBE_SAMPLES,
    AUTO_BF16_PROBE_SEED,
    CPU_BATCH_MAX,
    CPU_BATCH_SECONDS,
    CPU_BATCH_SIZE,
    DEFAULT,
    PRESETS,
    FiniteDifferenceWarning,
    Interp,
    Method,
    PPLPrecision,
    PPLProtocol,
    Sampling,
    Space,
    _check_protocol_overrides,
)
from tangentlens.ppl.result import PPLResult
from tangentlens.ppl.statistics import bootstrap_ci, trim, trimmed_stats


def _seconds_per_sample(engine: _Engine, seed: int) -> float:
    """Seconds per sample of one forward pass (generator, image pipeline, distance) on CPU_BATCH_SIZE
    samples, timed after a warm-up pass (first calls pay one-off set-up)."""
    gen, n = engine.gen, CPU_BATCH_SIZE
    z = ops.philox_normal(seed, 0, n, gen.z_dim, dtype=gen.dtype, device=engine.device)
    c = gen.labels(seed, 0, n, None, engine.device)
    noise = gen.noise(seed, 0, n, engine.device)
    elapsed = math.inf
    for _ in range(2):
        t0 = time.perf_counter()
        with torch.no_grad(), unchecked_range():
            img = gen.image(gen.transform_z(z), c, noise, "z")
            x = engine.pipe.linear(img.to(torch.float32) if not img.is_floating_point() else img)
            evaluate(engine.distance, x, x)
        elapsed = time.perf_counter() - t0
    return elapsed / n


def _auto_cpu_batch(engine: _Engine, seed: int, checkpoint: str | Path | None, config: dict[str, Any]) -> int:
    """The default protocol's CPU batch (see CPU_BATCH_SECONDS), the same on every rank (rank 0's) and the
    checkpoint's when resuming one (a batch size changes the distances at float rounding)."""
    saved = _streaming.checkpoint_batch_size(checkpoint) if checkpoint is not None else None
    if saved is not None:
        config["batch_size_auto"] = {"batch_size": saved, "from_checkpoint": str(checkpoint)}
        return saved
    per_sample = _seconds_per_sample(engine, seed)
    fits = CPU_BATCH_SECONDS / per_sample if per_sample > 0 else math.inf
    bs = CPU_BATCH_SIZE
    while bs * 2 <= min(fits, CPU_BATCH_MAX):
        bs *= 2
    bs = _streaming.broadcast_int(bs)
    config["batch_size_auto"] = {
        "batch_size": bs,
        "seconds_per_sample": per_sample,
        "target_seconds_per_pass": CPU_BATCH_SECONDS,
    }
    return bs


_LOW_PRECISION = {torch.float16: "fp16", torch.bfloat16: "bf16"}


def _warn_fd(protocol: PPLProtocol, gen: GeneratorAdapter, notes: list[str]) -> None:
    """Finite differences at eps = 1e-4 need the full float32 mantissa (SPEC 4)."""
    if protocol.method != "fd":
        return
    low = _LOW_PRECISION.get(gen.param_dtype)  # type: ignore[arg-type]
    if protocol.precision in ("fp16", "bf16") or low is not None:
        what = (
            f"precision={protocol.precision!r}"
            if low is None
            else f"a {str(gen.param_dtype).removeprefix('torch.')} generator (its parameters)"
        )
        raise ValueError(
            f"{what} with method='fd': finite differences at epsilon={protocol.epsilon:g} cancel "
            f"catastrophically in {low or protocol.precision} (errors of 10^2-10^4x per sample); use "
            "method='jvp', which has no cancellation"
            + ("" if low is None else ", or the generator in float32 (.float())")
        )
    reasons = []
    if protocol.precision == "tf32":
        reasons.append(
            (
                "TF32 convolutions/matmuls (10-bit mantissa) make eps=1e-4 differences ~100x off",
                "method='jvp' computes the exact limit",
            )
        )
    if protocol.quantize_uint8:
        reasons.append(
            (
                "uint8 images round away most of an eps=1e-4 step (distances ~37-118x off)",
                "method='jvp' computes the exact limit; it needs float images from the generator: a uint8 "
                "output has no derivative",
            )
        )
    for why, fix in reasons:
        msg = f"method='fd': {why}; this reproduces the protocol {protocol.name!r}, not the path length"
        notes.append(msg)
        warnings.warn(f"{msg} ({fix})", FiniteDifferenceWarning, stacklevel=3)


def _resolve(
    generator: object,
    preset: str | None,
    overrides: Mapping[str, Any],
    distance: object,
    device: torch.device | str | None,
    *,
    z_dim: int | None = None,
    output_range: OutputRange | None = None,
    check_range: bool = True,
    z_dim_hint: int | None = None,
) -> tuple[_Engine, dict[str, Any]]:
    if preset is not None:
        check_choice(preset, "preset", [None, *sorted(PRESETS)])
    check_bool(check_range, "check_range")
    protocol = PRESETS[preset] if preset is not None else DEFAULT
    given = _check_protocol_overrides({k: v for k, v in overrides.items() if v is not None})
    protocol = replace(protocol, **given)
    if protocol.name == "torchmetrics" and protocol.sampling != "end":
        raise ValueError("sampling: the torchmetrics protocol only defines 'end' (t = 0)")
    gen = adapt(generator, z_dim=z_dim, output_range=output_range, z_dim_hint=z_dim_hint)
    if isinstance(gen.module, nn.Module):
        gen.module.eval()
    dev = torch.device(device) if device is not None else gen.device
    if isinstance(gen.module, nn.Module) and gen.device != dev:
        gen.module.to(dev)
    if preset is None and "batch_size" not in given and dev.type == "cpu":
        protocol = replace(protocol, batch_size=CPU_BATCH_SIZE)
    if protocol.space == "w" and not gen.has_w:
        raise ValueError(f"space='w': the generator ({gen.kind}) has no mapping network; use space='z'")
    dist = _resolve_distance(distance, protocol, dev, preset)
    notes: list[str] = []
    requested = protocol.precision
    if requested == "auto" and protocol.method == "fd":
        protocol = replace(protocol, precision="fp32")
        notes.append("precision='auto': fp32 (finite differences need the full float32 mantissa)")
    _warn_fd(protocol, gen, notes)
    if protocol.method == "jvp" and protocol.quantize_uint8:
        notes.append("method='jvp': the uint8 quantisation has no derivative and is left out (exact limit)")
    if protocol.method == "jvp" and "epsilon" in given:
        notes.append(
            f"epsilon={given['epsilon']:g}: unused, method='jvp' computes the eps -> 0 limit (no step)"
        )
    if protocol.precision == "tf32" and dev.type != "cuda":
        notes.append(f"precision='tf32' on {dev.type}: tensor-core rounding emulated (tangentlens.tf32)")
    if protocol.precision == "bf16" and dev.type == "cpu" and not native_bf16(dev):
        notes.append(
            "precision='bf16' on a CPU without native bf16 kernels: bf16 arithmetic emulated by float32 "
            "kernels (tangentlens.bf16): native bf16's numbers, not its speed"
        )
    resolution = getattr(gen.module, "img_resolution", None)
    float_dtype = gen.dtype if gen.dtype == torch.float64 else torch.float32
    if isinstance(dist, nn.Module) and not isinstance(dist, LPIPS):
        float_dtype = next((t.dtype for t in dist.buffers() if t.is_floating_point()), float_dtype)
    elif isinstance(dist, LPIPS):
        float_dtype = dist.lin0.dtype if gen.dtype != torch.float64 else torch.float64
    rgb = isinstance(dist, (LPIPS, NvidiaTorchScriptLPIPS)) or hasattr(dist, "net")
    pipe = _Pipeline(
        protocol,
        gen.output_range,
        resolution,
        rgb=rgb,
        float_dtype=float_dtype,
        monitor=RangeMonitor(gen.output_range, check_range, notes),
    )
    engine = _Engine(gen, protocol, dist, pipe, dev, notes)
    described = {"generator": gen.describe(), "distance": _describe_distance(dist)}
    if protocol.precision == "auto":
        key = (
            described["generator"]["fingerprint"],
            described["distance"].get("fingerprint", described["distance"]["name"]),
            str(dev),
            replace(protocol, num_samples=None, batch_size=1),
        )
        engine = _resolve_auto(engine, notes, key)
    config = asdict(engine.protocol)
    config["precision_requested"] = requested
    low = _LOW_PRECISION.get(gen.param_dtype)  # type: ignore[arg-type]
    if low is not None and engine.protocol.precision == "fp32":
        config["precision"] = low
        notes.append(
            f"precision: the generator's parameters are {str(gen.param_dtype).removeprefix('torch.')}, so "
            f"it runs in {low}; the images are taken to float32 for the distance"
        )
    config["preset"] = preset or "tangentlens (default)"
    config.update(described)
    config["notes"] = notes
    return engine, config


def _check_t(t: object, n: int) -> torch.Tensor:
    """Path positions: a number or a tensor of 1 or N values, finite, in [0, 1] -> float64 [N]."""
    if isinstance(t, bool) or not isinstance(t, (int, float, torch.Tensor)):
        raise TypeError(
            f"t: expected a number or a tensor [N={n}] of positions in [0, 1], got {type(t).__name__}"
        )
    tt = torch.as_tensor(t).detach()
    if tt.is_complex() or tt.dtype == torch.bool or tt.numel() not in (1, n) or tt.dim() > 1:
        raise ValueError(
            f"t: expected a number or a tensor [N={n}] of positions in [0, 1], got shape {tuple(tt.shape)} "
            f"({tt.dtype})"
        )
    tt = tt.to(torch.float64).reshape(-1).expand(n)
    bad = ~torch.isfinite(tt) | (tt < 0) | (tt > 1)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        raise ValueError(
            f"t: expected positions in [0, 1], got {float(tt[i])!r} for sample {i}"
            + (f" (and {int(bad.sum()) - 1} more)" if int(bad.sum()) > 1 else "")
        )
    return tt


def _check_rows(x: object, name: str, n: int) -> None:
    if x is None:
        return
    tensors = [x] if isinstance(x, torch.Tensor) else x
    if not isinstance(tensors, (list, tuple)) or not all(isinstance(v, torch.Tensor) for v in tensors):
        raise TypeError(
            f"{name}: expected {'a tensor' if name == 'labels' else 'a list of tensors'} with "
            f"{n} rows, got {type(x).__name__}"
        )
    for i, v in enumerate(tensors):
        if v.dim() == 0 or v.shape[0] != n:
            where = name if isinstance(x, torch.Tensor) else f"{name}[{i}]"
            raise ValueError(f"{where}: expected {n} rows (one per sample), got shape {tuple(v.shape)}")


# precision="auto" decisions of this process, per (generator, distance, device, protocol)
_AUTO_DECISIONS: dict[tuple, tuple[str, str]] = {}


def _resolve_auto(engine: _Engine, notes: list[str], key: tuple) -> _Engine:
    """precision="auto" for the exact mode: bf16 where :func:`tangentlens.bf16.auto_precision` finds it native
    and fast and ``AUTO_BF16_PROBE_SAMPLES`` probe samples of this model (fixed seed) computed in bf16 and
    in float32 differ by at most ``AUTO_BF16_MAX_ERROR`` (median per-sample relative error); float32
    otherwise. Decided once per process for a generator, distance (by their fingerprints), device and
    protocol; under torch.distributed every rank takes rank 0's decision."""
    if key in _AUTO_DECISIONS:
        choice, reason = _AUTO_DECISIONS[key]
        notes.append(f"precision='auto': {choice} ({reason}; decided earlier in this process)")
        return replace(engine, protocol=replace(engine.protocol, precision=choice))
    choice, reason = auto_precision(engine.device)
    if choice == "bf16":
        n, d = AUTO_BF16_PROBE_SAMPLES, {}
        for prec in ("fp32", "bf16"):
            probe = replace(engine, protocol=replace(engine.protocol, precision=prec))
            d[prec] = probe.sample_distances(AUTO_BF16_PROBE_SEED, 0, n)
        err = float(((d["bf16"] - d["fp32"]).abs() / d["fp32"].abs()).median())
        within = err <= AUTO_BF16_MAX_ERROR
        choice = "bf16" if within else "fp32"
        reason += (
            f"; {n} probe samples of this model: bf16 {100 * err:.2g} % from float32 (median), "
            f"{'within' if within else 'beyond'} the {100 * AUTO_BF16_MAX_ERROR:g} % bound"
        )
    if _streaming._dist()[1] > 1:
        choice, reason = _streaming._all_gather_json([choice, reason], engine.device)[0]
    _AUTO_DECISIONS[key] = (choice, reason)
    notes.append(f"precision='auto': {choice} ({reason})")
    return replace(engine, protocol=replace(engine.protocol, precision=choice))


def ppl_distances(
    generator: object,
    z0: torch.Tensor,
    z1: torch.Tensor,
    t: torch.Tensor | float = 0.0,
    *,
    preset: str | None = None,
    space: Space | None = None,
    method: Method | None = None,
    z_interp: Interp | None = None,
    distance: object = "auto",
    epsilon: float | None = None,
    crop: bool | None = None,
    resize: str | int | None = None,
    precision: PPLPrecision | None = None,
    labels: torch.Tensor | None = None,
    noise: Sequence[torch.Tensor] | None = None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    z_dim: int | None = None,
    output_range: OutputRange | None = None,
    check_range: bool = True,
) -> torch.Tensor:
    """Per-sample path lengths [N] (float64) for EXPLICIT latents ``z0, z1 [N, z_dim]`` and positions ``t``
    (a float or [N], in [0, 1]); ``labels`` and ``noise`` are given per sample or omitted (no labels;
    constant noise). With a preset and the peer's latents this replays the peer's samples one for one: the
    path points are computed with the peer's own arithmetic (``PPLProtocol.replay``). ``z_dim`` /
    ``output_range``: for plain callables (default: z0's width, ``"-1_1"``); ``check_range``: see
    :func:`ppl`."""
    for name, z in (("z0", z0), ("z1", z1)):
        check_tensor(z, name, ndim=2, shape="[N, z_dim]", floating=True, finite=True)
    if z0.shape != z1.shape:
        raise ValueError(f"z1: expected the shape of z0 {tuple(z0.shape)}, got {tuple(z1.shape)}")
    n = z0.shape[0]
    tt = _check_t(t, n)
    _check_rows(labels, "labels", n)
    _check_rows(noise, "noise", n)
    if batch_size is not None:
        check_int(batch_size, "batch_size", 1)
    engine, _ = _resolve(
        generator,
        preset,
        dict(
            space=space,
            method=method,
            z_interp=z_interp,
            epsilon=epsilon,
            crop=crop,
            resize=resize,
            precision=precision,
        ),
        distance,
        device,
        z_dim=z_dim,
        output_range=output_range,
        check_range=check_range,
        z_dim_hint=z0.shape[1],
    )
    if z0.shape[1] != engine.gen.z_dim:
        raise ValueError(f"z0: expected z_dim = {engine.gen.z_dim} columns, got {z0.shape[1]}")
    tt = tt.to(engine.device)
    bs = batch_size or engine.protocol.batch_size
    dt = engine.gen.param_dtype or z0.dtype
    out = []
    for s in range(0, n, bs):
        sl = slice(s, min(n, s + bs))
        c = labels[sl].to(engine.device) if labels is not None else None
        nz = [x[sl].to(engine.device, dt) for x in noise] if noise is not None else None
        out.append(
            engine.distances(z0[sl].to(engine.device, dt), z1[sl].to(engine.device, dt), tt[sl], c, nz, s)
        )
    return torch.cat(out).cpu()


def ppl(
    generator: object,
    *,
    preset: str | None = None,
    space: Space | None = None,
    sampling: Sampling | None = None,
    method: Method | None = None,
    num_samples: int | None = None,
    batch_size: int | None = None,
    distance: object = "auto",
    epsilon: float | None = None,
    crop: bool | None = None,
    resize: str | int | None = None,
    precision: PPLPrecision | None = None,
    z_interp: Interp | None = None,
    seed: int = 0,
    labels: torch.Tensor | Callable | None = None,
    target_rel_ci: float | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: float = 60.0,
    bootstrap: int = 1000,
    progress: bool = True,
    device: torch.device | str | None = None,
    z_dim: int | None = None,
    output_range: OutputRange | None = None,
    check_range: bool = True,
    resume_unverified: bool = False,
) -> PPLResult:
    """Perceptual Path Length of ``generator`` (any object :func:`tangentlens.generators.as_generator`
    accepts).

    Args:
        preset: ``None`` (tangentlens' protocol: W, end, exact JVP, NVIDIA's resize and trimming, per-sample
            noise) or a peer's: ``"stylegan2"`` (NVIDIA ppl2_wend), ``"stylegan2_crop"``
            (ppl_{z,w}{full,end}), ``"stylegan3"`` (NVIDIA stylegan3's ppl2_wend), ``"torchmetrics"``,
            ``"torch_fidelity"``. Arguments given explicitly
            override the preset.
        space, sampling, method, epsilon, crop, resize, precision, z_interp: the protocol (SPEC 4); ``method``
            ``"jvp"`` is the exact eps -> 0 limit, ``"fd"`` the peers' finite difference. ``precision``
            ``"fp32"`` (default), ``"tf32"``, ``"fp16"``, ``"bf16"`` (the exact mode only; emulated on CPUs
            without native bf16) or ``"auto"``: bf16 for the exact mode where it is native and fast and
            probe samples of this model stay within ``AUTO_BF16_MAX_ERROR`` of float32, else fp32; the
            result's ``config["precision"]`` says what ran and ``config["notes"]`` why. ``z_interp`` (Z
            space): ``"slerp"`` (unit vectors, NVIDIA / torch-fidelity), ``"lerp"``, ``"slerp_any"``
            (torchmetrics': slerp of the raw vectors, their norm interpolated) or ``"slerp_any_unit"``
            (that path normalised: torchmetrics' ``"slerp_unit"``).
        num_samples: samples to draw (the maximum with ``target_rel_ci``).
        batch_size: samples per forward pass. Default: the preset's, and for tangentlens' protocol 16 on a
            GPU; on a CPU the largest power of two in [4, 256] whose forward pass (generator and distance,
            timed once on 4 samples) takes at most ``CPU_BATCH_SECONDS`` (the config records the choice as
            ``batch_size_auto``; a resumed checkpoint keeps its batch). Each sample's inputs do not
            depend on it, but the kernels round differently per batch shape: other batch sizes agree to
            float rounding (about 1e-4 relative per sample in float32), the same batch size bit for bit
            (also on resume, and on any number of processes at that batch per process).
        distance: ``"auto"`` (LPIPS-VGG16 when its weights are found, else pixels with a warning),
            ``"lpips-vgg16"``, ``"l2"``, an LPIPS module or a callable ``d(x0, x1) -> [N]``.
        seed: sample i's latents, t, labels and noise derive from (seed, i) only, whatever the batch size,
            the number of processes or a resume.
        labels: conditional generators: None (uniform classes), a tensor [L, c_dim] of labels to draw from
            (e.g. the dataset's), or ``labels(indices) -> [n, ...]``.
        target_rel_ci: stop once the 95 % CI half-width (normal approximation on the trimmed mean) is below
            this fraction of the mean; checked every 1000 samples and cut there.
        checkpoint: file to resume from and to write atomically every ``checkpoint_every`` seconds. It
            refuses to resume a different run: the protocol, the seed, and fingerprints of the generator
            (a module's parameters and buffers; a function's code, constants, defaults and closure) and of
            the distance must match. ``resume_unverified=True`` resumes when a fingerprint cannot be
            computed reliably (the result's config says why); otherwise that is refused too.
        bootstrap: bootstrap replicates for the reported CI (trimming re-applied in each); 0 gives the
            normal approximation ``mean +- 1.96 sem`` instead.
        progress: a progress bar with samples/s and the running mean +- CI (rank 0).
        device: where to run (default: the generator's device).
        z_dim, output_range: for a plain callable ``z -> images`` (its latent size; its image range
            ``"-1_1"`` (default), ``"0_1"`` or ``"0_255"``), as :func:`tangentlens.generators.as_generator`.
        check_range: compare the images with the declared range (values far outside it; on the first batch
            images never negative under ``"-1_1"``, and the like) and warn once per run saying what each fix
            would change; False silences it. It never stops a run.

    Under finite differences the first batch is computed twice: a generator whose images differ for the
    same latents (noise drawn inside its forward) is refused, since eps = 1e-4 steps would measure its
    randomness. Quantised images (uint8) under ``method="fd"``, and tangents that are exactly 0 under
    ``method="jvp"``, give one warning each.

    Under torch.distributed (torchrun), every rank calls this with the same arguments; sample ranges are
    sharded over ranks, distances gathered, and every rank returns the same result.
    """
    engine, config = _resolve(
        generator,
        preset,
        dict(
            space=space,
            sampling=sampling,
            method=method,
            epsilon=epsilon,
            crop=crop,
            resize=resize,
            precision=precision,
            z_interp=z_interp,
            batch_size=batch_size,
            num_samples=num_samples,
        ),
        distance,
        device,
        z_dim=z_dim,
        output_range=output_range,
        check_range=check_range,
    )
    if preset is None and batch_size is None and engine.device.type == "cpu":
        engine.protocol = replace(
            engine.protocol, batch_size=_auto_cpu_batch(engine, seed, checkpoint, config)
        )
        config["batch_size"] = engine.protocol.batch_size
    p = engine.protocol
    if p.num_samples is None:
        raise ValueError(f"num_samples: the preset {preset!r} has no default; pass num_samples")
    n_total, bs = p.num_samples, p.batch_size
    check_int(n_total, "num_samples", 2)  # a CI needs two samples
    check_u64(seed, "seed")
    check_u64_range(0, n_total, "num_samples")
    check_int(bootstrap, "bootstrap", 0)
    checkpoint_every = check_number(checkpoint_every, "checkpoint_every", 0)
    check_bool(resume_unverified, "resume_unverified")
    if target_rel_ci is not None:
        check_positive(target_rel_ci, "target_rel_ci")
    if labels is not None and engine.gen.label_kind == "none":
        raise ValueError(f"labels: the generator ({engine.gen.kind}) is unconditional, got labels")
    config["seed"] = seed
    config["labels"] = (
        "uniform classes"
        if labels is None
        else ("given rows" if isinstance(labels, torch.Tensor) else "callable")
    )
    dev = engine.device

    def compute(start: int, count: int) -> dict[str, torch.Tensor]:
        return {"distance": engine.sample_distances(seed, start, count, labels)}

    keep = (p.lower, p.upper)

    def postfix(rows: dict[str, torch.Tensor], n: int) -> str:
        st = trimmed_stats(rows["distance"], *keep)
        return f"ppl {st['mean']:.4g} +- {1.96 * st['sem']:.2g}"

    def stop(rows: dict[str, torch.Tensor], n: int) -> bool:
        st = trimmed_stats(rows["distance"], *keep)
        return n > 1 and 1.96 * st["sem"] <= target_rel_ci * abs(st["mean"])  # type: ignore[operator]

    # what determines the rows (a checkpoint must match it); num_samples may grow on resume
    ckpt_config = {k: v for k, v in config.items() if k not in ("num_samples", "notes", "batch_size_auto")}
    ckpt_config["generator"] = {k: v for k, v in config["generator"].items() if k != "notes"}
    # where the weights were found may change between runs (downloaded, then cached); the fingerprint stays
    ckpt_config["distance"] = {k: v for k, v in config["distance"].items() if k not in ("weights", "label")}
    unverified = [
        f"{what}: {part['fingerprint_unverified']}"
        for what, part in (("generator", config["generator"]), ("distance", config["distance"]))
        if "fingerprint_unverified" in part
    ]
    res = _streaming.stream(
        compute,
        num_samples=n_total,
        batch_size=bs,
        config=ckpt_config,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        progress=progress,
        desc=f"ppl ({config['preset']}, {p.method})",
        postfix=postfix,
        stop=stop if target_rel_ci is not None else None,
        device=dev,
        unverified=unverified,
        resume_unverified=resume_unverified,
    )
    d = res.rows["distance"]
    st = trimmed_stats(d, *keep)
    if bootstrap > 0:
        lo_ci, hi_ci = bootstrap_ci(d, *keep, replicates=bootstrap, seed=seed)
    else:  # the normal approximation on the winsorised standard error
        lo_ci, hi_ci = st["mean"] - 1.96 * st["sem"], st["mean"] + 1.96 * st["sem"]
    kept, _, _ = trim(d, *keep)
    config["num_samples"] = n_total
    config["target_rel_ci"] = target_rel_ci
    config["device"] = str(dev)
    config["world_size"] = _streaming._dist()[1]
    config["bootstrap"] = bootstrap
    config["notes"] = engine.notes  # with what the run itself found (range, determinism, quantisation)
    config = json.loads(json.dumps(config, default=str))  # JSON-plain (tuples -> lists), as from_json gives
    return PPLResult(
        mean=st["mean"],
        std=st["std"],
        sem=st["sem"],
        ci_low=lo_ci,
        ci_high=hi_ci,
        num_samples=res.num_done,
        num_kept=st["num_kept"],
        lo=st["lo"],
        hi=st["hi"],
        distances=d,
        kept=torch.from_numpy(kept),
        config=config,
        stopped_early=res.stopped_early,
        resumed_from=res.resumed_from,
        seconds=res.seconds,
    )
