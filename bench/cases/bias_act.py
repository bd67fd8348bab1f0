"""bias_act: the one-pass forward-mode rule against vmap(jvp) of the eager reference.

- ``bias_act.jvp_lrelu_k32``: K = 32 tangents of ``bias_act(x, b, dim=1, act="lrelu")`` (gain sqrt 2, clamp
  256, as StyleGAN's synthesis layers) on x [8, 512, 32, 32] fp32 ([2, 128, 16, 16], K = 8 in ``--quick``).
  ours: ``ops.bias_act_jvp`` (y and all K tangents in one launch); baseline: ``torch.func.vmap`` over
  ``torch.func.jvp`` of the reference (plain torch ops). Floor: reading x, tx and writing y, ty once.
"""

from __future__ import annotations

import functools

import torch

from bench.harness import Case
from tangentlens import ops
from tangentlens.reference import bias_act as ref


def cases(device: torch.device, quick: bool) -> list[Case]:
    shape, k = ((2, 128, 16, 16), 8) if quick else ((8, 512, 32, 32), 32)
    clamp = 256.0

    @functools.cache
    def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(shape, generator=g, device=device)
        b = torch.randn(shape[1], generator=g, device=device)
        tx = torch.randn((k, *shape), generator=g, device=device)
        return x, b, tx

    def ours() -> torch.Tensor:
        x, b, tx = inputs()
        return ops.bias_act_jvp(x, b, tx, None, 1, "lrelu", clamp=clamp)[1]

    def eager() -> torch.Tensor:
        x, b, tx = inputs()

        def one(t: torch.Tensor) -> torch.Tensor:
            return torch.func.jvp(lambda z: ref.bias_act(z, b, 1, "lrelu", clamp=clamp), (x,), (t,))[1]

        return torch.func.vmap(one)(tx)

    def check() -> None:
        torch.testing.assert_close(ours(), eager(), rtol=1e-5, atol=1e-5)

    n = 1
    for s in shape:
        n *= s
    return [
        Case(
            name="bias_act.jvp_lrelu_k32",
            variants={"tangentlens": ours, "vmap_jvp": eager},
            ours="tangentlens",
            baseline="vmap_jvp",
            work=k,
            work_unit="tangents",
            repeats=3 if quick else 5,
            meta={"shape": list(shape), "tangents": k, "act": "lrelu", "clamp": clamp, "dtype": "float32"},
            floor_bytes=float(4 * n * (2 + 2 * k)),
            check=check,
        )
    ]
