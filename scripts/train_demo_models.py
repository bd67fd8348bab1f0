"""Train the demo VAEs (β = 1 and β = 4) on procedural dSprites, on CPU, deterministically.

    python scripts/train_demo_models.py                      # both models, one process (one core) each
    python scripts/train_demo_models.py --betas 1 --steps 20 --out /tmp/run_a   # a short check run

Writes, per β, ``vae_dsprites_beta{β}.pt`` (``torch.save(state_dict)``) and ``vae_dsprites_beta{β}.json``
(config, seed, loss curve, held-out numbers, wall time, versions) into ``--out`` (default: the package's
``python/tangentlens/models/weights``). A run is a function of its arguments and the thread count: model
init from ``torch.manual_seed(seed)``, data order from ``np.random.default_rng(seed)``, reparameterisation
noise from a ``torch.Generator`` seeded with ``seed + 1``; two runs with the same arguments write
bit-identical weights.

Held-out evaluation: ``--num-eval`` grid points drawn with ``np.random.default_rng(eval_seed)`` among the
points the training stream never drew, decoded from the posterior mean; reported against the best constant
image (the held-out set's own per-pixel mean).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from tangentlens.data import NUM_COMBINATIONS, DSpritesBatches, dsprites, index_to_factors
from tangentlens.models.vae import VAE, bce_per_image, kl_per_image

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "python" / "tangentlens" / "models" / "weights"


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 8000
    batch_size: int = 32
    lr: float = 1e-3
    lr_final_fraction: float = 0.05  # cosine decay from lr to lr * this
    warmup_steps: int = 100
    seed: int = 0
    eval_seed: int = 20_240_601
    num_eval: int = 2000
    log_every: int = 100
    threads: int = 1
    channels: tuple[int, ...] = (16, 16, 32, 64)  # VAE(channels=...)
    hidden: int = 128


def held_out_indices(cfg: TrainConfig) -> np.ndarray:
    """``num_eval`` flat grid indices that the training stream of ``cfg`` never draws (a fresh seed)."""
    seen = np.zeros(NUM_COMBINATIONS, dtype=bool)
    for idx in DSpritesBatches(cfg.batch_size, cfg.steps, seed=cfg.seed).iter_indices():
        seen[idx] = True
    unseen = np.flatnonzero(~seen)
    rng = np.random.default_rng(cfg.eval_seed)
    return np.sort(rng.choice(unseen, size=cfg.num_eval, replace=False))


@torch.no_grad()
def evaluate(vae: VAE, x: torch.Tensor, batch: int = 500) -> dict[str, float]:
    """Held-out reconstruction from the posterior mean, per image: Bernoulli NLL (BCE, nats), KL (nats),
    pixel MSE of the Bernoulli means; the same NLL / MSE for the best constant image (the set's mean); and
    the entropy of the targets, the NLL's floor (anti-aliased edge pixels are fractional targets)."""
    vae.eval()
    bce, kl, mse = [], [], []
    for s in range(0, x.shape[0], batch):
        xb = x[s : s + batch]
        mean, logvar = vae.encode(xb)
        logits = vae.decode_logits(mean)
        bce.append(bce_per_image(logits, xb))
        kl.append(kl_per_image(mean, logvar))
        mse.append((torch.sigmoid(logits) - xb).square().flatten(1).mean(1))
    p = x.mean(0, keepdim=True).clamp(1e-6, 1 - 1e-6).expand_as(x)
    base_bce = torch.nn.functional.binary_cross_entropy(p, x, reduction="none").flatten(1).sum(1)
    base_mse = (p - x).square().flatten(1).mean(1)
    xd = x.double()
    entropy = -(xd * xd.clamp_min(1e-12).log() + (1 - xd) * (1 - xd).clamp_min(1e-12).log()).flatten(1).sum(1)
    vae.train()
    return {
        "bce_per_image": float(torch.cat(bce).mean()),
        "kl_per_image": float(torch.cat(kl).mean()),
        "mse_per_pixel": float(torch.cat(mse).mean()),
        "mean_image_bce_per_image": float(base_bce.mean()),
        "mean_image_mse_per_pixel": float(base_mse.mean()),
        "target_entropy_per_image": float(entropy.mean()),
    }


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``lr * lr_final_fraction`` at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    lo = cfg.lr * cfg.lr_final_fraction
    return lo + 0.5 * (cfg.lr - lo) * (1.0 + math.cos(math.pi * min(t, 1.0)))


def train_one(beta: float, cfg: TrainConfig, out_dir: Path) -> dict:
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    start = time.perf_counter()
    vae = VAE(channels=cfg.channels, hidden=cfg.hidden, seed=cfg.seed)
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.lr)
    noise = torch.Generator().manual_seed(cfg.seed + 1)
    curve: list[dict[str, float]] = []
    acc = np.zeros(3)
    for step, (x, _) in enumerate(DSpritesBatches(cfg.batch_size, cfg.steps, seed=cfg.seed)):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, cfg)
        out = vae.loss(x, beta, noise)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        acc += [float(out[k].detach()) for k in ("loss", "recon", "kl")]
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            n = (step % cfg.log_every) + 1
            row = {
                "step": step + 1,
                "loss": acc[0] / n,
                "recon": acc[1] / n,
                "kl": acc[2] / n,
                "lr": opt.param_groups[0]["lr"],
                "elapsed_s": round(time.perf_counter() - start, 1),
            }
            curve.append(row)
            acc[:] = 0
            print(f"[beta={beta:g}] " + " ".join(f"{k}={v:.4g}" for k, v in row.items()), flush=True)
    train_s = time.perf_counter() - start
    x_eval = torch.from_numpy(dsprites(index_to_factors(held_out_indices(cfg))))
    result = evaluate(vae, x_eval)
    stem = f"vae_dsprites_beta{beta:g}"
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(vae.state_dict(), out_dir / f"{stem}.pt")
    log = {
        "model": "VAE",
        "beta": beta,
        "config": {"model": vae.config, "train": asdict(cfg)},
        "num_parameters": sum(p.numel() for p in vae.parameters()),
        "data": "tangentlens.data.DSpritesBatches(batch_size, steps, seed): uniform draws of the grid",
        "objective": "mean over the batch of BCE-with-logits summed over pixels + beta * KL; Adam",
        "held_out": {
            "num": cfg.num_eval,
            "seed": cfg.eval_seed,
            "disjoint_from_training": True,
            "decoded_from": "posterior mean",
            **result,
        },
        "curve": curve,
        "train_wall_s": round(train_s, 1),
        "versions": {
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "threads": cfg.threads,
        },
    }
    (out_dir / f"{stem}.json").write_text(json.dumps(log, indent=1) + "\n")
    print(f"[beta={beta:g}] done in {train_s:.0f} s; held-out: {json.dumps(result)}", flush=True)
    return log


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--betas", type=float, nargs="+", default=[1.0, 4.0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--jobs", type=int, default=0, help="parallel processes (default: one per beta)")
    d = TrainConfig()
    for name, value in asdict(d).items():
        if isinstance(value, tuple):
            p.add_argument("--" + name.replace("_", "-"), type=int, nargs=len(value), default=value)
        else:
            p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    args = p.parse_args(argv)
    given = {k: getattr(args, k) for k in asdict(d)}
    cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()})
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.log_every < 1 or cfg.num_eval < 1:
        p.error(f"steps, batch-size, log-every and num-eval must be >= 1; got {cfg}")
    jobs = args.jobs or len(args.betas)
    if jobs == 1:
        for beta in args.betas:
            train_one(beta, cfg, args.out)
    else:
        # spawn: a fresh interpreter per model (no forked torch thread pools).
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as ex:
            for f in [ex.submit(train_one, beta, cfg, args.out) for beta in args.betas]:
                f.result()
    return 0


if __name__ == "__main__":
    sys.exit(main())
