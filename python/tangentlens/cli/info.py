"""``tangentlens info``: the version, the build configuration and the devices."""

from __future__ import annotations

import argparse
import json

import tangentlens


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print the version, the build configuration and the available devices")

    def run(args: argparse.Namespace) -> int:
        import torch

        info = {
            "tangentlens": tangentlens.__version__,
            "torch": torch.__version__,
            "native": tangentlens.native_build_info(),
            "cuda_available": torch.cuda.is_available(),
        }
        print(json.dumps(info, indent=2))
        return 0

    p.set_defaults(run=run)
