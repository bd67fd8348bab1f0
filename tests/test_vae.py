"""The demo VAE (tangentlens.models.vae): shapes, differentiability for the geometry engine, weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tangentlens
from tangentlens.data import NUM_COMBINATIONS, DSpritesBatches, dsprites, index_to_factors
from tangentlens.models.vae import (
    DEMO_BETAS,
    VAE,
    VAEGenerator,
    bce_per_image,
    demo_weights_path,
    load_demo_vae,
)

# Held-out reconstruction bounds for the shipped models: mean Bernoulli NLL per image (nats) decoded from the
# posterior mean, and pixel MSE of the Bernoulli means. Measured: beta=1 62.6 nats / 0.00273, beta=4
# 69.1 / 0.00317 on the training log's 2 000 unseen images; 61.1-63.3 / 0.00260-0.00275 and 68.0-69.8 /
# 0.00307-0.00319 on this test's 300 (three seeds). The bounds leave a margin of about 25 %. For scale: the
# best constant image scores ~590 nats / 0.035; the targets' own entropy (the NLL's floor) is 24.2 nats.
HELD_OUT_BOUNDS = {1: {"bce": 80.0, "mse": 0.0035}, 4: {"bce": 88.0, "mse": 0.0040}}


def _images(n: int, seed: int) -> torch.Tensor:
    f = index_to_factors(np.random.default_rng(seed).integers(0, NUM_COMBINATIONS, size=n))
    return torch.from_numpy(dsprites(f))


# --------------------------------------------------------------------------------------------- the model
def test_shapes_and_ranges():
    vae = VAE(seed=0)
    assert vae.z_dim == 10
    n_params = sum(p.numel() for p in vae.parameters())
    assert n_params < 600_000  # two float32 models < 5 MB
    x = _images(5, 0)
    mean, logvar = vae.encode(x)
    assert mean.shape == logvar.shape == (5, 10)
    z = torch.randn(5, 10)
    logits = vae.decode_logits(z)
    assert logits.shape == (5, 1, 64, 64)
    img = vae.decode(z)
    assert img.shape == (5, 1, 64, 64) and img.min() >= -1 and img.max() <= 1
    torch.testing.assert_close(img, 2 * torch.sigmoid(logits) - 1)
    rgb = vae.decode(z, channels=3)
    assert rgb.shape == (5, 3, 64, 64)
    assert torch.equal(rgb[:, 0], rgb[:, 1]) and torch.equal(rgb[:, 0], rgb[:, 2])
    assert torch.equal(rgb[:, :1], img)
    assert vae.decode(z[0]).shape == (1, 64, 64)
    gen = vae.generator()
    assert isinstance(gen, VAEGenerator) and gen.z_dim == 10 and torch.equal(gen(z), rgb)
    recon = vae.reconstruct(x)
    assert recon.shape == x.shape and recon.min() >= 0 and recon.max() <= 1


def test_loss_and_seeded_init():
    state = torch.random.get_rng_state()
    a, b = VAE(seed=3), VAE(seed=3)
    assert torch.equal(state, torch.random.get_rng_state())  # seeded init leaves the global RNG alone
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    assert not torch.equal(VAE(seed=4).enc_fc.weight, a.enc_fc.weight)
    x = _images(4, 1)
    out = a.loss(x, beta=4.0, generator=torch.Generator().manual_seed(0))
    assert set(out) == {"loss", "recon", "kl"}
    torch.testing.assert_close(out["loss"], out["recon"] + 4.0 * out["kl"])
    assert out["kl"] >= 0 and out["recon"] > 0
    out["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in a.parameters())


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda v: v.encode(torch.zeros(2, 3, 64, 64)), ValueError, r"x: expected a tensor \[N, 1, 64, 64\]"),
        (lambda v: v.decode(torch.zeros(2, 9)), ValueError, r"z: expected a tensor \[N, 10\]"),
        (lambda v: v.decode(torch.zeros(2, 10), channels=2), ValueError, "channels: expected 1 or 3, got 2"),
        (lambda v: VAE(z_dim=0), ValueError, "z_dim: expected a positive int, got 0"),
        (lambda v: VAE(channels=(8, 8)), ValueError, "channels: expected 4 positive ints"),
    ],
)
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call(VAE(seed=0))


def _fd_check(vae: VAE, z: torch.Tensor, v: torch.Tensor) -> None:
    def f(z_):
        return vae.decode(z_, channels=3)

    out, tan = torch.func.jvp(f, (z,), (v,))
    h = 1e-6
    fd = (f(z + h * v) - f(z - h * v)) / (2 * h)
    torch.testing.assert_close(out, f(z))
    torch.testing.assert_close(tan, fd, rtol=1e-6, atol=1e-8)


def test_jvp_matches_finite_differences_float64():
    vae = VAE(seed=0).double()
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 10, generator=g, dtype=torch.float64)
    v = torch.randn(3, 10, generator=g, dtype=torch.float64)
    _fd_check(vae, z, v)
    # vmap over tangents of one primal (the engine's pattern) equals one JVP per tangent.
    V = torch.randn(4, 3, 10, generator=g, dtype=torch.float64)
    batched = torch.func.vmap(lambda t: torch.func.jvp(lambda z_: vae.decode(z_, 3), (z,), (t,))[1])(V)
    for k in range(4):
        torch.testing.assert_close(batched[k], torch.func.jvp(lambda z_: vae.decode(z_, 3), (z,), (V[k],))[1])


def test_geometry_engine_runs_forward_mode():
    gen = VAE(seed=0).generator()
    z = torch.randn(2, 10)
    assert tangentlens.coverage(gen, z).fully_supported
    out, tan = tangentlens.jvp(gen, z, torch.eye(10), method="forward")
    assert out.shape == (2, 3, 64, 64) and tan.shape == (2, 10, 3, 64, 64)
    ref = torch.func.jvp(gen, (z,), (torch.eye(10)[3].expand(2, 10),))[1]
    torch.testing.assert_close(tan[:, 3], ref, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ shipped weights
@pytest.mark.parametrize("beta", DEMO_BETAS)
def test_shipped_weights_load_from_installed_package(beta):
    path = demo_weights_path(beta)
    # The weights are package data of the installed tangentlens (not read from the source tree).
    assert path.parent == Path(tangentlens.__file__).parent / "models" / "weights"
    assert path.is_file() and path.with_suffix(".json").is_file()
    vae = load_demo_vae(beta)
    assert not vae.training and not any(p.requires_grad for p in vae.parameters())
    log = json.loads(path.with_suffix(".json").read_text())
    assert log["beta"] == beta and log["config"]["model"] == vae.config
    assert log["num_parameters"] == sum(p.numel() for p in vae.parameters())


def _unseen_images(log: dict, n: int, seed: int) -> torch.Tensor:
    """``n`` images from a fresh seed among the grid points the model's training stream never drew."""
    train = log["config"]["train"]
    seen = np.zeros(NUM_COMBINATIONS, dtype=bool)
    for idx in DSpritesBatches(train["batch_size"], train["steps"], seed=train["seed"]).iter_indices():
        seen[idx] = True
    pick = np.random.default_rng(seed).choice(np.flatnonzero(~seen), size=n, replace=False)
    return torch.from_numpy(dsprites(index_to_factors(pick)))


@pytest.mark.parametrize("beta", DEMO_BETAS)
def test_shipped_weights_reconstruct_held_out(beta):
    vae = load_demo_vae(beta)
    log = json.loads(demo_weights_path(beta).with_suffix(".json").read_text())
    x = _unseen_images(log, 300, seed=31_337)
    with torch.no_grad():
        mean, _ = vae.encode(x)
        logits = vae.decode_logits(mean)
        bce = float(bce_per_image(logits, x).mean())
        mse = float((torch.sigmoid(logits) - x).square().mean())
        # Trivial baseline: the best constant image for this very set (its per-pixel mean).
        p = x.mean(0, keepdim=True).clamp(1e-6, 1 - 1e-6).expand_as(x)
        base_bce = float(F.binary_cross_entropy(p, x, reduction="none").flatten(1).sum(1).mean())
        base_mse = float((p - x).square().mean())
    bounds = HELD_OUT_BOUNDS[beta]
    assert bce < bounds["bce"] and mse < bounds["mse"], (bce, mse)
    # Clearly better than the trivial baseline (measured ratios: NLL 0.11-0.12, MSE 0.08-0.09).
    assert bce < 0.2 * base_bce and mse < 0.15 * base_mse, (bce, base_bce, mse, base_mse)


def test_shipped_beta4_uses_fewer_latents():
    # The KL pressure of beta=4 switches off latents: measured 7 active dims (KL > 0.1 nat) for beta=1, 5 for
    # beta=4 (as many as there are factors), and a total KL of 20.4 vs 12.4 nats.
    x = _images(500, 7)
    kl = {}
    with torch.no_grad():
        for beta in DEMO_BETAS:
            mean, logvar = load_demo_vae(beta).encode(x)
            kl[beta] = (0.5 * (mean.square() + logvar.exp() - logvar - 1)).mean(0)
    active = {beta: int((k > 0.1).sum()) for beta, k in kl.items()}
    assert 4 <= active[4] < active[1], active
    assert float(kl[4].sum()) < 0.8 * float(kl[1].sum())


def test_shipped_weights_jvp_float64():
    vae = load_demo_vae(1).double()
    g = torch.Generator().manual_seed(1)
    z, v = torch.randn(2, 2, 10, generator=g, dtype=torch.float64)
    _fd_check(vae, z, v)


def test_loading_rejects_missing_or_wrong_weights(tmp_path):
    with pytest.raises(ValueError, match=r"beta: expected one of the demo models \(1, 4\), got 2"):
        load_demo_vae(2)
    with pytest.raises(ValueError, match="beta: expected one of"):
        load_demo_vae(True)
    with pytest.raises(FileNotFoundError, match=r"beta=1: expected the file .*vae_dsprites_beta1\.pt"):
        load_demo_vae(1, weights_dir=tmp_path)
    torch.save(VAE(channels=(8, 8, 8, 8)).state_dict(), tmp_path / "vae_dsprites_beta4.pt")
    with pytest.raises(RuntimeError, match="do not fit VAE"):
        load_demo_vae(4, weights_dir=tmp_path)
    # A directory of freshly trained weights loads the same way.
    torch.save(VAE(seed=5).state_dict(), tmp_path / "vae_dsprites_beta1.pt")
    assert torch.equal(load_demo_vae(1, weights_dir=tmp_path).enc_fc.weight, VAE(seed=5).enc_fc.weight)
