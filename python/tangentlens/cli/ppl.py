"""``tangentlens ppl``: Perceptual Path Length of a generator (SPEC §4)."""

from __future__ import annotations

import argparse
import sys
from typing import get_args

from tangentlens.cli._common import (
    add_run_options,
    check_output_path,
    load_generator,
    run_options,
    write_result,
)
from tangentlens.jvp import PRECISIONS
from tangentlens.ppl import PRESETS, Interp


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ppl",
        help="Perceptual Path Length of a generator (SPEC §4)",
        description="Perceptual Path Length of a generator (SPEC §4). Without --preset: tangentlens' "
        "protocol (W space, t = 0, the exact JVP, NVIDIA's resize and trimming), 50 000 samples.",
    )
    p.add_argument(
        "--generator", required=True, help="file.pkl (NVIDIA StyleGAN2/3), module:attr or file.py:attr"
    )
    p.add_argument("--pkl-key", default="G_ema", help="network in the .pkl")
    p.add_argument(
        "--allow-unsafe-pickle",
        action="store_true",
        help="unpickle with pickle.load (RUNS code from the file)",
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
        "presets, 10 000 for torchmetrics; required for torch_fidelity)",
    )
    p.add_argument(
        "--batch-size", type=int, help="samples per pass (default: the preset's; 4 on a CPU, 16 on a GPU)"
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
        "--target-rel-ci", type=float, help="stop when the 95%% CI half-width / mean is below this"
    )
    p.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap replicates of the CI (0: normal approximation)"
    )
    add_run_options(p)
    p.add_argument("--json", help="write the result (with per-sample distances) to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    def run(args: argparse.Namespace) -> int:
        from tangentlens.ppl import ppl

        json_path = check_output_path(args.json, "--json")
        check_output_path(args.checkpoint, "--checkpoint")
        G = load_generator(args.generator, key=args.pkl_key, allow_unsafe_pickle=args.allow_unsafe_pickle)
        result = ppl(
            G,
            preset=args.preset,
            space=args.space,
            sampling=args.sampling,
            method=args.method,
            z_interp=args.z_interp,
            num_samples=args.num_samples,
            batch_size=args.batch_size,
            distance=args.distance,
            epsilon=args.epsilon,
            crop=args.crop,
            resize=args.resize,
            precision=args.precision,
            seed=args.seed,
            target_rel_ci=args.target_rel_ci,
            bootstrap=args.bootstrap,
            progress=not args.no_progress,
            **run_options(args),  # type: ignore[arg-type]
        )
        print(result)
        if json_path is not None:
            write_result(result.to_json, json_path, "--json")
            print(f"wrote {json_path}", file=sys.stderr)
        return 0

    p.set_defaults(run=run)
