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


def time_to_ci_table(r: dict) -> str:
    """Per variant: samples/s, the relative std of one sample's contribution to the trimmed mean, the
    samples and the seconds for a 95 % half-width of +-1 %, and the ratio against NVIDIA's protocol."""
    t = r["time_to_ci"]
    pct = 100 * t["target_rel_half_width"]
    lines = [
        f"`{r['name']}`: time to a ±{pct:g} % CI (95 %); pooled relative std {t['pooled_rel_std']:.3f} over "
        f"{t['pilot_samples']}-sample pilots",
        "",
        f"| variant | time to ±{pct:g} % CI | vs NVIDIA | samples/s | relative std (own pilot) "
        f"| samples for ±{pct:g} % | pilot mean ± 95 % |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = sorted(t["variants"].items(), key=lambda kv: kv[1]["seconds_to_1pct_ci"])
    for name, v in rows:
        secs = v["seconds_to_1pct_ci"]
        when = f"{secs / 3600:.2f} h" if secs >= 3600 else f"{secs / 60:.1f} min"
        lines.append(
            f"| {name} | {when} | ×{v['speedup_vs_nvidia']:.2f} | {v['samples_per_s']:.2f} "
            f"| {v['rel_std']:.3f} ({v['rel_std_own_pilot']:.3f}) | {v['samples_for_1pct']:,.0f} "
            f"| {v['pilot_mean']:.4g} ± {v['pilot_ci95_half']:.2g} |"
        )
    return "\n".join(lines)


def main() -> int:
    paths = sorted(glob.glob(os.path.join(RESULTS_DIR, "*.json")))
    if not paths:
        print("no results in bench/results", file=sys.stderr)
        return 1
    out = [table(p) for p in paths]
    for p in paths:
        with open(p) as f:
            cases = json.load(f)["cases"]
        out += [time_to_ci_table(cases[k]) for k in sorted(cases) if "time_to_ci" in cases[k]]
    print("\n\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
