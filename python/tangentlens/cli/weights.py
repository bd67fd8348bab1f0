"""``tangentlens weights``: which weight files are present, where, verified; download what is missing."""

from __future__ import annotations

import argparse
import json
import sys


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "weights",
        help="list the LPIPS / NVIDIA weight files (present where, verified) and download missing ones",
        description="The weight files tangentlens uses but does not ship (docs/lpips.md): torchvision's "
        "VGG16 / AlexNet / SqueezeNet 1.1 trunks, lpips' v0.1 linear layers and NVIDIA's vgg16.pt. Without "
        "options: --list. Search order: $TANGENTLENS_WEIGHTS, torch.hub's cache, the lpips and torchmetrics "
        "packages, NVIDIA's dnnlib cache; downloads go into torch.hub's cache.",
    )
    p.add_argument(
        "--list",
        action="store_true",
        help="show every file: where it was found and whether its digest (or structure) checks out",
    )
    p.add_argument(
        "--download",
        nargs="*",
        metavar="NAME",
        help="download what is missing (nothing with $TANGENTLENS_OFFLINE=1): the NAMEs (keys of --list, "
        "or lpips-vgg16, lpips-alex, lpips-squeeze, all); no NAME: all",
    )
    p.add_argument("--json", metavar="PATH", help="also write the listing as JSON to PATH")
    p.add_argument("--no-progress", action="store_true", help="no download progress bar on stderr")

    def run(args: argparse.Namespace) -> int:
        from tangentlens import weights
        from tangentlens.cli._common import UsageError, check_output_path

        json_path = check_output_path(args.json, "--json")
        if args.download is not None:
            names = args.download or ["all"]
            keys: list[str] = []
            for name in names:
                if name in weights.GROUPS:
                    keys += weights.GROUPS[name]
                elif name in weights.REGISTRY:
                    keys.append(name)
                else:
                    known = sorted(weights.REGISTRY) + sorted(weights.GROUPS)
                    raise UsageError(f"--download: unknown name {name!r}; expected one of {', '.join(known)}")
            if weights.offline():
                raise UsageError(f"--download: ${weights.ENV_OFFLINE} is set: nothing can be downloaded")
            for key in dict.fromkeys(keys):
                found = weights.fetch(key, download=True, progress=not args.no_progress)
                print(f"{key}: {found.path} ({found.source})", file=sys.stderr)
        rows = [_row(key) for key in weights.REGISTRY]
        print(f"{'NAME':<15} {'FILE':<28} {'STATUS':<40} PATH (missing: where it downloads to)")
        for r in rows:
            print(f"{r['key']:<15} {r['file']:<28} {r['status']:<40} {r.get('path') or r['download_to']}")
        if json_path is not None:
            json_path.write_text(json.dumps({"files": rows}, indent=1))
        bad = [str(r["key"]) for r in rows if r.get("verified") is False]
        if bad:
            print(
                f"tangentlens weights: {', '.join(bad)} do not match their registered digest or structure: "
                "delete them (or pass them explicitly to use them anyway)",
                file=sys.stderr,
            )
            return 1
        return 0

    p.set_defaults(run=run)


def _row(key: str) -> dict[str, object]:
    """One file's line of the listing: present where, verified (computing the digest), or missing."""
    from tangentlens import weights

    e = weights.entry(key)
    row: dict[str, object] = {
        "key": key,
        "file": e.filename,
        "used_by": e.used_by,
        "owner": e.owner,
        "url": e.urls[0],
        "download_to": str(weights.cache_dir(e) / e.filename),
    }
    found = weights.locate(key)
    if found is None:
        row["status"] = "missing"
        return row
    ok, kind, detail = weights.verify(found.path, e)
    row.update(path=str(found.path), source=found.source, verified=ok, check=kind)
    if kind != "structure":
        row["sha256"] = detail
    if ok:
        row["status"] = f"present, {kind} ok ({found.source})"
    else:
        row["status"] = f"present, {kind} MISMATCH ({found.source})"
        row["problem"] = detail if kind == "structure" else f"expected {e.sha256 or e.hash_prefix}"
    return row
