"""Markdown summary of bench/results/*.json (``python -m bench.report``), for the README."""

from __future__ import annotations

import glob
import json
import os
import sys

from bench.run import RESULTS_DIR


def _fmt_s(x: float) -> str:
    return f"{x * 1e3:.1f} ms" if x < 1 else f"{x:.2f} s"


def table(path: str) -> str:
    with open(path) as f:
        doc = json.load(f)
    lines = [
        f"`{os.path.basename(path)}`",
        "",
        "| case | ours | baseline | ours (median) | baseline (median) | speed-up | throughput | floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in sorted(doc["cases"]):
        r = doc["cases"][name]
        med = r["median_s"]
        thr = r["throughput_per_s"][r["ours"]]
        floor = ""
        if "fraction_of_floor" in r:
            floor = f"{100 * r['fraction_of_floor']:.0f}% of floor"
            if "achieved_GBps" in r:
                floor += f" ({r['achieved_GBps']:.1f} GB/s of floor bytes)"
        ours, base = _fmt_s(med[r["ours"]]), _fmt_s(med[r["baseline"]])
        lines.append(
            f"| {name} | {r['ours']} | {r['baseline']} | {ours} | {base} "
            f"| ×{r['speedup_vs_baseline']:.2f} | {thr:,.0f} {r['work_unit']}/s | {floor} |"
        )
    return "\n".join(lines)


def main() -> int:
    paths = sorted(glob.glob(os.path.join(RESULTS_DIR, "*.json")))
    if not paths:
        print("no results in bench/results", file=sys.stderr)
        return 1
    print("\n\n".join(table(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
