"""A local stand-in for the weights' download hosts, for scripts/quickstart_check.sh (never for real use).

It writes test files in the exact formats of the real ones (random values: they are not perceptual weights)
into DIR: torchvision's ``vgg16-397923af.pth`` (a VGG16 state dict), lpips' v0.1 ``vgg.pth``, and NVIDIA's
``vgg16.pt`` (a TorchScript VGG16 LPIPS module with NVIDIA's call interface); writes ``DIR/manifest.json``
for ``$TANGENTLENS_WEIGHTS_MANIFEST`` (this server as the mirror, the digests of these files), serves DIR on
127.0.0.1 (a free port), prints ``ready <base URL>`` and logs every request to ``DIR/requests.log``.

    python scripts/weights_test_server.py DIR
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import json
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from tangentlens.models.trunks import VGG16Features

TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
CHANNELS = (64, 128, 256, 512, 512)


class NvidiaStyleLPIPS(nn.Module):
    """LPIPS-VGG16 with the interface of NVIDIA's vgg16.pt: ``m(img_0_255, resize_images=False,
    return_lpips=True) -> [N, F]``, the flattened embedding (SPEC 3)."""

    def __init__(self, features: nn.Sequential, lin: list[torch.Tensor]) -> None:
        super().__init__()
        self.features = features
        self.register_buffer("lin", torch.cat(lin))
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    def forward(
        self, img: torch.Tensor, resize_images: bool = True, return_lpips: bool = False
    ) -> torch.Tensor:
        x = (img / 127.5 - 1.0 - self.shift) / self.scale
        parts: list[torch.Tensor] = []
        start = 0
        i = 0
        for layer in self.features:
            x = layer(x)
            if i == 3 or i == 8 or i == 15 or i == 22 or i == 29:
                c = x.shape[1]
                w = self.lin[start : start + c].view(1, c, 1, 1)
                f = x / (torch.sqrt((x * x).sum(1, keepdim=True)) + 1e-10)
                parts.append((torch.sqrt(w / (x.shape[2] * x.shape[3])) * f).flatten(1))
                start += c
            i += 1
        return torch.cat(parts, 1)


def write_files(root: Path) -> dict[str, str]:
    """The three files in DIR; their SHA-256 digests by file name."""
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    trunk = VGG16Features()
    torch.save(trunk.state_dict(), root / "vgg16-397923af.pth")
    g = torch.Generator().manual_seed(1)
    lin = [torch.rand(c, generator=g) / c for c in CHANNELS]
    torch.save({f"lin{i}.model.1.weight": w.view(1, -1, 1, 1) for i, w in enumerate(lin)}, root / "vgg.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in torch 2.13
        module = torch.jit.script(NvidiaStyleLPIPS(trunk.features, lin))
        torch.jit.save(module, str(root / "vgg16.pt"))
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.iterdir() if p.is_file()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    root: Path = args.dir
    served = root / "served"
    digests = write_files(served)
    log = open(root / "requests.log", "a", buffering=1)  # noqa: SIM115 - open for the server's lifetime

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *a: object) -> None:  # noqa: A002 - http.server's name
            log.write(f"{self.command} {self.path} {a[1] if len(a) > 1 else ''}\n")

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(served))
    )
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    manifest = {
        "mirror": base + "/",
        "files": {
            "vgg16-trunk": {"hash_prefix": digests["vgg16-397923af.pth"][:8]},
            "vgg16-linear": {"sha256": digests["vgg.pth"]},
        },
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"ready {base}", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
