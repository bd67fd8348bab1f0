"""The peers' PPL sampling loops, written for the bench from their published descriptions (SPEC 4), on the
same generator and LPIPS as tangentlens, with the reference (non-fused, pure PyTorch) ops a CPU run of
the peers' code would use.

* ``nvidia_ppl``: stylegan2-ada-pytorch's ``ppl2_wend`` loop (TF32 off, as its calc_metrics.py sets): batches
  of 2, z from the global RNG, W-space lerp at t = 0 and t = eps, the synthesis noise buffers re-drawn once
  per batch, both images through one synthesis call, [-1, 1] -> [0, 255], the LPIPS embedding of the pair,
  ``|e0 - e1|^2 / eps^2``; trimmed with 1 % 'lower' and 99 % 'higher'.
* ``torchmetrics_ppl``: torchmetrics' ``perceptual_path_length``: latents drawn for all samples up front,
  ``z1 <- z0 + (z1 - z0) eps``, one generator call per batch on the concatenation, images in [0, 255] mapped
  to [-1, 1], LPIPS forward (resize to 64 when needed), ``/ eps^2``, inference mode.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def nvidia_ppl(G, lp, num_samples: int, *, batch_size: int = 2, epsilon: float = 1e-4) -> np.ndarray:  # noqa: ANN001
    # calc_metrics.py turns TF32 off for matmuls and cuDNN convolutions (it matters on a GPU only)
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        return _nvidia_loop(G, lp, num_samples, batch_size, epsilon)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _nvidia_loop(G, lp, num_samples: int, batch_size: int, epsilon: float) -> np.ndarray:  # noqa: ANN001
    dist = []
    with torch.no_grad():
        for _ in range(0, num_samples, batch_size):
            z = torch.randn(2 * batch_size, G.z_dim)
            w0, w1 = G.mapping(z, None).chunk(2)
            t = torch.zeros(batch_size, 1, 1)
            wt0, wt1 = w0.lerp(w1, t), w0.lerp(w1, t + epsilon)
            for name, buf in G.named_buffers():
                if name.endswith(".noise_const"):
                    buf.copy_(torch.randn_like(buf))
            img = G.synthesis(torch.cat([wt0, wt1]), noise_mode="const", force_fp32=True)
            factor = G.img_resolution // 256
            if factor > 1:
                img = img.reshape(img.shape[0], 3, img.shape[2] // factor, factor, -1, factor).mean([3, 5])
            img = (img + 1) * (255 / 2)
            e0, e1 = lp.embed(img / 127.5 - 1).chunk(2)
            dist.append(((e0 - e1).square().sum(1) / epsilon**2).double())
    d = torch.cat(dist)[:num_samples].numpy()
    return d


def torchmetrics_ppl(
    gen,
    z_dim: int,
    lp,
    num_samples: int,
    *,
    batch_size: int = 64,  # noqa: ANN001
    epsilon: float = 1e-4,
    resize: int = 64,
) -> np.ndarray:
    """``gen(z)`` gives images in [-1, 1] here, mapped to [0, 255] as a torchmetrics generator gives them."""
    z0 = torch.randn(num_samples, z_dim)
    z1 = torch.randn(num_samples, z_dim)
    z1 = z0 + (z1 - z0) * epsilon
    out = []
    with torch.inference_mode():
        for s in range(0, num_samples, batch_size):
            a, b = z0[s : s + batch_size], z1[s : s + batch_size]
            img = (gen(torch.cat([a, b])) + 1) * 127.5  # the generator's [0, 255] output
            x = 2 * (img / 255) - 1
            if x.shape[-1] != resize:
                mode = (
                    dict(mode="area") if x.shape[-1] > resize else dict(mode="bilinear", align_corners=False)
                )
                x = F.interpolate(x, size=(resize, resize), **mode)
            x0, x1 = x.chunk(2)
            out.append((lp(x0, x1) / epsilon**2).double())
    return torch.cat(out).numpy()


def trimmed_mean_ci(d: np.ndarray, lower: str = "lower", upper: str = "higher") -> tuple[float, float]:
    """Trimmed mean and its 95 % half-width (winsorised standard error)."""
    lo, hi = np.percentile(d, 1, method=lower), np.percentile(d, 99, method=upper)
    keep = (d >= lo) & (d <= hi)
    w = np.clip(d, d[keep].min(), d[keep].max())
    sem = w.std(ddof=1) / (keep.mean() * np.sqrt(d.size))
    return float(d[keep].mean()), float(1.96 * sem)
