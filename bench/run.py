"""Entry point: ``python -m bench [--device cpu|cuda] [--only PATTERN] [--quick]``.

Every module in ``bench/cases/`` exposes ``cases(device, quick) -> list[Case]``. Results are printed as a
table and merged (by case name) into ``bench/results/<device-tag>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import importlib
import json
import os
import pkgutil
import platform
from typing import Any

import torch

import bench.cases
from bench.harness import Case, run_case

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def device_tag(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return "cuda-" + "".join(c if c.isalnum() else "-" for c in name).strip("-").lower()
    return f"cpu-{os.cpu_count()}cores"


def environment(device: torch.device) -> dict[str, Any]:
    import tangentlens

    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "tangentlens": tangentlens.__version__,
        "native": tangentlens.native_build_info(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def collect(device: torch.device, quick: bool, only: str | None) -> list[Case]:
    found: list[Case] = []
    for mod in pkgutil.iter_modules(bench.cases.__path__):
        module = importlib.import_module(f"bench.cases.{mod.name}")
        for case in module.cases(device, quick):
            if only is None or fnmatch.fnmatch(case.name, only):
                found.append(case)
    return found


def format_row(r: dict[str, Any]) -> str:
    med = r["median_s"]
    extra = ""
    if "fraction_of_floor" in r:
        extra = f"  {100 * r['fraction_of_floor']:.0f}% of floor"
    elif "achieved_GBps" in r:
        extra = f"  {r['achieved_GBps']:.1f} GB/s"
    return (
        f"{r['name']:<40} {r['ours']}: {med[r['ours']] * 1e3:10.2f} ms   {r['baseline']}: "
        f"{med[r['baseline']] * 1e3:10.2f} ms   x{r['speedup_vs_baseline']:.2f}{extra}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--only", default=None, help="fnmatch pattern over case names, e.g. 'paths.*'")
    ap.add_argument(
        "--quick", action="store_true", help="small sizes (a smoke run, not for the results file)"
    )
    ap.add_argument("--out", default=None, help="results file (default bench/results/<device>.json)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    cases = collect(device, args.quick, args.only)
    if not cases:
        print("no bench case matched")
        return 1
    results = []
    for case in cases:
        r = run_case(case, device)
        print(format_row(r), flush=True)
        results.append(r)

    if args.no_write or args.quick:
        return 0
    out = args.out or os.path.join(RESULTS_DIR, f"{device_tag(device)}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    doc: dict[str, Any] = {"cases": {}}
    if os.path.exists(out):
        with open(out) as f:
            doc = json.load(f)
    doc["environment"] = environment(device)
    for r in results:
        r["environment"] = doc["environment"]
        doc.setdefault("cases", {})[r["name"]] = r
    with open(out, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
    print(f"wrote {out}")
    return 0
