"""``tangentlens metrics``: disentanglement metrics (SPEC §7) of saved codes and factors."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from typing import Any

from tangentlens.cli._common import UsageError, check_output_path, load_array, write_result

#: name -> (needs a train / test split, needs scikit-learn)
METRICS: dict[str, tuple[bool, bool]] = {
    "mig": (False, False),
    "sap": (True, True),
    "dci": (True, True),
    "modularity": (False, False),
    "explicitness": (True, True),
    "irs": (False, False),
    "unsupervised": (False, False),
}

EXAMPLES = """examples:
  tangentlens metrics --codes codes.npy --factors factors.npy --json scores.json
  tangentlens metrics --codes train.npz:codes --factors train.npz:factors \\
      --codes-test test.npz:codes --factors-test test.npz:factors --metrics mig,sap,dci
"""


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "metrics",
        help="disentanglement metrics (MIG, SAP, DCI, modularity, explicitness, IRS, unsupervised) of saved "
        "codes and factors",
        description="Disentanglement metrics with disentanglement_lib's semantics (SPEC §7, docs/metrics.md) "
        "of saved arrays: codes [N, C] (the representation, usually the encoder mean) and factors [N, F] "
        "(ground-truth factor values, taken as discrete labels). Arrays: .npy, .npz (PATH with one array, "
        "or PATH:KEY) or .pt (torch.load with weights_only=True; PATH:KEY for a dict). SAP, DCI and "
        "explicitness train classifiers: on --codes/--factors, evaluated on --codes-test/--factors-test, "
        "or without them on a seeded hold-out of --test-fraction of the rows.",
        epilog=EXAMPLES,
    )
    p.add_argument("--codes", required=True, metavar="PATH", help="codes [N, C]")
    p.add_argument("--factors", metavar="PATH", help="factors [N, F] (all but 'unsupervised' need them)")
    p.add_argument("--codes-test", metavar="PATH", help="held-out codes [M, C]")
    p.add_argument("--factors-test", metavar="PATH", help="held-out factors [M, F]")
    p.add_argument(
        "--metrics",
        default=",".join(METRICS),
        metavar="NAME[,NAME...]",
        help="which metrics",
    )
    p.add_argument("--num-bins", type=int, default=20, help="histogram bins per code (MI-based metrics)")
    p.add_argument(
        "--continuous-factors",
        action="store_true",
        help="SAP on squared correlations (continuous factors) instead of per-code classifiers",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        default=1 / 3,
        help="without --codes-test: the share of rows held out (a seeded permutation)",
    )
    p.add_argument("--seed", type=int, default=0, help="random_state of the hold-out and the classifiers")
    p.add_argument("--n-jobs", type=int, help="DCI: fit the per-factor classifiers in parallel")
    p.add_argument("--json", metavar="PATH", help="write the scores and the configuration to PATH")
    p.set_defaults(run=run)


def _selected(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise UsageError(
            f"--metrics: unknown {unknown or [text]}; expected a comma list of {', '.join(METRICS)}"
        )
    return list(dict.fromkeys(names))


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from tangentlens.metrics import classes as C
    from tangentlens.metrics import functional as F

    json_path = check_output_path(args.json, "--json")
    names = _selected(args.metrics)
    if (args.codes_test is None) != (args.factors_test is None):
        raise UsageError("--codes-test and --factors-test go together")
    if any(METRICS[n][1] for n in names) and importlib.util.find_spec("sklearn") is None:
        needs = [n for n in names if METRICS[n][1]]
        raise UsageError(
            f"--metrics {','.join(needs)}: needs scikit-learn (pip install 'tangentlens[metrics]'), or "
            "choose "
            f"--metrics {','.join(n for n in names if not METRICS[n][1]) or 'mig'}"
        )
    codes = load_array(args.codes, "--codes")
    factors = load_array(args.factors, "--factors") if args.factors is not None else None
    if factors is None and any(n != "unsupervised" for n in names):
        raise UsageError(
            "--factors: the supervised metrics need the factors (or choose --metrics unsupervised)"
        )
    split = args.codes_test is not None
    ct = load_array(args.codes_test, "--codes-test") if split else None
    ft = load_array(args.factors_test, "--factors-test") if split else None
    hold_out = dict(test_fraction=args.test_fraction, random_state=args.seed)
    scores: dict[str, Any] = {}
    for name in names:
        if name == "mig":
            scores[name] = F.mig(codes, factors, num_bins=args.num_bins)
        elif name == "modularity":
            scores[name] = F.modularity(codes, factors, num_bins=args.num_bins)
        elif name == "irs":
            scores[name] = F.irs(codes, factors, num_bins=args.num_bins)
        elif name == "unsupervised":
            scores[name] = F.unsupervised_scores(codes, num_bins=args.num_bins)
        elif name == "sap" and (split or args.continuous_factors):
            scores[name] = F.sap(codes, factors, ct, ft, continuous_factors=args.continuous_factors)
        elif name == "dci" and split:
            scores[name] = F.dci(codes, factors, ct, ft, random_state=args.seed, n_jobs=args.n_jobs).as_dict()
        elif name == "explicitness" and split:
            scores[name] = F.explicitness(codes, factors, ct, ft).as_dict()
        else:  # the classes hold out --test-fraction of the rows (a seeded permutation)
            metric = {
                "sap": lambda: C.SAP(**hold_out),
                "dci": lambda: C.DCI(n_jobs=args.n_jobs, **hold_out),
                "explicitness": lambda: C.Explicitness(**hold_out),
            }[name]()
            metric.update(codes, factors)
            value = metric.compute()
            scores[name] = value.as_dict() if hasattr(value, "as_dict") else value
    for name, value in scores.items():
        if isinstance(value, dict):
            for key, v in value.items():
                print(f"{name}.{key}: {v:.6g}")
        else:
            print(f"{name}: {value:.6g}")
    config = {
        "codes": args.codes,
        "factors": args.factors,
        "rows": int(np.asarray(codes).shape[0]),
        "test": (
            {"codes": args.codes_test, "factors": args.factors_test, "rows": int(np.asarray(ct).shape[0])}
            if split
            else {"held_out_fraction": args.test_fraction, "seed": args.seed}
        ),
        "num_bins": args.num_bins,
        "continuous_factors": args.continuous_factors,
        "seed": args.seed,
    }
    if json_path is not None:
        doc = {"scores": scores, "config": config}
        write_result(lambda path: path.write_text(json.dumps(doc, indent=1)), json_path, "--json")
        print(f"wrote {json_path}", file=sys.stderr)
    return 0
