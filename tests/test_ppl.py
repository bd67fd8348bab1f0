"""PPL engine: per-sample parity with independent float64 implementations of each peer's protocol, jvp vs fd,
reduced precision, statistics, batch/process/resume invariance, adapters and bad inputs."""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tangentlens import _streaming
from tangentlens.distances import L2Distance
from tangentlens.generators import as_generator
from tangentlens.generators.outputs import GeneratorRangeWarning
from tangentlens.lpips import LPIPS
from tangentlens.models.stylegan2 import StyleGAN2Generator
from tangentlens.ppl import (
    FiniteDifferenceWarning,
    PPLResult,
    bootstrap_ci,
    ppl,
    ppl_distances,
    trim,
    trimmed_stats,
)

EPS = 1e-4


def _stylegan(dtype: torch.dtype = torch.float64, res: int = 16, c_dim: int = 0) -> StyleGAN2Generator:
    G = StyleGAN2Generator(
        z_dim=12, c_dim=c_dim, w_dim=12, img_resolution=res, channel_base=256, channel_max=16, seed=3
    ).to(dtype)
    for name, p in G.named_parameters():
        if name.endswith("noise_strength"):
            p.data.fill_(0.2)  # trained generators have non-zero noise strengths
    return G


@pytest.fixture(scope="module")
def G64() -> StyleGAN2Generator:
    return _stylegan(torch.float64)


@pytest.fixture(scope="module")
def lpips64() -> LPIPS:
    return LPIPS("vgg16", pretrained=False).double()


def _latents(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(
        n, d, generator=g, dtype=torch.float64
    )


# ---- independent float64 implementations of the peers' protocols (SPEC 4), written from their documented
# formulas, sharing nothing with tangentlens.ppl -------------------------------------------------------------


def _nvidia_slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    d = (a * b).sum(dim=-1, keepdim=True)
    p = t * torch.acos(d)
    c = b - d * a
    c = c / c.norm(dim=-1, keepdim=True)
    out = a * torch.cos(p) + c * torch.sin(p)
    return out / out.norm(dim=-1, keepdim=True)


def _nvidia_protocol(G, lp, z0, z1, t, space, crop, noise=None):  # noqa: ANN001, ANN202
    t = t.reshape(-1, 1)
    if space == "w":
        w0, w1 = G.mapping(torch.cat([z0, z1]), None).chunk(2)
        wt0, wt1 = w0.lerp(w1, t.unsqueeze(2)), w0.lerp(w1, t.unsqueeze(2) + EPS)
    else:
        zt0, zt1 = _nvidia_slerp(z0, z1, t), _nvidia_slerp(z0, z1, t + EPS)
        wt0, wt1 = G.mapping(torch.cat([zt0, zt1]), None).chunk(2)
    nz = None if noise is None else [torch.cat([n, n]) for n in noise]
    img = G.synthesis(torch.cat([wt0, wt1]), noise_mode="const", force_fp32=True, noise=nz)
    if crop:
        c = img.shape[2] // 8
        img = img[:, :, c * 3 : c * 7, c * 2 : c * 6]
    factor = G.img_resolution // 256
    if factor > 1:
        img = img.reshape(img.shape[0], img.shape[1], img.shape[2] // factor, factor, -1, factor).mean([3, 5])
    img = (img + 1) * (255 / 2)
    e = lp.embed(img / 127.5 - 1)
    e0, e1 = e.chunk(2)
    return (e0 - e1).square().sum(1) / EPS**2


def test_stylegan2_preset_matches_nvidia_protocol(G64, lpips64) -> None:
    z0, z1 = _latents(6, 12)
    noise = [torch.randn(6, 1, h, w, dtype=torch.float64) for h, w in G64.synthesis.noise_shapes()]
    ref = _nvidia_protocol(G64, lpips64, z0, z1, torch.zeros(6, dtype=torch.float64), "w", False, noise)
    ours = ppl_distances(G64, z0, z1, 0.0, preset="stylegan2", distance=lpips64, noise=noise)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=0)


@pytest.mark.parametrize("space", ["z", "w"])
def test_stylegan2_crop_preset_full_sampling(G64, lpips64, space) -> None:
    G = _stylegan(torch.float64, res=32)
    z0, z1 = _latents(4, 12, seed=1)
    t = torch.rand(4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ref = _nvidia_protocol(G, lpips64, z0, z1, t, space, True)
    ours = ppl_distances(G, z0, z1, t, preset="stylegan2_crop", space=space, distance=lpips64)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=0)


@pytest.mark.parametrize("res", [32, 64, 128, 256, 512])  # the presets at 32-512 px (issue 17)
def test_box_downsample_above_256(res) -> None:
    # NVIDIA box-filters by res // 256 (after the crop too); a cheap generator and the pixel distance
    A = torch.randn(4, res * res, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) / 4

    def gen(z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z @ A).reshape(-1, 1, res, res)

    z0, z1 = _latents(3, 4)
    f, c = max(1, res // 256), res // 8
    for crop in (False, True):
        ours = ppl_distances(
            gen, z0, z1, 0.0, preset="stylegan2_crop", space="z", crop=crop, distance="l2", z_interp="lerp"
        )
        a, b = gen(z0), gen(z0.lerp(z1, EPS))
        if crop:
            a, b = a[:, :, 3 * c : 7 * c, 2 * c : 6 * c], b[:, :, 3 * c : 7 * c, 2 * c : 6 * c]
        a, b = (x.reshape(3, 1, x.shape[2] // f, f, x.shape[3] // f, f).mean([3, 5]) for x in (a, b))
        ref = (a - b).flatten(1).square().sum(1) / EPS**2
        torch.testing.assert_close(ours, ref, rtol=1e-7, atol=0)


class _TorchmetricsStyle(torch.nn.Module):
    """torchmetrics' generator protocol: sample(n) and forward(z) -> images in [0, 255]."""

    def __init__(self, res: int = 96) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.A = torch.nn.Parameter(torch.randn(8, 3 * res * res, generator=g, dtype=torch.float64) / 3)
        self.res = res

    def sample(self, n: int) -> torch.Tensor:
        return torch.randn(n, 8, dtype=torch.float64)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return 127.5 * (torch.tanh(z @ self.A) + 1).reshape(-1, 3, self.res, self.res)


@pytest.mark.parametrize("res", [32, 48, 64, 96, 128, 256, 512])  # the presets at 32-512 px (issue 17)
def test_torchmetrics_preset_matches_protocol(res) -> None:
    gen = _TorchmetricsStyle(res)
    lp = LPIPS("vgg16", pretrained=False, eps_mode="torchmetrics").double()
    z0, z1 = _latents(4, 8, seed=3)
    out = gen(torch.cat([z0, z0 + (z1 - z0) * EPS]))
    x = 2 * (out / 255) - 1
    mode = dict(mode="area") if res > 64 else dict(mode="bilinear", align_corners=False)
    x = F.interpolate(x, size=(64, 64), **mode)
    x0, x1 = x.chunk(2)
    ref = lp(x0, x1) / EPS**2
    ours = ppl_distances(gen, z0, z1, 0.0, preset="torchmetrics", distance=lp)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=0)
    # the preset's own LPIPS uses the torchmetrics eps convention
    d = ppl_distances(gen, z0, z1, 0.0, preset="torchmetrics", distance=lp, method="jvp")
    assert torch.all(torch.isfinite(d))


class _FidelityStyle(torch.nn.Module):
    """torch-fidelity's GenerativeModelBase protocol: z_size, z_type, num_classes; uint8 output."""

    z_size, z_type, num_classes = 8, "normal", 0

    def __init__(self) -> None:
        super().__init__()
        self.A = torch.nn.Parameter(
            torch.randn(8, 3 * 32 * 32, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(z @ self.A).reshape(-1, 3, 32, 32)
        return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def test_torch_fidelity_preset_matches_protocol(lpips64) -> None:
    gen = _FidelityStyle()
    z0, z1 = _latents(4, 8, seed=4)
    rgb = gen(torch.cat([z0, z0 + (z1 - z0) * EPS]))
    x = F.interpolate(rgb.to(torch.float64), size=(64, 64), mode="bilinear", align_corners=False)
    x0, x1 = (x / 127.5 - 1).chunk(2)
    ref = lpips64(x0, x1) / EPS**2
    with pytest.warns(FiniteDifferenceWarning, match="uint8"):
        ours = ppl_distances(gen, z0, z1, 0.0, preset="torch_fidelity", distance=lpips64)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=0)


def test_uint8_quantisation_destroys_fd_not_jvp() -> None:
    # a float generator under the torch-fidelity protocol: quantised fd is far off, jvp is the limit
    gen = _TorchmetricsStyle(32)
    gen_unit = as_generator(gen, output_range="0_255")
    z0, z1 = _latents(16, 8, seed=9)
    with pytest.warns(FiniteDifferenceWarning):
        q = ppl_distances(gen_unit, z0, z1, preset="torch_fidelity", distance="l2", resize=None)
    exact = ppl_distances(gen_unit, z0, z1, preset="torch_fidelity", distance="l2", resize=None, method="jvp")
    fd = ppl_distances(gen_unit, z0, z1, preset="torchmetrics", distance="l2", resize=None, epsilon=1e-6)
    torch.testing.assert_close(fd, exact, rtol=1e-3, atol=0)
    assert ((q - exact).abs() / exact).median() > 0.3


# ---- jvp vs fd ------------------------------------------------


@pytest.mark.parametrize("space", ["w", "z"])
def test_jvp_is_the_fd_limit(G64, lpips64, space) -> None:
    z0, z1 = _latents(5, 12, seed=5)
    t = torch.rand(5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    exact = ppl_distances(G64, z0, z1, t, space=space, method="jvp", distance=lpips64)
    errs = []
    for eps in (1e-4, 1e-6):
        fd = ppl_distances(G64, z0, z1, t, space=space, method="fd", epsilon=eps, distance=lpips64)
        errs.append(((fd - exact).abs() / exact).numpy())
    # O(eps), except where a ReLU of the VGG trunk changes sign inside the step (a kink): rare samples
    assert errs[0].max() < 2e-3
    assert np.median(errs[1]) < np.median(errs[0]) / 20


@pytest.mark.parametrize("interp", ["slerp", "lerp", "slerp_any", "slerp_any_unit"])
def test_jvp_generic_paths_agree(interp) -> None:
    # a generator without stacked rules (plain callable) and each distance kind: l2, embed, bare callable
    A = torch.randn(6, 3 * 8 * 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def gen(z: torch.Tensor) -> torch.Tensor:
        return torch.sin(z @ A).reshape(-1, 3, 8, 8)

    class Embedded(torch.nn.Module):
        def embed(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(x).flatten(1)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return (self.embed(a) - self.embed(b)).square().sum(1)

    def bare(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(a) - torch.tanh(b)).flatten(1).square().sum(1)

    z0, z1 = _latents(4, 6, seed=6)
    kw = dict(space="z", z_interp=interp, resize=None)
    for dist in (L2Distance(), Embedded(), bare):
        exact = ppl_distances(gen, z0, z1, 0.4, method="jvp", distance=dist, **kw)
        fd = ppl_distances(gen, z0, z1, 0.4, method="fd", epsilon=1e-6, distance=dist, **kw)
        torch.testing.assert_close(exact, fd, rtol=1e-4, atol=0)


@pytest.mark.parametrize("precision", ["bf16", "fp16", "tf32"])
def test_exact_mode_in_reduced_precision(precision, lpips64) -> None:
    G = _stylegan(torch.float32, res=16)
    lp = LPIPS("vgg16", pretrained=False)
    z0, z1 = _latents(16, 12, seed=7)
    z0, z1 = z0.float(), z1.float()
    ref = ppl_distances(G.double(), z0.double(), z1.double(), method="jvp", distance=lpips64)
    G = G.float()

    def errors(d: torch.Tensor) -> tuple[np.ndarray, float]:
        return ((d - ref).abs() / ref).numpy(), float(abs(d.mean() - ref.mean()) / ref.mean())

    rel, mean_err = errors(ppl_distances(G, z0, z1, method="jvp", distance=lp, precision=precision))
    print(
        f"exact mode {precision}: per-sample rel err median {np.median(rel):.2e} max {rel.max():.2e}, "
        f"mean rel err {mean_err:.2e}"
    )
    assert np.median(rel) < 0.05 and mean_err < 0.05
    if precision != "tf32":
        with pytest.raises(ValueError, match="cancel"):
            ppl_distances(G, z0, z1, method="fd", distance=lp, precision=precision)
        return
    # TF32 (emulated on the CPU): the finite difference runs, warns, and is far off; the exact mode is not
    with pytest.warns(FiniteDifferenceWarning, match="TF32"):
        fd_rel, fd_mean_err = errors(ppl_distances(G, z0, z1, method="fd", distance=lp, precision="tf32"))
    print(f"fd tf32: per-sample rel err median {np.median(fd_rel):.2e} max {fd_rel.max():.2e}")
    assert np.median(fd_rel) > 10 * np.median(rel)


def test_fd_tf32_warns(G64) -> None:
    z0, z1 = _latents(2, 12)
    with pytest.warns(FiniteDifferenceWarning, match="TF32"):
        ppl_distances(G64, z0, z1, method="fd", distance="l2", precision="tf32")
    # on the CPU the tensor cores are emulated, and the result says so
    res = _run(_stylegan(torch.float32, res=16), num_samples=4, batch_size=4, precision="tf32")
    assert any("emulated" in n for n in res.config["notes"]) and np.isfinite(res.mean)


# ---- statistics ------------------------------------------------


def test_trim_matches_numpy_and_torch_quantile() -> None:
    d = np.random.default_rng(0).lognormal(size=1001)
    kept, lo, hi = trim(d, (1, "lower"), (99, "higher"))
    assert lo == np.sort(d)[10] and hi == np.sort(d)[990]
    assert kept.sum() == 981
    kept2, lo2, hi2 = trim(d, (1, "lower"), (99, "lower"))  # torchmetrics: torch.quantile 'lower' both ends
    t = torch.from_numpy(d)
    assert lo2 == torch.quantile(t, 0.01, interpolation="lower").item()
    assert hi2 == torch.quantile(t, 0.99, interpolation="lower").item()
    st = trimmed_stats(d)
    assert st["mean"] == pytest.approx(d[kept].mean(), rel=1e-15)


@pytest.mark.parametrize("method", [("lower", "higher"), ("linear", "linear"), ("nearest", "midpoint")])
def test_bootstrap_retrims_each_replicate(method) -> None:
    d = np.random.default_rng(1).lognormal(size=257)
    d[::50] = d[0]  # ties
    lower, upper = (2.5, method[0]), (97.0, method[1])
    ci = bootstrap_ci(d, lower, upper, replicates=50, seed=3)
    # brute force with the same multinomial draws: materialise every replicate and trim it with numpy
    rng = np.random.default_rng(3)
    s = np.sort(d)
    means = []
    for _ in range(50):
        counts = np.bincount(rng.integers(0, s.size, s.size), minlength=s.size)
        x = np.repeat(s, counts)
        keep = (x >= np.percentile(x, lower[0], method=lower[1])) & (
            x <= np.percentile(x, upper[0], method=upper[1])
        )
        means.append(x[keep].mean())
    ref = (np.quantile(means, 0.025), np.quantile(means, 0.975))
    np.testing.assert_allclose(ci, ref, rtol=1e-12)


def test_bootstrap_ci_covers_the_standard_error() -> None:
    d = np.random.default_rng(2).exponential(size=4000)
    st = trimmed_stats(d)
    lo, hi = bootstrap_ci(d, replicates=400, seed=0)
    assert lo < st["mean"] < hi
    assert (hi - lo) / 2 == pytest.approx(1.96 * st["sem"], rel=0.15)


# ---- the streaming run ------------------------------------------------


@pytest.fixture(scope="module")
def G32() -> StyleGAN2Generator:
    return _stylegan(torch.float32)


def _run(G, **kw):  # noqa: ANN001, ANN202
    args = dict(num_samples=24, batch_size=8, distance="l2", progress=False, bootstrap=100, seed=11)
    args.update(kw)
    return ppl(G, **args)


def test_ppl_result_and_batch_invariance(G64) -> None:
    a = _run(G64, batch_size=8)
    b = _run(G64, batch_size=5)
    torch.testing.assert_close(a.distances, b.distances, rtol=1e-12, atol=0)
    assert a.num_samples == 24 and a.distances.shape == (24,) and a.kept.dtype == torch.bool
    assert a.ci_low < a.mean < a.ci_high
    kept, _, _ = trim(a.distances)
    assert a.mean == pytest.approx(a.distances.numpy()[kept].mean(), rel=1e-14)
    # sample i depends on (seed, i) only: the first 10 samples of a longer run are the same samples
    c = _run(G64, num_samples=10, batch_size=3)
    torch.testing.assert_close(c.distances, a.distances[:10], rtol=1e-12, atol=0)
    # and they are the samples ppl_distances computes for the same latents and noise
    from tangentlens import paths

    s = paths.sample(11, 0, 10, 12, interp="lerp", sampling="end", dtype=torch.float64)
    noise = as_generator(G64).noise(11, 0, 10, torch.device("cpu"))
    d = ppl_distances(G64, s.z0, s.z1, s.t, distance="l2", noise=noise)
    torch.testing.assert_close(d, c.distances, rtol=1e-12, atol=0)
    r = PPLResult.from_json(a.to_json())
    assert r.mean == a.mean and torch.equal(r.distances, a.distances) and r.config == a.config
    assert r.config["generator"]["fingerprint"] and r.versions["torch"] == torch.__version__


def test_what_the_batch_size_changes(G32) -> None:
    """What holds (docs/ppl.md): sample i's inputs depend on (seed, i) only; the same batch size gives the
    same distances bit for bit (also on resume and on any number of processes at that per-process batch,
    tests below), another batch size agrees to float rounding only (the kernels round differently per
    batch shape: about 1e-4 relative per sample in float32)."""
    a = _run(G32, num_samples=26, batch_size=8)
    assert torch.equal(a.distances, _run(G32, num_samples=26, batch_size=8).distances)
    b = _run(G32, num_samples=26, batch_size=13)
    torch.testing.assert_close(a.distances, b.distances, rtol=1e-3, atol=0)


def test_default_batch_is_device_aware(G64) -> None:
    from tangentlens.ppl import CPU_BATCH_MAX, CPU_BATCH_SIZE

    kw = dict(num_samples=6, distance="l2", progress=False, bootstrap=0, seed=3)
    default = ppl(G64, **kw)
    # on a CPU: from the measured cost of one forward pass (tests/test_first_hour.py), a power of two
    bs = default.config["batch_size"]
    assert bs == default.config["batch_size_auto"]["batch_size"] and bs & (bs - 1) == 0
    assert CPU_BATCH_SIZE <= bs <= CPU_BATCH_MAX
    assert ppl(G64, batch_size=5, **kw).config["batch_size"] == 5  # explicit wins
    torch.testing.assert_close(ppl(G64, batch_size=5, **kw).distances, default.distances, rtol=1e-5, atol=0)
    assert ppl(G64, preset="stylegan2", **kw).config["batch_size"] == 2  # a preset keeps its own


def test_checkpoint_resume_is_bit_identical(G32, tmp_path, monkeypatch) -> None:
    full = _run(G32, num_samples=40)
    ck = tmp_path / "run.ckpt"
    calls = {"n": 0}
    real = _streaming.save_checkpoint

    class Killed(Exception):
        pass

    def dying_save(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:  # killed after the third checkpoint (24 samples done)
            raise Killed

    monkeypatch.setattr(_streaming, "save_checkpoint", dying_save)
    with pytest.raises(Killed):
        _run(G32, num_samples=40, checkpoint=ck, checkpoint_every=0)
    monkeypatch.setattr(_streaming, "save_checkpoint", real)
    resumed = _run(G32, num_samples=40, checkpoint=ck)
    assert resumed.resumed_from == 24
    assert torch.equal(resumed.distances, full.distances)
    assert resumed.mean == full.mean and (resumed.ci_low, resumed.ci_high) == (full.ci_low, full.ci_high)
    # a finished checkpoint: nothing recomputed
    again = _run(G32, num_samples=40, checkpoint=ck)
    assert again.resumed_from == 40 and torch.equal(again.distances, full.distances)


def test_checkpoint_refuses_corruption_and_mismatch(G32, tmp_path) -> None:
    ck = tmp_path / "run.ckpt"
    _run(G32, num_samples=16, checkpoint=ck)
    with pytest.raises(_streaming.CheckpointError, match="seed"):
        _run(G32, num_samples=16, checkpoint=ck, seed=12)
    other = _stylegan(torch.float32)
    other.mapping.fc0.weight.data += 0.01
    with pytest.raises(_streaming.CheckpointError, match="generator"):
        _run(other, num_samples=16, checkpoint=ck)
    payload = torch.load(ck, weights_only=True)
    payload["rows"]["distance"][3] += 1e-9  # one altered value, the stored checksum kept
    torch.save(payload, ck)
    with pytest.raises(_streaming.CheckpointError, match="checksum mismatch"):
        _run(G32, num_samples=16, checkpoint=ck)
    raw = ck.read_bytes()
    ck.write_bytes(raw[: len(raw) // 2])  # a torn write
    with pytest.raises(_streaming.CheckpointError, match="cannot be read"):
        _run(G32, num_samples=16, checkpoint=ck)
    ck.write_bytes(b"not a checkpoint")
    with pytest.raises(_streaming.CheckpointError):
        _run(G32, num_samples=16, checkpoint=ck)


def test_target_rel_ci_stops_at_a_fixed_prefix() -> None:
    A = torch.randn(4, 3 * 4 * 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def gen(z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z @ A).reshape(-1, 3, 4, 4)

    kw = dict(num_samples=5000, distance="l2", progress=False, bootstrap=50, space="z", resize=None)
    a = ppl(as_generator(gen, z_dim=4, dtype=torch.float64), batch_size=64, target_rel_ci=0.05, **kw)
    b = ppl(as_generator(gen, z_dim=4, dtype=torch.float64), batch_size=100, target_rel_ci=0.05, **kw)
    assert a.stopped_early and a.num_samples % 1000 == 0 and a.num_samples < 5000
    assert a.num_samples == b.num_samples and a.mean == pytest.approx(b.mean, rel=1e-12)
    assert 1.96 * a.sem <= 0.05 * a.mean


def _dist_worker(rank: int, world: int, init: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        G = _stylegan(torch.float64)
        r = _run(G, num_samples=21, batch_size=4)
        r32 = _run(_stylegan(torch.float32), num_samples=21, batch_size=4)
        torch.save(
            {"d": r.distances, "mean": r.mean, "ws": r.config["world_size"], "d32": r32.distances},
            f"{out}.{rank}",
        )
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_two_processes_gloo_match_single_process(tmp_path) -> None:
    import torch.multiprocessing as mp

    init = f"file://{tmp_path / 'rdzv'}"
    out = str(tmp_path / "res")
    mp.start_processes(_dist_worker, args=(2, init, out), nprocs=2, join=True, start_method="spawn")
    single = _run(_stylegan(torch.float64), num_samples=21, batch_size=4)
    single32 = _run(_stylegan(torch.float32), num_samples=21, batch_size=4)  # float32 too: bit for bit
    for rank in (0, 1):
        r = torch.load(f"{out}.{rank}", weights_only=True)
        assert r["ws"] == 2
        assert torch.equal(r["d"], single.distances) and r["mean"] == single.mean
        assert torch.equal(r["d32"], single32.distances)


# ---- generators and bad inputs ------------------------------------------------


def test_adapters_and_labels() -> None:
    G = _stylegan(torch.float64, c_dim=3)
    ad = as_generator(G)
    c = ad.labels(0, 5, 4, None, torch.device("cpu"))
    assert c.shape == (4, 3) and torch.all(c.sum(1) == 1)
    torch.testing.assert_close(c[1:], ad.labels(0, 6, 3, None, torch.device("cpu")))
    rows = torch.eye(3, dtype=torch.float64)[[2, 2, 1]]
    assert all(r.tolist() in rows.tolist() for r in ad.labels(1, 0, 5, rows, torch.device("cpu")))
    r = _run(G, num_samples=8, batch_size=4)
    assert r.config["labels"] == "uniform classes" and r.config["generator"]["labels"] == "onehot"

    class VAE(torch.nn.Module):
        latent_dim = 5

        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(5, 3 * 8 * 8).double()

        def decode(self, z: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.lin(z)).reshape(-1, 3, 8, 8)

    v = as_generator(VAE())
    assert v.kind.startswith("VAE") and v.z_dim == 5
    assert as_generator(_TorchmetricsStyle(8)).output_range == "0_255"
    f = as_generator(_FidelityStyle())
    assert f.z_dim == 8 and f.output_range == "0_255"
    r = _run(VAE(), num_samples=8, space="z", resize=None)
    assert r.config["generator"]["kind"].startswith("VAE") and r.mean > 0


def test_bad_inputs(G64) -> None:
    z0, z1 = _latents(4, 12)
    with pytest.raises(ValueError, match="preset"):
        ppl(G64, preset="nvidia", num_samples=4)
    with pytest.raises(ValueError, match="space"):
        ppl(G64, space="x", num_samples=4)
    # the protocol's warning comes first (resolving the preset), then the missing num_samples
    with pytest.raises(ValueError, match="num_samples"), pytest.warns(FiniteDifferenceWarning, match="uint8"):
        ppl(G64, preset="torch_fidelity", distance="l2", progress=False)
    with pytest.raises(ValueError, match="num_samples"):
        ppl(G64, num_samples=0, distance="l2")
    with pytest.raises(ValueError, match="z0: expected z_dim = 12"):
        ppl_distances(G64, z0[:, :5], z1[:, :5], distance="l2")
    with pytest.raises(ValueError, match="z_dim"):
        as_generator(lambda z: z)
    with pytest.raises(ValueError, match="space='w'"):
        ppl_distances(lambda z: z.reshape(-1, 3, 2, 2), z0, z1, space="w")
    with pytest.raises(TypeError, match="generator"):
        as_generator(42)

    def nan_gen(z: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(z[:, :12].repeat(1, 4)).reshape(-1, 3, 4, 4).clone()
        x[2] = float("nan")
        return x

    with pytest.raises(FloatingPointError, match=r"sample indices \[2"):
        ppl_distances(as_generator(nan_gen, z_dim=12), z0, z1, space="z", distance="l2", method="fd")
    # a range far from the declared one warns (once) and never stops the run (issue 17: untrained
    # generators legitimately overshoot); it used to be an error
    with pytest.warns(GeneratorRangeWarning, match="output_range"):
        d = ppl_distances(
            as_generator(lambda z: 200 + nan_gen(z).nan_to_num(), z_dim=12), z0, z1, space="z", distance="l2"
        )
    assert d.shape == (4,)
    with pytest.raises(ValueError, match=r"images \[N, 1 or 3, H, W\]"):
        ppl_distances(as_generator(lambda z: z, z_dim=12), z0, z1, space="z", distance="l2")
    with pytest.raises(ValueError, match="unconditional"):
        ppl(G64, labels=torch.ones(3, 2), num_samples=4, distance="l2", progress=False)


def test_progress_output(G32, capsys) -> None:
    r = ppl(G32, num_samples=8, batch_size=4, distance="l2", progress=True, bootstrap=20)
    err = capsys.readouterr().err
    assert "ppl" in err and math.isfinite(r.mean)


def test_histogram_plot(G32, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    r = _run(G32, num_samples=16)
    ax = r.plot_histogram()
    ax.figure.savefig(tmp_path / "h.png")
    assert os.path.getsize(tmp_path / "h.png") > 1000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert PPLResult.from_json(r.to_json(include_distances=False)).distances.numel() == 0


def test_nvidia_style_object_not_convertible_runs_and_says_so() -> None:
    # an object with NVIDIA's interface that convert_nvidia_generator cannot map (no init kwargs): it runs as
    # it is (constant noise buffers), the JVP goes through the generic engine, and the config says both
    G = _stylegan(torch.float64)

    class NvidiaLike(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = G
            self.mapping, self.synthesis = G.mapping, G.synthesis
            self.z_dim, self.c_dim, self.w_dim, self.num_ws = G.z_dim, 0, G.w_dim, G.num_ws
            self.img_resolution = G.img_resolution

    z0, z1 = _latents(3, 12, seed=8)
    obj = NvidiaLike()
    exact = ppl_distances(obj, z0, z1, 0.0, method="jvp", distance="l2")
    fd = ppl_distances(obj, z0, z1, 0.0, method="fd", distance="l2", epsilon=1e-6)
    torch.testing.assert_close(exact, fd, rtol=1e-4, atol=0)
    r = _run(obj, num_samples=4, batch_size=2)
    notes = " ".join(r.config["generator"]["notes"])
    assert "not converted" in notes and "constant noise" in notes
