"""``tangentlens ppl``: Perceptual Path Length of a generator (SPEC §4)."""

from __future__ import annotations

import argparse
import sys
from typing import get_args

from tangentlens.cli._common import load_generator
from tangentlens.jvp import PRECISIONS
from tangentlens.ppl import Interp


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ppl", help="Perceptual Path Length of a generator (SPEC §4)")
    p.add_argument(
        "--generator", required=True, help="file.pkl (NVIDIA StyleGAN2-ADA), module:attr or file.py:attr"
    )
    p.add_argument("--pkl-key", default="G_ema", help="network in the .pkl (default G_ema)")
    p.add_argument(
        "--allow-unsafe-pickle",
        action="store_true",
        help="unpickle with pickle.load (RUNS code from the file)",
    )
    p.add_argument("--preset", choices=["stylegan2", "stylegan2_crop", "torchmetrics", "torch_fidelity"])
    p.add_argument("--space", choices=["w", "z"])
    p.add_argument("--sampling", choices=["end", "full"])
    p.add_argument("--method", choices=["fd", "jvp"])
    p.add_argument("--z-interp", choices=get_args(Interp))
    p.add_argument("--num-samples", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--distance", default="auto", help="auto, lpips-vgg16, lpips-alex, lpips-squeeze or l2")
    p.add_argument("--epsilon", type=float)
    p.add_argument("--crop", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--resize", help="box256, none, area_or_bilinear:S or bilinear:S")
    p.add_argument(
        "--precision",
        choices=(*PRECISIONS, "auto"),
        help="auto: bf16 for the exact mode where it is native and fast and within bound, else fp32",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--z-dim", type=int, help="latent size of a plain callable generator")
    p.add_argument("--output-range", choices=["-1_1", "0_1", "0_255"], help="the generator's image range")
    p.add_argument(
        "--target-rel-ci", type=float, help="stop when the 95%% CI half-width / mean is below this"
    )
    p.add_argument("--checkpoint", help="resume from / write this checkpoint file")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the generator's)")
    p.add_argument("--json", help="write the result (with per-sample distances) to this file")
    p.add_argument("--no-progress", action="store_true")

    def run(args: argparse.Namespace) -> int:
        from tangentlens.generators import as_generator
        from tangentlens.ppl import ppl

        try:
            G = load_generator(args.generator, key=args.pkl_key, allow_unsafe_pickle=args.allow_unsafe_pickle)
        except ValueError as err:
            print(f"tangentlens ppl: {err}", file=sys.stderr)
            return 2
        if args.z_dim is not None or args.output_range is not None:
            G = as_generator(G, z_dim=args.z_dim, output_range=args.output_range)
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
            checkpoint=args.checkpoint,
            progress=not args.no_progress,
            device=args.device,
        )
        print(result)
        if args.json:
            result.to_json(args.json)
            print(f"wrote {args.json}", file=sys.stderr)
        return 0

    p.set_defaults(run=run)
