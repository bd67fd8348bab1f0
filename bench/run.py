"""Entry point: ``python -m bench [--device cpu|cuda] [--only PATTERN] [--skip PATTERN] [--quick]
[--budget SECONDS] [--out FILE | --out-dir DIR]``.

Every module in ``bench/cases/`` exposes ``cases(device, quick) -> list[Case]``. Results are printed as a
table and merged (by case name) into ``bench/results/<device-tag>.json`` after every case (a run that is
stopped keeps the cases it finished). ``--budget`` bounds the run's wall time: no case but the first
starts after it, and a case runs fewer timing rounds (at least one) where the full count would pass it;
skipped cases are listed in the file's ``skipped``. A ``--quick`` run (smoke sizes) writes only where
``--out``/``--out-dir`` says.
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
import time
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


def _matches(name: str, patterns: str | None) -> bool:
    return patterns is not None and any(fnmatch.fnmatch(name, p) for p in patterns.split(","))


def collect(device: torch.device, quick: bool, only: str | None, skip: str | None = None) -> list[Case]:
    found: list[Case] = []
    for mod in pkgutil.iter_modules(bench.cases.__path__):
        module = importlib.import_module(f"bench.cases.{mod.name}")
        for case in module.cases(device, quick):
            if (only is None or _matches(case.name, only)) and not _matches(case.name, skip):
                found.append(case)
    return found


def write_results(out: str, device: torch.device, results: list[dict[str, Any]], skipped: list[str]) -> None:
    """Merge ``results`` (by case name) into the JSON file ``out``."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    doc: dict[str, Any] = {"cases": {}}
    if os.path.exists(out):
        with open(out) as f:
            doc = json.load(f)
    doc["environment"] = environment(device)
    for r in results:
        r["environment"] = doc["environment"]
        doc.setdefault("cases", {})[r["name"]] = r
    if skipped:
        doc["skipped"] = sorted(set(doc.get("skipped", [])) | set(skipped))
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
    os.replace(tmp, out)


def format_row(r: dict[str, Any]) -> str:
    med = r["median_s"]
    extra = ""
    if "fraction_of_floor" in r:
        extra = f"  {100 * r['fraction_of_floor']:.0f}% of floor"
    elif "achieved_GBps" in r:
        extra = f"  {r['achieved_GBps']:.1f} GB/s"
    if "time_to_ci" in r:
        t = r["time_to_ci"]
        extra += f"  time to +-1% CI: x{t['speedup_vs_nvidia']:.2f}"
    return (
        f"{r['name']:<40} {r['ours']}: {med[r['ours']] * 1e3:10.2f} ms   {r['baseline']}: "
        f"{med[r['baseline']] * 1e3:10.2f} ms   x{r['speedup_vs_baseline']:.2f}{extra}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--only", default=None, help="fnmatch patterns over case names, comma-separated: 'ppl.*'")
    ap.add_argument("--skip", default=None, help="fnmatch patterns of cases to leave out, comma-separated")
    ap.add_argument(
        "--quick", action="store_true", help="small sizes (a smoke run, not for the results file)"
    )
    ap.add_argument("--budget", type=float, default=None, help="wall-clock seconds for the whole run")
    ap.add_argument("--out", default=None, help="results file (default bench/results/<device>.json)")
    ap.add_argument("--out-dir", default=None, help="directory for <device>.json instead of bench/results")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)

    start = time.perf_counter()
    deadline = start + args.budget if args.budget is not None else None
    device = torch.device(args.device)
    cases = collect(device, args.quick, args.only, args.skip)
    if not cases:
        print("no bench case matched")
        return 1
    out = args.out or os.path.join(args.out_dir or RESULTS_DIR, f"{device_tag(device)}.json")
    write = not args.no_write and (not args.quick or args.out is not None or args.out_dir is not None)
    skipped: list[str] = []
    for i, case in enumerate(cases):
        if deadline is not None and i > 0 and time.perf_counter() >= deadline:
            skipped.append(case.name)
            print(f"{case.name:<40} skipped: the --budget of {args.budget:g} s is spent", flush=True)
            continue
        r = run_case(case, device, deadline)
        r["quick"] = args.quick
        print(format_row(r), flush=True)
        if write:
            write_results(out, device, [r], [])
    if write:
        write_results(out, device, [], skipped)
        print(f"wrote {out} ({time.perf_counter() - start:.0f} s)")
    return 0
