"""LPIPS: the fused layer head and tangent kernel against the eager compositions peers use (SPEC 3).

- ``lpips.head_vgg16_256``: the distance head over the five VGG16 taps of a 256x256 image pair, batch 32
  (8 on CPU in ``--quick``). ours: ``ops.lpips_layer_distance`` per tap; eager: the lpips package's head
  (``f / (sqrt(sum f^2) + eps)``, squared difference, 1x1 conv with the linear weights, spatial mean).
  Floor: reading both feature stacks once (2 x 8.0 M values per image pair in fp32).
- ``lpips.tangent_norm_vgg16_128``: squared norms of K = 8 tangents of the embedding over the five taps of a
  128x128 image, batch 8. ours: ``ops.lpips_tangent_norm``; baseline: ``torch.func.jvp`` of the eager
  embedding, vmapped over the tangents, then the squared norm. Floor: reading f and the K tangent maps once.
- ``lpips.vgg16_64`` / ``lpips.vgg16_256``: full LPIPS-VGG16 (random weights, same trunk) with the fused
  head vs the same module with the eager head: the trunk's convolutions dominate, so this only checks that
  the fused head costs nothing end to end.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

import tangentlens
from bench.harness import Case, time_call
from tangentlens import ops

VGG_TAPS = ((64, 1), (128, 2), (256, 4), (512, 8), (512, 16))  # (channels, downsampling) of the 5 taps


def vgg_taps(n: int, size: int, device: torch.device, seed: int, k: int | None = None) -> list[torch.Tensor]:
    """Post-ReLU-like feature maps [n, (k,) C, size / s, size / s] with the VGG16 taps' shapes."""
    g = torch.Generator(device=device).manual_seed(seed)
    out = []
    for c, s in VGG_TAPS:
        shape = (n, c, size // s, size // s) if k is None else (n, k, c, size // s, size // s)
        x = torch.randn(shape, generator=g, device=device)
        out.append(x.relu_() if k is None else x)
    return out


def eager_head(f0: torch.Tensor, f1: torch.Tensor, w: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """One layer as the lpips package computes it."""
    n0 = f0 / (torch.sqrt((f0 * f0).sum(1, keepdim=True)) + eps)
    n1 = f1 / (torch.sqrt((f1 * f1).sum(1, keepdim=True)) + eps)
    return F.conv2d((n0 - n1) ** 2, w.view(1, -1, 1, 1)).mean((2, 3)).flatten()


def eager_embedding(f: torch.Tensor, w: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    hw = f.shape[-1] * f.shape[-2]
    fn = f / torch.sqrt((f * f).sum(-3, keepdim=True) + eps)
    return fn * torch.sqrt(w / hw).view(-1, 1, 1)


def jvp_tangent_norms(f: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    def one(ti: torch.Tensor) -> torch.Tensor:
        return torch.func.jvp(lambda x: eager_embedding(x, w), (f,), (ti,))[1]

    dt = torch.func.vmap(one, in_dims=1, out_dims=1)(t)
    return dt.flatten(2).square().sum(-1)


def _read_floor(tensors: Callable[[], list[torch.Tensor]], device: torch.device):
    """Time to read every byte once (a sum per tensor): the memory floor of a read-only head."""

    def run() -> float:
        xs = tensors()
        return time_call(lambda: [x.sum() for x in xs], device)

    return run


def cases(device: torch.device, quick: bool) -> list[Case]:
    out: list[Case] = []

    # ---- the distance head ------------------------------------------------------------------------------
    # Inputs are built on first use (cases are constructed even when filtered out by --only).
    n = 4 if quick else 32
    g = torch.Generator(device="cpu").manual_seed(2)
    ws = [(torch.rand(c, generator=g) / c).to(device) for c, _ in VGG_TAPS]

    @functools.cache
    def head_maps() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return vgg_taps(n, 256, device, 0), vgg_taps(n, 256, device, 1)

    def head_ours() -> torch.Tensor:
        f0s, f1s = head_maps()
        return sum(
            ops.lpips_layer_distance(a, b, w, eps=1e-10, eps_mode="outside")
            for a, b, w in zip(f0s, f1s, ws, strict=True)
        )

    def head_eager() -> torch.Tensor:
        f0s, f1s = head_maps()
        return sum(eager_head(a, b, w) for a, b, w in zip(f0s, f1s, ws, strict=True))

    def head_check() -> None:
        torch.testing.assert_close(head_ours(), head_eager(), rtol=1e-4, atol=1e-6)

    head_bytes = float(sum(2 * 4 * n * c * (256 // s) ** 2 for c, s in VGG_TAPS))
    out.append(
        Case(
            name="lpips.head_vgg16_256",
            variants={"tangentlens": head_ours, "eager": head_eager},
            ours="tangentlens",
            baseline="eager",
            work=n,
            work_unit="pairs",
            repeats=5,
            meta={"batch": n, "image": 256, "taps": [list(t) for t in VGG_TAPS], "dtype": "float32"},
            floor_bytes=head_bytes,
            floor_seconds=_read_floor(lambda: head_maps()[0] + head_maps()[1], device),
            check=head_check,
        )
    )

    # ---- the tangent norms -------------------------------------------------------------------------------
    nt, k = (2 if quick else 8), 8

    @functools.cache
    def tan_maps() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return vgg_taps(nt, 128, device, 3), vgg_taps(nt, 128, device, 4, k=k)

    def tan_ours() -> torch.Tensor:
        fs, ts = tan_maps()
        return sum(
            ops.lpips_tangent_norm(f, t, w, eps=1e-8, eps_mode="inside")
            for f, t, w in zip(fs, ts, ws, strict=True)
        )

    def tan_jvp() -> torch.Tensor:
        fs, ts = tan_maps()
        return sum(jvp_tangent_norms(f, t, w) for f, t, w in zip(fs, ts, ws, strict=True))

    def tan_check() -> None:
        torch.testing.assert_close(tan_ours(), tan_jvp(), rtol=1e-4, atol=1e-6)

    out.append(
        Case(
            name="lpips.tangent_norm_vgg16_128",
            variants={"tangentlens": tan_ours, "jvp": tan_jvp},
            ours="tangentlens",
            baseline="jvp",
            work=nt * k,
            work_unit="tangents",
            repeats=5,
            meta={"batch": nt, "tangents": k, "image": 128, "dtype": "float32"},
            floor_bytes=float(sum(4 * nt * (k + 1) * c * (128 // s) ** 2 for c, s in VGG_TAPS)),
            floor_seconds=_read_floor(lambda: tan_maps()[0] + tan_maps()[1], device),
            check=tan_check,
        )
    )

    # ---- full LPIPS-VGG16 ----------------------------------------------------------------------------------
    lp = tangentlens.LPIPS("vgg16", pretrained=False).to(device)  # ~60 MB of random weights

    def full_eager(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        feats = lp.trunk(lp._prepare(torch.cat([x0, x1])))
        m = x0.shape[0]
        return sum(eager_head(f[:m], f[m:], w) for f, w in zip(feats, lp.linear_weights, strict=True))

    cpu = device.type == "cpu"
    for size, batch in ((64, 4 if quick else (16 if cpu else 64)), (256, 1 if quick else (2 if cpu else 16))):
        gi = torch.Generator(device=device).manual_seed(5)
        x0 = torch.rand(batch, 3, size, size, generator=gi, device=device) * 2 - 1
        x1 = torch.rand(batch, 3, size, size, generator=gi, device=device) * 2 - 1

        def full_check(x0: torch.Tensor = x0, x1: torch.Tensor = x1) -> None:
            with torch.no_grad():
                torch.testing.assert_close(lp(x0, x1), full_eager(x0, x1), rtol=1e-4, atol=1e-6)

        def ours(x0: torch.Tensor = x0, x1: torch.Tensor = x1) -> None:
            with torch.no_grad():
                lp(x0, x1)

        def eager(x0: torch.Tensor = x0, x1: torch.Tensor = x1) -> None:
            with torch.no_grad():
                full_eager(x0, x1)

        out.append(
            Case(
                name=f"lpips.vgg16_{size}",
                variants={"tangentlens": ours, "eager": eager},
                ours="tangentlens",
                baseline="eager",
                work=batch,
                work_unit="pairs",
                repeats=3 if quick else 5,
                meta={
                    "batch": batch,
                    "image": size,
                    "weights": "random (pretrained=False)",
                    "dtype": "float32",
                },
                check=full_check,
            )
        )
    return out
