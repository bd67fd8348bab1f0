"""A small convolutional β-VAE for 64×64×1 images, and the two demo models trained on procedural dSprites.

Architecture after disentanglement_lib's ``conv_encoder`` / ``deconv_decoder`` (Higgins et al. 2017 /
Locatello et al. 2019), slimmed for CPU training: half the channels in the three high-resolution layers
(16, 16, 32, 64 instead of 32, 32, 64, 64: a third of the FLOPs) and a fully-connected layer of 128 units
instead of 256, so a model has 0.36 M parameters and the two shipped float32 models take < 3 MB together:

* encoder: 4 × [conv 4×4 stride 2, ReLU] (``channels`` = 16, 16, 32, 64 by default; 64 → 32 → 16 → 8 → 4),
  fc ``hidden`` + ReLU, fc ``2 z_dim`` -> posterior mean and log-variance;
* decoder: fc ``hidden`` + ReLU, fc ``channels[-1] · 4 · 4`` + ReLU, 4 × [transposed conv 4×4 stride 2]
  through the channels in reverse, ReLU between -> one channel of Bernoulli logits at 64×64.

Data convention: ``encode`` takes images in [0, 1] (ink intensity = Bernoulli mean, what
:mod:`tangentlens.data` renders); ``decode`` returns images in [-1, 1] (``2 sigmoid(logits) - 1``, the
generator convention of SPEC §1), with ``channels=3`` repeating the grey channel for LPIPS. The forward
computation has no in-place ops and no data-dependent control flow, so ``torch.func.jvp`` / ``vmap`` work
through ``decode`` (the geometry engine's requirement).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DEMO_BETAS", "VAE", "VAEGenerator", "demo_weights_path", "load_demo_vae"]

DEMO_BETAS: tuple[int, ...] = (1, 4)
_IMAGE = (1, 64, 64)


class VAE(nn.Module):
    """Convolutional VAE with a diagonal Gaussian posterior and a Bernoulli decoder for ``[N, 1, 64, 64]``.

    ``seed`` (optional) makes the initialisation independent of the global RNG state.
    """

    def __init__(
        self,
        z_dim: int = 10,
        channels: Sequence[int] = (16, 16, 32, 64),
        hidden: int = 128,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        for name, v in (("z_dim", z_dim), ("hidden", hidden)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        ch = tuple(channels)
        if len(ch) != 4 or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in ch):
            raise ValueError(f"channels: expected 4 positive ints (four stride-2 layers), got {channels!r}")
        self.z_dim, self.channels, self.hidden = z_dim, ch, hidden
        enc = list(zip((1, *ch[:-1]), ch, strict=True))
        dec = [(c_out, c_in) for c_in, c_out in reversed(enc)]
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            self.enc_convs = nn.ModuleList([nn.Conv2d(i, o, 4, 2, 1) for i, o in enc])
            self.enc_fc = nn.Linear(ch[-1] * 16, hidden)
            self.enc_out = nn.Linear(hidden, 2 * z_dim)
            self.dec_fc1 = nn.Linear(z_dim, hidden)
            self.dec_fc2 = nn.Linear(hidden, ch[-1] * 16)
            self.dec_convs = nn.ModuleList([nn.ConvTranspose2d(i, o, 4, 2, 1) for i, o in dec])

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments (without ``seed``), as stored next to the demo weights."""
        return {"z_dim": self.z_dim, "channels": list(self.channels), "hidden": self.hidden}

    # --------------------------------------------------------------------------------------------- encoder
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior ``(mean, logvar)``, each ``[N, z_dim]``, for images ``x [N, 1, 64, 64]`` in [0, 1]."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != _IMAGE:
            raise ValueError(f"x: expected a tensor [N, 1, 64, 64] in [0, 1], got {_shape(x)}")
        h = x
        for conv in self.enc_convs:
            h = F.relu(conv(h))
        h = F.relu(self.enc_fc(h.flatten(1)))
        mean, logvar = self.enc_out(h).chunk(2, dim=1)
        return mean, logvar

    # --------------------------------------------------------------------------------------------- decoder
    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits ``[N, 1, 64, 64]`` for ``z [N, z_dim]`` (``z [z_dim]`` gives ``[1, 64, 64]``)."""
        single = isinstance(z, torch.Tensor) and z.ndim == 1
        if not isinstance(z, torch.Tensor) or z.ndim not in (1, 2) or z.shape[-1] != self.z_dim:
            raise ValueError(f"z: expected a tensor [N, {self.z_dim}] or [{self.z_dim}], got {_shape(z)}")
        h = z.unsqueeze(0) if single else z
        h = F.relu(self.dec_fc1(h))
        h = F.relu(self.dec_fc2(h)).unflatten(1, (self.channels[-1], 4, 4))
        last = len(self.dec_convs) - 1
        for i, deconv in enumerate(self.dec_convs):  # static loop: the same ops for every input
            h = deconv(h)
            if i < last:
                h = F.relu(h)
        return h.squeeze(0) if single else h

    def decode(self, z: torch.Tensor, channels: int = 1) -> torch.Tensor:
        """Images in [-1, 1] (``2 sigmoid(logits) - 1``): ``[N, channels, 64, 64]``, ``channels`` 1 or 3
        (3 repeats the grey channel, for RGB feature maps such as LPIPS)."""
        if channels not in (1, 3):
            raise ValueError(f"channels: expected 1 or 3, got {channels!r}")
        img = 2.0 * torch.sigmoid(self.decode_logits(z)) - 1.0
        if channels == 3:
            img = img.repeat_interleave(3, dim=-3)
        return img

    def generator(self, channels: int = 3) -> VAEGenerator:
        """The decoder as a generator module ``z [N, z_dim] -> [N, channels, 64, 64]`` in [-1, 1]."""
        return VAEGenerator(self, channels)

    # ------------------------------------------------------------------------------------------- training
    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, mean, logvar)`` with ``z = mean + exp(logvar / 2) ε`` (ε from ``generator``)."""
        mean, logvar = self.encode(x)
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return self.decode_logits(mean + torch.exp(0.5 * logvar) * eps), mean, logvar

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Bernoulli means ``[N, 1, 64, 64]`` in [0, 1] decoded from the posterior mean (no sampling)."""
        return torch.sigmoid(self.decode_logits(self.encode(x)[0]))

    def loss(
        self, x: torch.Tensor, beta: float = 1.0, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """β-VAE objective, per image (mean over the batch): ``recon + beta * kl``.

        ``recon`` = Bernoulli negative log-likelihood (binary cross-entropy with logits, summed over pixels;
        targets may be fractional, as anti-aliased edges are), ``kl`` = KL(q(z|x) ‖ N(0, I)) in nats.
        """
        logits, mean, logvar = self(x, generator)
        recon = bce_per_image(logits, x).mean()
        kl = kl_per_image(mean, logvar).mean()
        return {"loss": recon + beta * kl, "recon": recon, "kl": kl}


class VAEGenerator(nn.Module):
    """``z -> vae.decode(z, channels)``: the VAE decoder with the generator interface (``z_dim``)."""

    def __init__(self, vae: VAE, channels: int = 3) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ValueError(f"channels: expected 1 or 3, got {channels!r}")
        self.vae = vae
        self.channels = channels
        self.z_dim = vae.z_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z, self.channels)


def bce_per_image(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bernoulli negative log-likelihood of ``x`` in [0, 1] under ``logits``, summed per image: ``[N]``."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def kl_per_image(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, diag exp(logvar)) ‖ N(0, I)) per row: ``[N]``."""
    return 0.5 * (mean.square() + logvar.exp() - logvar - 1.0).sum(1)


def _shape(t: Any) -> str:
    return f"shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__


def _check_beta(beta: Any) -> int:
    if isinstance(beta, bool) or not isinstance(beta, int) or beta not in DEMO_BETAS:
        raise ValueError(f"beta: expected one of the demo models {DEMO_BETAS}, got {beta!r}")
    return beta


def demo_weights_path(beta: int, weights_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of the demo weights ``vae_dsprites_beta{beta}.pt`` (in the installed package by default)."""
    _check_beta(beta)
    base = (
        Path(str(resources.files("tangentlens.models") / "weights"))
        if weights_dir is None
        else Path(weights_dir)
    )
    return base / f"vae_dsprites_beta{beta}.pt"


def load_demo_vae(beta: int, weights_dir: str | os.PathLike[str] | None = None) -> VAE:
    """The demo VAE trained on procedural dSprites with ``beta`` (1 or 4), in eval mode, parameters frozen.

    Weights come from the installed package (``tangentlens/models/weights``) unless ``weights_dir`` is given;
    the architecture is read from the training log next to them (``vae_dsprites_beta{beta}.json``).
    """
    path = demo_weights_path(beta, weights_dir)
    if not path.is_file():
        raise FileNotFoundError(
            f"demo VAE weights for beta={beta}: expected the file {path}, which does not exist "
            "(train them with scripts/train_demo_models.py, or reinstall tangentlens)"
        )
    log_path = path.with_suffix(".json")
    config: dict[str, Any] = {}
    if log_path.is_file():
        config = json.loads(log_path.read_text())["config"]["model"]
    vae = VAE(**config)
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        vae.load_state_dict(state)
    except RuntimeError as exc:
        raise RuntimeError(f"demo VAE weights {path} do not fit VAE({config}): {exc}") from exc
    return vae.eval().requires_grad_(False)
