"""upfirdn2d: the native kernel (StyleGAN2's 2x upsampling with the [1, 3, 3, 1] filter) against the
reference composition (zero insertion + depthwise convolution), primal and K = 16 tangents under
``vmap(jvp)`` (the native rule sends all tangents through one launch).

Floor: reading the input stack once and writing the 4x larger output once.
"""

from __future__ import annotations

import functools

import torch

from bench.harness import Case
from tangentlens import resample


def cases(device: torch.device, quick: bool) -> list[Case]:
    shape, k = ((2, 64, 16, 16), 4) if quick else ((4, 256, 32, 32), 16)
    f = resample.setup_filter([1, 3, 3, 1]).to(device)
    kw = dict(up=2, padding=[2, 1, 2, 1], gain=4)

    @functools.cache
    def inputs() -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator(device=device).manual_seed(0)
        return torch.randn(shape, generator=g, device=device), torch.randn(
            (k, *shape), generator=g, device=device
        )

    def run(impl: str):  # noqa: ANN202
        def call() -> torch.Tensor:
            x, t = inputs()

            def fn(a: torch.Tensor) -> torch.Tensor:
                return resample.upfirdn2d(a, f, impl=impl, **kw)

            return torch.func.vmap(lambda v: torch.func.jvp(fn, (x,), (v,)), out_dims=(None, 0))(t)[1]

        return call

    def check() -> None:
        torch.testing.assert_close(run("native")(), run("reference")(), rtol=1e-5, atol=1e-5)

    n = 1
    for s in shape:
        n *= s
    return [
        Case(
            name="upfirdn2d.up2_jvp_k16" if not quick else "upfirdn2d.up2_jvp_k4",
            variants={"tangentlens": run("native"), "reference": run("reference")},
            ours="tangentlens",
            baseline="reference",
            work=k,
            work_unit="tangents",
            repeats=5,
            meta={"shape": list(shape), "tangents": k, "filter": "[1, 3, 3, 1]", "up": 2, "dtype": "float32"},
            floor_bytes=float((1 + k) * n * 4 * (1 + 4)),
            check=check,
        )
    ]
