"""tangentlens.torchmetrics.PerceptualPathLength: torchmetrics' interface on our engine. torchmetrics is not
installed here, so a minimal stand-in ``torchmetrics.Metric`` is provided when it is missing."""

from __future__ import annotations

import importlib
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from tangentlens.lpips import LPIPS


@pytest.fixture()
def tm_module(monkeypatch):  # noqa: ANN001, ANN201
    try:
        import torchmetrics  # noqa: F401
    except ImportError:
        fake = types.ModuleType("torchmetrics")

        class Metric(torch.nn.Module):
            def __init__(self, **kwargs: object) -> None:
                super().__init__()

        fake.Metric = Metric
        monkeypatch.setitem(sys.modules, "torchmetrics", fake)
    monkeypatch.delitem(sys.modules, "tangentlens.torchmetrics", raising=False)
    return importlib.import_module("tangentlens.torchmetrics")


class Gen(torch.nn.Module):
    def __init__(self, num_classes: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.A = torch.nn.Parameter(torch.randn(6, 3 * 48 * 48, generator=g, dtype=torch.float64) / 3)
        self.B = torch.nn.Parameter(torch.randn(max(num_classes, 1), 6, generator=g, dtype=torch.float64))
        self.num_classes = num_classes

    def sample(self, n: int) -> torch.Tensor:
        return torch.randn(n, 6, dtype=torch.float64)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is not None:
            z = z + self.B[labels]
        return 127.5 * (torch.tanh(z @ self.A) + 1).reshape(-1, 3, 48, 48)


@pytest.mark.parametrize("conditional", [False, True])
def test_matches_torchmetrics_protocol(tm_module, conditional) -> None:
    net = LPIPS("vgg16", pretrained=False, eps_mode="torchmetrics").double()
    G = Gen(3 if conditional else 0)
    m = tm_module.PerceptualPathLength(num_samples=20, batch_size=7, sim_net=net, conditional=conditional)
    assert m.higher_is_better is False
    m.update(G)
    torch.manual_seed(0)
    mean, std, kept = m.compute()
    # torchmetrics' protocol by hand, same global RNG draws
    torch.manual_seed(0)
    z0, z1 = G.sample(20), G.sample(20)
    labels = torch.randint(0, 3, (20,)) if conditional else None
    z1 = z0 + (z1 - z0) * 1e-4
    args = (torch.cat([z0, z1]),) + ((torch.cat([labels, labels]),) if conditional else ())
    out = G(*args)
    x = F.interpolate(2 * (out / 255) - 1, size=(64, 64), mode="bilinear", align_corners=False)
    d = net(*x.chunk(2)) / 1e-4**2
    lo = torch.quantile(d, 0.01, interpolation="lower")
    hi = torch.quantile(d, 0.99, interpolation="lower")
    ref = d[(d >= lo) & (d <= hi)]
    torch.testing.assert_close(kept, ref, rtol=1e-9, atol=0)
    torch.testing.assert_close(mean, ref.mean(), rtol=1e-9, atol=0)
    torch.testing.assert_close(std, ref.std(), rtol=1e-9, atol=0)


def test_exact_mode_and_errors(tm_module) -> None:
    net = LPIPS("vgg16", pretrained=False, eps_mode="torchmetrics").double()
    m = tm_module.PerceptualPathLength(num_samples=8, batch_size=4, sim_net=net, method="jvp")
    m.update(Gen())
    mean, _, _ = m.compute()
    assert torch.isfinite(mean) and mean > 0
    with pytest.raises(ValueError, match="batch_size"):
        tm_module.PerceptualPathLength(batch_size=0)
    with pytest.raises(ValueError, match="interpolation_method"):
        tm_module.PerceptualPathLength(interpolation_method="slerp", sim_net=net)
    with pytest.raises(NotImplementedError, match="sample"):
        m.update(lambda z: z)
    with pytest.raises(RuntimeError, match="update"):
        tm_module.PerceptualPathLength(sim_net=net).compute()


def _slerp_any(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """torchmetrics' slerp_any from its description (no collinear rows among Gaussian draws)."""
    ua, ub = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    w = (ua * ub).sum(1, keepdim=True).acos()
    return (((1 - t) * w).sin() * a + (t * w).sin() * b) / w.sin()


@pytest.mark.parametrize("interp", ["slerp_any", "slerp_unit"])
def test_slerp_paths_match_torchmetrics(tm_module, interp) -> None:
    net = LPIPS("vgg16", pretrained=False, eps_mode="torchmetrics").double()
    G = Gen()
    m = tm_module.PerceptualPathLength(num_samples=12, batch_size=5, sim_net=net, interpolation_method=interp)
    m.update(G)
    torch.manual_seed(3)
    _, _, kept = m.compute()
    torch.manual_seed(3)
    z0, z1 = G.sample(12), G.sample(12)
    eps = 1e-4
    a, b = z0, _slerp_any(z0, z1, eps)
    if interp == "slerp_unit":  # both points on the normalised path (torchmetrics starts from the raw z0)
        a, b = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    out = G(torch.cat([a, b]))
    x = F.interpolate(2 * (out / 255) - 1, size=(64, 64), mode="bilinear", align_corners=False)
    d = net(*x.chunk(2)) / eps**2
    lo, hi = torch.quantile(d, 0.01, interpolation="lower"), torch.quantile(d, 0.99, interpolation="lower")
    torch.testing.assert_close(kept, d[(d >= lo) & (d <= hi)], rtol=1e-7, atol=0)
    # the exact mode is the eps -> 0 limit of the same path
    m_jvp = tm_module.PerceptualPathLength(
        num_samples=12, batch_size=5, sim_net=net, interpolation_method=interp, method="jvp"
    )
    m_jvp.update(G)
    torch.manual_seed(3)
    _, _, kept_jvp = m_jvp.compute()
    torch.testing.assert_close(kept_jvp, kept, rtol=2e-3, atol=0)


def test_custom_sim_net_without_resize_is_torchmetrics(tm_module) -> None:
    # torchmetrics resizes only inside its own LPIPS: resize=None reproduces it for a custom module
    net = LPIPS("vgg16", pretrained=False, eps_mode="torchmetrics").double()
    G = Gen()
    m = tm_module.PerceptualPathLength(
        num_samples=6, batch_size=4, sim_net=net, resize=None, lower_discard=None, upper_discard=None
    )
    m.update(G)
    torch.manual_seed(1)
    _, _, d = m.compute()
    torch.manual_seed(1)
    z0, z1 = G.sample(6), G.sample(6)
    out = G(torch.cat([z0, z0 + (z1 - z0) * 1e-4]))
    ref = net(*(2 * (out / 255) - 1).chunk(2)) / 1e-4**2
    torch.testing.assert_close(d, ref, rtol=1e-9, atol=0)
