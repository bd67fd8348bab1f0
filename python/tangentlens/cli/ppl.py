"""``tangentlens ppl``: Perceptual Path Length of a generator (SPEC §4), also the way NVIDIA's calc_metrics.py
is used: ``--network net.pkl --metrics ppl2_wend,ppl_zfull --jsonl metrics.jsonl --gpus 2``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, get_args

import numpy as np

from tangentlens.cli._common import (
    UsageError,
    add_generator_options,
    add_run_options,
    add_weights_options,
    apply_offline,
    check_output_path,
    generator_from_args,
    load_array,
    run_options,
    write_result,
)
from tangentlens.cli._launch import (
    add_process_options,
    distributed_env,
    init_distributed,
    launch,
    shutdown,
    wanted_processes,
)
from tangentlens.jvp import PRECISIONS
from tangentlens.ppl import NVIDIA_METRICS, PRESETS, Interp

EXAMPLES = """examples:
  tangentlens ppl --network ffhq.pkl --preset stylegan2 --json ppl.json
  tangentlens ppl --network ffhq.pkl --metrics ppl2_wend,ppl_zfull,ppl_wfull,ppl_zend,ppl_wend \\
      --jsonl metric-ppl.jsonl --gpus 2
  tangentlens ppl --generator mypkg.models:make_G --metrics ppl_wend --nproc 2 --num-samples 2000
  torchrun --nproc_per_node 2 -m tangentlens ppl --network ffhq.pkl --metrics ppl2_wend
"""

# the protocol fields an NVIDIA metric name fixes (they cannot be combined with --metrics)
_FIXED_BY_METRIC = ("preset", "space", "sampling", "crop", "resize", "z_interp", "epsilon")


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ppl",
        help="Perceptual Path Length of a generator (SPEC §4); NVIDIA's metric names with --metrics",
        description="Perceptual Path Length of a generator (SPEC §4). Without --preset or --metrics: "
        "tangentlens' protocol (W space, t = 0, the exact JVP, NVIDIA's resize and trimming), 50 000 "
        "samples. The perceptual weights are found or downloaded on first use (docs/lpips.md; --offline "
        "never downloads).",
        epilog=EXAMPLES,
    )
    add_generator_options(p)
    p.add_argument(
        "--metrics",
        metavar="NAME[,NAME...]",
        help="NVIDIA's metric names with calc_metrics.py's configurations: "
        + ", ".join(NVIDIA_METRICS)
        + " (several run in one process, sharing the loaded networks; --jsonl writes NVIDIA's record)",
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="a peer's protocol, number for number (default: tangentlens' own protocol)",
    )
    p.add_argument("--space", choices=["w", "z"], help="latent space of the paths (default: the preset's; w)")
    p.add_argument(
        "--sampling", choices=["end", "full"], help="t = 0 or t ~ U[0, 1] (default: the preset's; end)"
    )
    p.add_argument(
        "--method", choices=["fd", "jvp"], help="finite difference or exact JVP (default: the preset's; jvp)"
    )
    p.add_argument(
        "--z-interp", choices=get_args(Interp), help="path in Z space (default: the preset's; slerp)"
    )
    p.add_argument(
        "--num-samples",
        type=int,
        help="samples to draw (default: the preset's: 50 000 for tangentlens' protocol and the NVIDIA "
        "presets and metrics, 10 000 for torchmetrics; required for torch_fidelity)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help="samples per pass per process (default: the preset's; tangentlens' protocol: 16 on a GPU, on a "
        "CPU chosen from the measured cost of one forward pass)",
    )
    p.add_argument("--distance", default="auto", help="auto, lpips-vgg16, lpips-alex, lpips-squeeze or l2")
    p.add_argument("--epsilon", type=float, help="finite-difference step (default: 1e-4)")
    p.add_argument("--crop", action=argparse.BooleanOptionalAction, default=None, help="NVIDIA's face crop")
    p.add_argument("--resize", help="box256, none, area_or_bilinear:S or bilinear:S (default: the preset's)")
    p.add_argument(
        "--precision",
        choices=(*PRECISIONS, "auto"),
        help="(default: fp32) auto: bf16 for the exact mode where it is native and fast and within bound, "
        "else fp32",
    )
    p.add_argument("--seed", type=int, default=0, help="sample i's latents derive from (seed, i)")
    p.add_argument(
        "--labels",
        metavar="PATH",
        help="conditional generators: label rows [L, c_dim] (.npy, .npz[:KEY] or .pt[:KEY]), one drawn "
        "uniformly per sample (NVIDIA draws the dataset's labels); default: uniform classes",
    )
    p.add_argument(
        "--target-rel-ci", type=float, help="stop when the 95%% CI half-width / mean is below this"
    )
    p.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap replicates of the CI (0: normal approximation)"
    )
    add_weights_options(p, nvidia=True)
    add_run_options(p)
    add_process_options(p)
    p.add_argument(
        "--json",
        metavar="PATH",
        help="write the result (with per-sample distances) to PATH; with --metrics "
        "{'metrics': {name: result}}",
    )
    p.add_argument(
        "--jsonl",
        metavar="PATH",
        help="append NVIDIA's JSONL record per metric to PATH (calc_metrics.py's metric-<name>.jsonl line: "
        "results, metric, total_time, total_time_str, num_gpus, snapshot_pkl, timestamp)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(run=run)


def _metrics(args: argparse.Namespace) -> list[tuple[str | None, str | None, dict[str, Any]]]:
    """``(metric name, preset, protocol fields)`` per run: one per --metrics name, else the options."""
    if args.metrics is None:
        if args.jsonl is not None:
            raise UsageError(
                "--jsonl: NVIDIA's record names one of its metrics: pass --metrics NAME[,NAME...]"
            )
        return [(None, args.preset, dict(space=args.space, sampling=args.sampling))]
    names = [n.strip() for n in args.metrics.split(",") if n.strip()]
    unknown = [n for n in names if n not in NVIDIA_METRICS]
    if unknown or not names:
        raise UsageError(
            f"--metrics: unknown name(s) {unknown or [args.metrics]}; expected a comma list of "
            + ", ".join(NVIDIA_METRICS)
        )
    fixed = [f"--{k.replace('_', '-')}" for k in _FIXED_BY_METRIC if getattr(args, k) is not None]
    if fixed:
        raise UsageError(
            f"--metrics: {', '.join(fixed)} cannot be combined with NVIDIA's metric names, which fix them "
            "(use --preset and the protocol options instead)"
        )
    return [(n, *NVIDIA_METRICS[n]) for n in dict.fromkeys(names)]


def _distance(args: argparse.Namespace, preset: str | None, method: str | None) -> object:
    """The distance every run of this command shares: explicit files, a peer preset's LPIPS (NVIDIA's
    vgg16.pt for the stylegan2 presets), or a name ``ppl`` resolves."""
    from tangentlens.distances import PEER_PRESETS, preset_distance
    from tangentlens.lpips import LPIPS

    protocol = PRESETS.get(preset or "")
    eps_mode = protocol.lpips_eps_mode if protocol is not None else "lpips"
    method = method or (protocol.method if protocol is not None else "jvp")
    if args.nvidia_vgg16 is not None:
        if args.trunk_weights or args.linear_weights or args.distance not in ("auto", "lpips-vgg16"):
            raise UsageError(
                "--nvidia-vgg16: NVIDIA's module is the whole LPIPS-VGG16; do not combine it with "
                "--trunk-weights, --linear-weights or another --distance"
            )
        return LPIPS.from_nvidia_torchscript(args.nvidia_vgg16)
    if args.trunk_weights or args.linear_weights:
        net = {"auto": "vgg16"}.get(args.distance, args.distance.removeprefix("lpips-"))
        if not args.distance.startswith("lpips-") and args.distance != "auto":
            raise UsageError(
                f"--trunk-weights / --linear-weights: an LPIPS distance, not --distance {args.distance}"
            )
        return LPIPS(
            net, trunk_weights=args.trunk_weights, linear_weights=args.linear_weights, eps_mode=eps_mode
        )
    if args.distance == "auto" and preset in PEER_PRESETS:
        return preset_distance(preset, eps_mode=eps_mode, method=method)
    return args.distance


def _format_time(seconds: float) -> str:
    """dnnlib.util.format_time: seconds rounded half to even, then ``45s``, ``3m 05s``, ``2h 03m 05s``,
    ``1d 02h 03m``."""
    s = int(np.rint(seconds))
    if s < 60:
        return f"{s}s"
    if s < 60 * 60:
        return f"{s // 60}m {s % 60:02}s"
    if s < 24 * 60 * 60:
        return f"{s // 3600}h {(s // 60) % 60:02}m {s % 60:02}s"
    return f"{s // 86400}d {(s // 3600) % 24:02}h {(s // 60) % 60:02}m"


def nvidia_record(
    metric: str, value: float, total_time: float, num_gpus: int, snapshot_pkl: str | None
) -> str:
    """One line of NVIDIA's metric JSONL (metric_main.report_metric): the same keys in the same order."""
    record = {
        "results": {metric: value},
        "metric": metric,
        "total_time": total_time,
        "total_time_str": _format_time(total_time),
        "num_gpus": num_gpus,
        "snapshot_pkl": snapshot_pkl,
        "timestamp": time.time(),
    }
    return json.dumps(record)


def _snapshot_pkl(spec: str) -> str:
    """As calc_metrics.py records it: relative to the training run directory (the .pkl's directory when it
    holds training_options.json), else as given."""
    p = Path(spec)
    if spec.endswith(".pkl") and (p.parent / "training_options.json").is_file():
        return os.path.relpath(spec, p.parent)
    return spec


def _checkpoint_for(path: str | None, metric: str | None, several: bool) -> str | None:
    if path is None or not several or metric is None:
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}-{metric}{p.suffix}"))


def run(args: argparse.Namespace) -> int:
    apply_offline(args)
    n = wanted_processes(args)
    env = distributed_env()
    if n > 1 and env is None:
        _check_outputs(args)
        runs = _metrics(args)
        # the weights are found or downloaded once here, not by every process at the same time
        _distance(args, runs[0][1], args.method)
        return launch(n, args.argv)
    if env is not None and env[0] != 0:
        warnings.simplefilter("ignore")  # rank 0 reports the run's warnings
    device = init_distributed(args)
    try:
        return _run(args, device, env)
    finally:
        shutdown()


def _check_outputs(args: argparse.Namespace) -> tuple[Path | None, Path | None]:
    json_path = check_output_path(args.json, "--json")
    jsonl_path = check_output_path(args.jsonl, "--jsonl")
    check_output_path(args.checkpoint, "--checkpoint")
    return json_path, jsonl_path


def _run(args: argparse.Namespace, device: str | None, env: tuple[int, int, int] | None) -> int:
    import torch

    from tangentlens.ppl import ppl

    rank0 = env is None or env[0] == 0
    world = 1 if env is None else env[1]
    json_path, jsonl_path = _check_outputs(args)
    runs = _metrics(args)
    G = generator_from_args(args)
    labels = None
    if args.labels is not None:
        rows = torch.as_tensor(load_array(args.labels, "--labels"))
        labels = rows.float() if rows.dim() == 2 else rows
    distance = _distance(args, runs[0][1], args.method)
    options = run_options(args)
    options["device"] = device
    results = {}
    for metric, preset, fields in runs:
        options["checkpoint"] = _checkpoint_for(args.checkpoint, metric, len(runs) > 1)
        t0 = time.time()
        result = ppl(
            G,
            preset=preset,
            **fields,
            method=args.method,
            z_interp=args.z_interp,
            num_samples=args.num_samples,
            batch_size=args.batch_size,
            distance=distance,
            epsilon=args.epsilon,
            crop=args.crop,
            resize=args.resize,
            precision=args.precision,
            seed=args.seed,
            labels=labels,
            target_rel_ci=args.target_rel_ci,
            bootstrap=args.bootstrap,
            progress=not args.no_progress and rank0,
            **options,  # type: ignore[arg-type]
        )
        total = time.time() - t0
        if not rank0:
            continue
        print(f"{metric}: {result}" if metric else result, flush=True)
        results[metric] = result
        if jsonl_path is not None and metric is not None:
            line = nvidia_record(metric, result.mean, total, world, _snapshot_pkl(args.generator))
            print(line, flush=True)
            with open(jsonl_path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
    if rank0 and json_path is not None:
        if args.metrics is None:
            write_result(results[None].to_json, json_path, "--json")
        else:
            doc = {"metrics": {m: json.loads(r.to_json()) for m, r in results.items()}}
            write_result(lambda path: Path(path).write_text(json.dumps(doc, indent=1)), json_path, "--json")
        print(f"wrote {json_path}", file=sys.stderr)
    return 0
