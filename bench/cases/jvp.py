"""The JVP engine on StyleGAN2 + LPIPS-VGG16: ``|J v_i|^2`` for k tangents per latent point (SPEC 2).

F(z) = e(G(z)), e the LPIPS-VGG16 embedding, G a StyleGAN2Generator (random weights, seeded; 64x64 on CPU
with channel_max 128, 256x256 with the real widths on GPU). Every variant computes the squared norms of
the k tangents of F at B points, the quantity one exact PPL sample (k = 1) or one spectrum (k = d)
needs, in float32:

- ``tangentlens``: ``tangentlens.jvp(G, z, V)`` (stacked forward rules: primal and tangents share each
  convolution) then ``LPIPS.tangent_norms`` (the trunk's JVPs + the fused tangent-norm kernel);
- ``vmap_jvp_rules``: ``torch.func.vmap`` over ``torch.func.jvp`` of ``z -> e(G(z))`` with our registered
  forward rules (what a plain torch.func user of our modules gets);
- ``vmap_jvp``: the same through the reference ops (the baseline);
- ``double_vjp``: the double-VJP identity ``J v = d/du <J^T u, v>``, vmapped over the tangents;
- ``fd``: central finite differences ``(F(z + h v) - F(z - h v)) / 2h``, h = 1e-3 (2k extra forwards).

Every variant passes all k tangents in one chunk (``chunk_size=k``), so none pays the engine's memory probe
(one forward pass, cached per module but repeated for the fresh closures the baselines differentiate).
The check computes each variant's max relative error against a float64 ``vmap_jvp`` run and stores it in
the case's meta. Floor: a tangent costs at least one forward pass of FLOPs, so ``(1 + k)`` forwards of F
(timed with the batch repeated) is the floor column.
"""

from __future__ import annotations

import functools

import torch

import tangentlens
from bench.harness import Case, time_call
from tangentlens.models import StyleGAN2Generator


def cases(device: torch.device, quick: bool) -> list[Case]:
    cpu = device.type == "cpu"
    # CPU: 64x64 with channel_max 128 and one point, so the k = 32 case stays within minutes.
    res, cmax, batch = (64, 128, 1) if cpu else (256, 512, 4)
    if quick:
        res, cmax = 32, 64
    ks = (4,) if quick else ((8, 32) if cpu else (8, 32, 128))

    @functools.cache
    def models(dtype: torch.dtype) -> tuple[StyleGAN2Generator, tangentlens.LPIPS]:
        G = StyleGAN2Generator(img_resolution=res, channel_max=cmax, seed=0).to(device, dtype).eval()
        lp = tangentlens.LPIPS("vgg16", pretrained=False).to(device, dtype)
        return G, lp

    def inputs(k: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator(device="cpu").manual_seed(k)
        z = torch.randn(batch, 512, generator=g, dtype=torch.float64)
        v = torch.randn(batch, k, 512, generator=g, dtype=torch.float64)
        return z.to(device, dtype), v.to(device, dtype)

    def embedding(dtype: torch.dtype):  # noqa: ANN202
        G, lp = models(dtype)
        return lambda z: lp.embed(G(z))

    def ours(z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        G, lp = models(z.dtype)
        img, timg = tangentlens.jvp(G, z, v, chunk_size=v.shape[1])
        return lp.tangent_norms(img, timg)

    def vmap_jvp(z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        _, t = tangentlens.jvp(
            embedding(z.dtype), z, v, chunk_size=v.shape[1], impl="reference", method="forward"
        )
        return t.square().sum(-1)

    def vmap_jvp_rules(z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # the generic torch.func path, with our rules registered for it (bias_act, modulated conv)
        _, t = tangentlens.jvp(embedding(z.dtype), z, v, chunk_size=v.shape[1], method="forward")
        return t.square().sum(-1)

    def double_vjp(z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        _, t = tangentlens.jvp(
            embedding(z.dtype), z, v, chunk_size=v.shape[1], impl="reference", method="double_vjp"
        )
        return t.square().sum(-1)

    def fd(z: torch.Tensor, v: torch.Tensor, h: float = 1e-3) -> torch.Tensor:
        F = embedding(z.dtype)
        k = v.shape[1]
        with torch.no_grad():
            zz = torch.cat([(z[:, None] + h * v).flatten(0, 1), (z[:, None] - h * v).flatten(0, 1)])
            e = F(zz)
        n = batch * k
        return ((e[:n] - e[n:]) / (2 * h)).square().sum(-1).reshape(batch, k)

    variants_fn = {
        "tangentlens": ours,
        "vmap_jvp_rules": vmap_jvp_rules,
        "vmap_jvp": vmap_jvp,
        "double_vjp": double_vjp,
        "fd": fd,
    }
    out = []
    for k in ks:
        meta: dict = {
            "batch": batch,
            "tangents": k,
            "resolution": res,
            "channel_max": cmax,
            "lpips": "vgg16 (random weights)",
            "dtype": "float32",
        }

        def check(k: int = k, meta: dict = meta) -> None:
            z, v = inputs(k, torch.float64)
            with torch.no_grad():
                ref = vmap_jvp(z, v)
            z32, v32 = inputs(k, torch.float32)
            errs = {}
            for name, f in variants_fn.items():
                with torch.no_grad() if name == "fd" else torch.enable_grad():
                    got = f(z32, v32).detach().double()
                errs[name] = float(((got - ref).abs() / ref.abs()).max())
            meta["max_rel_error_vs_float64"] = errs
            if errs["tangentlens"] > 1e-3:
                raise AssertionError(f"jvp bench: tangentlens error {errs['tangentlens']:.2e} vs float64")

        def floor(k: int = k):  # noqa: ANN202
            def run() -> float:
                z, _ = inputs(k, torch.float32)
                F = embedding(torch.float32)
                zz = z.repeat(1 + k, 1)
                with torch.no_grad():
                    return time_call(lambda: F(zz), device)

            return run

        def bind(f, k: int = k):  # noqa: ANN001, ANN202
            def call() -> None:
                f(*inputs(k, torch.float32))

            return call

        out.append(
            Case(
                name=f"jvp.stylegan2_lpips_k{k}",
                variants={name: bind(f) for name, f in variants_fn.items()},
                ours="tangentlens",
                baseline="vmap_jvp",
                work=batch * k,
                work_unit="tangents",
                repeats=3,
                meta=meta,
                floor_seconds=floor(),
                check=check,
            )
        )
    return out
