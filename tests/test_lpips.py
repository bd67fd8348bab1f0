"""LPIPS module: formula parity with an independent float64 implementation on weights saved in the real
file formats, the embedding identity, tangents vs torch.func.jvp, NVIDIA's TorchScript interface, weight
discovery, safe loading and errors."""

import contextlib
import hashlib
import math
import pickle
import sys

import pytest
import torch
import torch.nn.functional as F

import tangentlens
from tangentlens import weights
from tangentlens.distances import L2Distance, make_distance
from tangentlens.lpips import LPIPS, WeightsNotFoundError, find_weights

# ---- an independent float64 LPIPS: functional layers straight from the state-dict keys ---------------

# (op, ...) lists of torchvision's `features` Sequentials; taps after the listed indices.
VGG16_OPS = [
    ("conv", i) if i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28) else None for i in range(30)
]
ARCH = {
    "vgg16": dict(
        convs={i: (1, 1) for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)},
        pools={4: (2, 2, False), 9: (2, 2, False), 16: (2, 2, False), 23: (2, 2, False)},
        fires={},
        taps=[3, 8, 15, 22, 29],
        channels=[64, 128, 256, 512, 512],
        shapes=[
            (64, 3, 3),
            (64, 64, 3),
            (128, 64, 3),
            (128, 128, 3),
            (256, 128, 3),
            (256, 256, 3),
            (256, 256, 3),
        ]
        + [(512, 256, 3), (512, 512, 3), (512, 512, 3), (512, 512, 3), (512, 512, 3), (512, 512, 3)],
        n=30,
    ),
    "alex": dict(
        convs={0: (4, 2), 3: (1, 2), 6: (1, 1), 8: (1, 1), 10: (1, 1)},
        pools={2: (3, 2, False), 5: (3, 2, False)},
        fires={},
        taps=[1, 4, 7, 9, 11],
        channels=[64, 192, 384, 256, 256],
        shapes=[(64, 3, 11), (192, 64, 5), (384, 192, 3), (256, 384, 3), (256, 256, 3)],
        n=12,
    ),
    "squeeze": dict(
        convs={0: (2, 0)},
        pools={2: (3, 2, True), 5: (3, 2, True), 8: (3, 2, True)},
        fires={3: (64, 16, 64), 4: (128, 16, 64), 6: (128, 32, 128), 7: (256, 32, 128), 9: (256, 48, 192)}
        | {10: (384, 48, 192), 11: (384, 64, 256), 12: (512, 64, 256)},
        taps=[1, 4, 7, 9, 10, 11, 12],
        channels=[64, 128, 256, 384, 384, 512, 512],
        shapes=[(64, 3, 3)],
        n=13,
    ),
}


def _random_state(net, seed=0):
    """A torchvision-style state dict (features.N.weight / bias, plus a classifier key to be ignored)."""
    g = torch.Generator().manual_seed(seed)
    a = ARCH[net]
    state = {}

    def conv(key, c_out, c_in, k):
        state[f"{key}.weight"] = torch.randn(c_out, c_in, k, k, generator=g) * math.sqrt(2.0 / (c_in * k * k))
        state[f"{key}.bias"] = 0.05 * torch.randn(c_out, generator=g)

    for (idx, _), shape in zip(sorted(a["convs"].items()), a["shapes"], strict=True):
        conv(f"features.{idx}", *shape)
    for idx, (c_in, sq, ex) in a["fires"].items():
        conv(f"features.{idx}.squeeze", sq, c_in, 1)
        conv(f"features.{idx}.expand1x1", ex, sq, 1)
        conv(f"features.{idx}.expand3x3", ex, sq, 3)
    state["classifier.0.weight"] = torch.randn(4, 4, generator=g)
    return state


def _random_linear(net, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {
        f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) / c
        for i, c in enumerate(ARCH[net]["channels"])
    }


def _independent_lpips(net, state, lin, x0, x1, eps, inside, input_255=False):
    a = ARCH[net]
    st = {k: v.double() for k, v in state.items()}

    def feats(x):
        x = x.double()
        if input_255:
            x = x / 127.5 - 1
        shift = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64).view(1, 3, 1, 1)
        scale = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64).view(1, 3, 1, 1)
        x = (x - shift) / scale
        out = []
        for i in range(a["n"]):
            if i in a["convs"]:
                s, p = a["convs"][i]
                x = F.conv2d(x, st[f"features.{i}.weight"], st[f"features.{i}.bias"], stride=s, padding=p)
            elif i in a["pools"]:
                k, s, ceil = a["pools"][i]
                x = F.max_pool2d(x, k, s, ceil_mode=ceil)
            elif i in a["fires"]:
                sq = F.relu(F.conv2d(x, st[f"features.{i}.squeeze.weight"], st[f"features.{i}.squeeze.bias"]))
                e1 = F.conv2d(sq, st[f"features.{i}.expand1x1.weight"], st[f"features.{i}.expand1x1.bias"])
                e3 = F.conv2d(
                    sq, st[f"features.{i}.expand3x3.weight"], st[f"features.{i}.expand3x3.bias"], padding=1
                )
                x = torch.cat([F.relu(e1), F.relu(e3)], 1)
            else:
                x = F.relu(x)
            if i in a["taps"]:
                out.append(x)
        return out

    total = 0
    for layer, (f0, f1) in enumerate(zip(feats(x0), feats(x1), strict=True)):

        def norm(f):
            s = (f * f).sum(1, keepdim=True)
            return f / torch.sqrt(s + eps) if inside else f / (torch.sqrt(s) + eps)

        w = lin[f"lin{layer}.model.1.weight"].double()
        total = total + (w * (norm(f0) - norm(f1)) ** 2).sum(1).mean((1, 2))
    return total


SIZES = {"vgg16": 32, "alex": 64, "squeeze": 48}


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    files = {}
    for net, trunk_file, lin_file in [
        ("vgg16", "vgg16-397923af.pth", "vgg.pth"),
        ("alex", "alexnet-owt-7be5be79.pth", "alex.pth"),
        ("squeeze", "squeezenet1_1-b8a52dc0.pth", "squeeze.pth"),
    ]:
        state, lin = _random_state(net), _random_linear(net)
        torch.save(state, root / trunk_file)
        (root / "v0.1").mkdir(exist_ok=True)
        torch.save(lin, root / "v0.1" / lin_file)
        files[net] = (root / trunk_file, root / "v0.1" / lin_file, state, lin)
    return root, files


@pytest.fixture
def isolated_search(monkeypatch, tmp_path):
    """No real weights leak in: empty hub dir, no env var, no lpips package."""
    monkeypatch.delenv("TANGENTLENS_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    return tmp_path


@pytest.fixture
def pinned(weight_files):
    """The registry's digests of lpips' linear files replaced by those of the test-written ones (a found
    linear file is checked against its SHA-256 on every load; tests/test_weights.py covers the check)."""
    _, files = weight_files
    with contextlib.ExitStack() as stack:
        for net in files:
            digest = hashlib.sha256(files[net][1].read_bytes()).hexdigest()
            stack.enter_context(weights.override(f"{net}-linear", sha256=digest))
        yield


def _images(n, size, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


@pytest.mark.parametrize("net", ["vgg16", "alex", "squeeze"])
@pytest.mark.parametrize("eps_mode", ["lpips", "torchmetrics"])
def test_matches_independent_float64_lpips(weight_files, net, eps_mode):
    _, files = weight_files
    trunk_file, lin_file, state, lin = files[net]
    size = SIZES[net]
    x0, x1 = _images(2, size, 3), _images(2, size, 4)
    inside = eps_mode == "torchmetrics"
    for eps in (None, 0.3):  # a large eps makes the two conventions differ visibly
        lp = LPIPS(net, trunk_weights=trunk_file, linear_weights=lin_file, eps_mode=eps_mode, eps=eps)
        e = (1e-8 if inside else 1e-10) if eps is None else eps
        want = _independent_lpips(net, state, lin, x0, x1, e, inside)
        torch.testing.assert_close(lp(x0, x1).double(), want, rtol=2e-5, atol=0)
        torch.testing.assert_close(lp.double()(x0.double(), x1.double()), want, rtol=1e-10, atol=0)
        if eps is not None:
            other = _independent_lpips(net, state, lin, x0, x1, e, not inside)
            assert not torch.allclose(other, want, rtol=1e-3)


def test_input_range_0_255_and_reference_impl(weight_files):
    _, files = weight_files
    trunk_file, lin_file, state, lin = files["alex"]
    x0, x1 = _images(2, 64, 5), _images(2, 64, 6)
    lp = LPIPS("alex", trunk_weights=trunk_file, linear_weights=lin_file)
    lp255 = LPIPS("alex", trunk_weights=trunk_file, linear_weights=lin_file, input_range="0_255")
    d255 = lp255((x0 + 1) * 127.5, (x1 + 1) * 127.5)
    torch.testing.assert_close(d255, lp(x0, x1), rtol=1e-5, atol=0)
    torch.testing.assert_close(
        d255.double(),
        _independent_lpips("alex", state, lin, (x0 + 1) * 127.5, (x1 + 1) * 127.5, 1e-10, False, True),
        rtol=2e-5,
        atol=0,
    )
    ref = LPIPS("alex", trunk_weights=trunk_file, linear_weights=lin_file, impl="reference")
    torch.testing.assert_close(ref(x0, x1), lp(x0, x1), rtol=1e-5, atol=0)


@pytest.mark.parametrize("net", ["vgg16", "squeeze"])
def test_distance_is_squared_embedding_distance(weight_files, net):
    _, files = weight_files
    trunk_file, lin_file, _, _ = files[net]
    lp = LPIPS(net, trunk_weights=trunk_file, linear_weights=lin_file).double()
    x0, x1 = _images(3, SIZES[net], 7).double(), _images(3, SIZES[net], 8).double()
    e0, e1 = lp.embed(x0), lp.embed(x1)
    assert e0.shape[0] == 3 and e0.dim() == 2
    d = lp(x0, x1)
    assert (d > 0).all()
    torch.testing.assert_close(d, (e0 - e1).square().sum(1), rtol=1e-12, atol=0)


def test_tangent_norms_match_jvp_of_embedding(weight_files):
    _, files = weight_files
    trunk_file, lin_file, _, _ = files["vgg16"]
    lp = LPIPS("vgg16", trunk_weights=trunk_file, linear_weights=lin_file, eps_mode="torchmetrics").double()
    x = _images(2, 32, 9).double()
    v = torch.randn(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    jv = torch.stack([torch.func.jvp(lp.embed, (x,), (v[:, k],))[1] for k in range(3)], 1)
    gram = jv @ jv.transpose(1, 2)
    torch.testing.assert_close(
        lp.tangent_norms(x, v), torch.diagonal(gram, dim1=1, dim2=2), rtol=1e-9, atol=0
    )
    torch.testing.assert_close(lp.tangent_norms(x, v, gram=True), gram, rtol=1e-9, atol=1e-15)
    # zero-residual identity (SPEC 2): LPIPS(x, x + h v) / h^2 -> |J v|^2
    h = 1e-5
    fd = lp(x, x + h * v[:, 0]) / h**2
    torch.testing.assert_close(fd, lp.tangent_norms(x, v[:, :1])[:, 0], rtol=1e-3, atol=0)


# ---- NVIDIA's TorchScript interface --------------------------------------------------------------------


class _NvidiaLike(torch.nn.Module):
    """A small module with the interface of NVIDIA's vgg16.pt: 0..255 images in, flat embedding out."""

    def __init__(self, weight, bias, lin):
        super().__init__()
        self.weight = torch.nn.Parameter(weight)
        self.bias = torch.nn.Parameter(bias)
        self.register_buffer("lin", lin)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    def forward(
        self, img: torch.Tensor, resize_images: bool = True, return_lpips: bool = False
    ) -> torch.Tensor:
        x = (img / 127.5 - 1.0 - self.shift) / self.scale
        f = F.relu(F.conv2d(x, self.weight, self.bias, padding=1))
        f = f / (torch.sqrt((f * f).sum(1, keepdim=True)) + 1e-10)
        hw = f.shape[2] * f.shape[3]
        return (torch.sqrt(self.lin.view(1, -1, 1, 1) / hw) * f).flatten(1)


# NVIDIA's vgg16.pt is a TorchScript archive: writing and reading one needs torch.jit (deprecated in 2.13)
@pytest.mark.filterwarnings("ignore:`torch.jit.(save|load)` is deprecated:DeprecationWarning")
def test_nvidia_torchscript_loader(tmp_path):
    g = torch.Generator().manual_seed(11)
    weight, bias, lin = (
        torch.randn(8, 3, 3, 3, generator=g),
        torch.randn(8, generator=g),
        torch.rand(8, generator=g),
    )
    path = tmp_path / "vgg16.pt"
    torch.jit.save(torch.jit.script(_NvidiaLike(weight, bias, lin)), str(path))
    nv = LPIPS.from_nvidia_torchscript(path)
    x0, x1 = _images(2, 16, 12), _images(2, 16, 13)
    e0 = nv.embed(x0)
    assert e0.shape == (2, 8 * 16 * 16)
    # the same numbers through our fused head on the same features
    feats = [
        F.relu(F.conv2d((x - nv.module.shift) / nv.module.scale, weight, bias, padding=1)) for x in (x0, x1)
    ]
    want = tangentlens.ops.lpips_layer_distance(feats[0], feats[1], lin)
    torch.testing.assert_close(nv(x0, x1), want, rtol=1e-5, atol=0)
    torch.testing.assert_close(nv(x0, x1), (e0 - nv.embed(x1)).square().sum(1), rtol=1e-6, atol=0)
    nv255 = LPIPS.from_nvidia_torchscript(path, input_range="0_255")
    torch.testing.assert_close(nv255((x0 + 1) * 127.5, (x1 + 1) * 127.5), nv(x0, x1), rtol=1e-5, atol=0)
    with pytest.raises(WeightsNotFoundError, match="no such file"):
        LPIPS.from_nvidia_torchscript(tmp_path / "missing.pt")


# ---- weight discovery and loading ------------------------------------------------------------------


def test_search_env_var_and_hub_cache(weight_files, isolated_search, pinned, monkeypatch):
    root, files = weight_files
    monkeypatch.setenv("TANGENTLENS_WEIGHTS", str(root))
    lp = LPIPS("alex")
    x0, x1 = _images(1, 64, 14), _images(1, 64, 15)
    want = LPIPS("alex", trunk_weights=files["alex"][0], linear_weights=files["alex"][1])(x0, x1)
    torch.testing.assert_close(lp(x0, x1), want, rtol=0, atol=0)
    # torch hub checkpoint cache for the trunk
    monkeypatch.delenv("TANGENTLENS_WEIGHTS")
    hub = isolated_search / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "alexnet-owt-7be5be79.pth").write_bytes(files["alex"][0].read_bytes())
    assert find_weights("alexnet-owt-7be5be79.pth", "trunk") == hub / "alexnet-owt-7be5be79.pth"


def test_lpips_package_weights_are_found(weight_files, isolated_search, pinned, monkeypatch):
    _, files = weight_files
    pkg = isolated_search / "site" / "lpips"
    (pkg / "weights" / "v0.1").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    (pkg / "weights" / "v0.1" / "vgg.pth").write_bytes(files["vgg16"][1].read_bytes())
    monkeypatch.undo()  # restore find_spec, then isolate the rest again
    monkeypatch.delenv("TANGENTLENS_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(isolated_search / "hub"))
    monkeypatch.setattr(sys, "path", [str(isolated_search / "site"), *sys.path])
    sys.modules.pop("lpips", None)
    assert find_weights("vgg.pth", "linear") == pkg / "weights" / "v0.1" / "vgg.pth"
    assert "lpips" not in sys.modules


def test_missing_weights_error_says_what_where_how(isolated_search):
    with pytest.raises(WeightsNotFoundError) as info:
        LPIPS("vgg16")
    msg = str(info.value)
    assert "vgg16-397923af.pth" in msg and "'vgg.pth'" in msg and "TANGENTLENS_WEIGHTS" in msg  # both files
    assert str(isolated_search / "hub" / "checkpoints") in msg and "download.pytorch.org" in msg
    assert "offline" in msg and "tangentlens weights --download vgg16-trunk vgg16-linear" in msg
    with pytest.raises(WeightsNotFoundError, match=r"'squeeze.pth' not found.*PerceptualSimilarity"):
        find_weights("squeeze.pth", "linear")


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_loading_never_unpickles_code(tmp_path, weight_files):
    _, files = weight_files
    path = tmp_path / "evil.pth"
    torch.save({"features.0.weight": _Evil()}, path)
    with pytest.raises(pickle.UnpicklingError):
        LPIPS("alex", trunk_weights=path, linear_weights=files["alex"][1])


def test_bad_weight_files(tmp_path, weight_files):
    _, files = weight_files
    trunk_file, lin_file, state, lin = files["alex"]
    bad = dict(lin)
    del bad["lin3.model.1.weight"]
    with pytest.raises(ValueError, match="linear_weights: missing key 'lin3.model.1.weight'"):
        LPIPS("alex", trunk_weights=trunk_file, linear_weights=bad)
    bad = dict(lin, **{"lin0.model.1.weight": -lin["lin0.model.1.weight"]})
    with pytest.raises(ValueError, match="lin0.model.1.weight: expected finite non-negative"):
        LPIPS("alex", trunk_weights=trunk_file, linear_weights=bad)
    with pytest.raises(
        ValueError, match=r"lin1.model.1.weight: expected shape \(1, 192, 1, 1\), got \(1, 128, 1, 1\)"
    ):
        LPIPS("alex", trunk_weights=trunk_file, linear_weights=_random_linear("vgg16"))
    with pytest.raises(ValueError, match="trunk_weights: not a torchvision AlexNetFeatures state dict"):
        LPIPS("alex", trunk_weights=files["vgg16"][2], linear_weights=lin_file)
    with pytest.raises(WeightsNotFoundError, match="trunk_weights: no such file"):
        LPIPS("alex", trunk_weights=tmp_path / "nope.pth", linear_weights=lin_file)


def test_bad_arguments(weight_files):
    _, files = weight_files
    kw = dict(trunk_weights=files["alex"][0], linear_weights=files["alex"][1])
    with pytest.raises(ValueError, match="net: expected one of"):
        LPIPS("resnet", **kw)
    with pytest.raises(ValueError, match="eps_mode: expected 'lpips' or 'torchmetrics'"):
        LPIPS("alex", eps_mode="inside", **kw)
    with pytest.raises(ValueError, match="input_range: expected"):
        LPIPS("alex", input_range="0_1", **kw)
    lp = LPIPS("alex", **kw)
    with pytest.raises(ValueError, match=r"x1: expected the shape of x0"):
        lp(_images(2, 64, 0), _images(1, 64, 0))
    with pytest.raises(ValueError, match=r"x0: expected images \[N, 3, H, W\]"):
        lp(torch.rand(2, 2, 64, 64), torch.rand(2, 2, 64, 64))
    # grey images are their channel repeated (issue 17: one rule for ppl and spectra; it used to raise)
    g0, g1 = torch.rand(2, 1, 64, 64) * 2 - 1, torch.rand(2, 1, 64, 64) * 2 - 1
    torch.testing.assert_close(lp(g0, g1), lp(g0.expand(-1, 3, -1, -1), g1.expand(-1, 3, -1, -1)))


def test_nan_image_gives_nan_for_that_sample(weight_files):
    _, files = weight_files
    lp = LPIPS("alex", trunk_weights=files["alex"][0], linear_weights=files["alex"][1])
    x0, x1 = _images(2, 64, 16), _images(2, 64, 17)
    x0[1, 0, 5, 5] = float("nan")
    d = lp(x0, x1)
    assert torch.isfinite(d[0]) and torch.isnan(d[1])


# ---- distances -------------------------------------------------------------------------------------------


def test_make_distance(weight_files, isolated_search, pinned, monkeypatch):
    x0, x1 = _images(2, 8, 18), _images(2, 8, 19)
    l2 = make_distance("l2")
    torch.testing.assert_close(l2(x0, x1), ((x0 - x1) ** 2).sum((1, 2, 3)))
    torch.testing.assert_close(l2(x0, x1), (l2.embed(x0) - l2.embed(x1)).square().sum(1))
    with pytest.warns(RuntimeWarning, match="using 'l2'"):
        assert isinstance(make_distance("auto"), L2Distance)
    root, _ = weight_files
    monkeypatch.setenv("TANGENTLENS_WEIGHTS", str(root))
    assert isinstance(make_distance("lpips-squeeze"), LPIPS)
    assert make_distance("auto").net == "vgg16"

    def fn(a, b):
        return (a - b).abs().sum((1, 2, 3))

    assert make_distance(fn) is fn
    with pytest.raises(ValueError, match="distance: expected 'lpips-vgg16'"):
        make_distance("lpips-resnet")


@pytest.mark.parametrize("net", ["vgg16", "alex", "squeeze"])
@pytest.mark.parametrize("input_range", ["-1_1", "0_255"])
def test_tangent_norms_stacked_trunk_matches_torch_func(net, input_range):
    """The stacked trunk pass (conv / ReLU / max-pool rules; SqueezeNet falls back) vs the torch.func path
    (taken when the inputs require grad)."""
    lp = LPIPS(net, pretrained=False, input_range=input_range).double()
    x = _images(2, 40, 11).double()
    if input_range == "0_255":
        x = (x + 1) * 127.5
    v = torch.randn(2, 4, 3, 40, 40, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    stacked = lp.tangent_norms(x, v, gram=True)
    via_func = lp.tangent_norms(x.clone().requires_grad_(True), v, gram=True).detach()
    torch.testing.assert_close(stacked, via_func, rtol=1e-11, atol=1e-15)
    assert torch.diagonal(stacked, dim1=1, dim2=2).min() > 0


@pytest.mark.parametrize("net", ["vgg16", "alex"])
def test_stacked_trunk_channels_last_matches_nchw(net):
    """The stacked pass in channels_last gives the NCHW pass's taps, in channels_last (float64: in float32
    a primal within rounding of a ReLU kink or of a max-pool tie may go either way in either layout)."""
    trunk = LPIPS(net, pretrained=False).trunk.double()
    g = torch.Generator().manual_seed(13)
    X = torch.randn(2, 5, 3, 37, 41, generator=g, dtype=torch.float64)  # odd sizes: uneven pooling windows
    with torch.no_grad():
        ref = trunk.forward_stacked(X)
        cl = trunk.forward_stacked(X, channels_last=True)
    for a, b in zip(cl, ref, strict=True):
        assert a.shape == b.shape
        assert a.stride(2) == 1 or a.shape[-1] * a.shape[-2] == 1  # channels innermost
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12 * b.abs().max().item())


@pytest.mark.parametrize(
    "pool", [torch.nn.MaxPool2d(2, 2), torch.nn.MaxPool2d(3, 2), torch.nn.MaxPool2d(3, 2, 1, ceil_mode=True)]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stacked_max_pool_channels_last_is_exact(pool, dtype):
    """The max-pool tangent rule gathers the same elements in both layouts (a copy: bit-equal)."""
    from tangentlens.models.trunks import VGG16Features

    g = torch.Generator().manual_seed(14)
    X = torch.randn(3 * 4, 6, 11, 13, generator=g, dtype=dtype)
    trunk = VGG16Features()
    ref = trunk._stacked_layer(pool, X, 3, channels_last=False)
    out = trunk._stacked_layer(pool, X.contiguous(memory_format=torch.channels_last), 3, channels_last=True)
    assert out.stride(1) == 1
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    # the tangent is the tangent at the primal's maximum: one torch.func.jvp per tangent
    G = X.view(3, 4, 6, 11, 13)
    for i in range(1, 4):
        _, t = torch.func.jvp(pool, (G[:, 0],), (G[:, i],))
        torch.testing.assert_close(out.view(3, 4, *out.shape[1:])[:, i], t, rtol=0, atol=0)


def test_native_lpips_runs_channels_last_on_cpu_float32():
    """impl='auto' on a CPU in float32 runs the trunk in channels_last; the reference impl stays NCHW; both
    give the same distances and tangent Grams."""
    lp = LPIPS("vgg16", pretrained=False)
    ref = LPIPS("vgg16", pretrained=False, impl="reference")
    ref.load_state_dict(lp.state_dict())
    x0, x1 = _images(4, 36, 21), _images(4, 36, 22)  # 4 x 36² pixels: over CPU_CHANNELS_LAST_MIN_PIXELS

    def layout(m: LPIPS, x: torch.Tensor) -> str:
        f = m.trunk(m._prepare(x))[0]
        return (
            "nchw"
            if f.is_contiguous()
            else "nhwc"
            if f.is_contiguous(memory_format=torch.channels_last)
            else "?"
        )

    assert layout(lp, x0) == "nhwc" and layout(ref, x0) == "nchw"
    assert layout(lp, x0.clone().requires_grad_(True)) == "nchw"  # a reverse pass follows
    assert layout(lp.double(), x0.double()) == "nchw"  # float64
    lp.float()
    assert layout(lp, x0[:1]) == "nchw"  # too few pixels for oneDNN's NHWC path to pay
    assert all(f.is_contiguous() for f in lp.features(x0))  # the public taps are NCHW either way
    torch.testing.assert_close(lp(x0, x1), ref(x0, x1), rtol=1e-5, atol=0)
    v = torch.randn(4, 20, 3, 36, 36, generator=torch.Generator().manual_seed(23))
    a, b = lp.tangent_norms(x0, v, gram=True), ref.tangent_norms(x0, v, gram=True)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item())
    # inside torch.func (vmap cannot change the memory format) the trunk stays NCHW
    c = lp.tangent_norms(x0.clone().requires_grad_(True), v, gram=True).detach()
    torch.testing.assert_close(c, b, rtol=1e-4, atol=1e-5 * b.abs().max().item())
    tan = torch.func.vmap(lambda t: torch.func.jvp(lp.embed, (x0,), (t,))[1], in_dims=1)(v)
    torch.testing.assert_close(tan.square().sum(-1).T, torch.diagonal(b, dim1=1, dim2=2), rtol=1e-4, atol=0)


def _nhwc_taps(trunk, x):
    with torch.no_grad():
        return trunk(x.contiguous(memory_format=torch.channels_last))


def _assert_taps_equal(trunk, x):
    """The channels_last pass (cached NHWC weights) against the NCHW pass with the module's own weights."""
    with torch.no_grad():
        ref = trunk(x)
    for a, b in zip(_nhwc_taps(trunk, x), ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item())


def test_trunk_nhwc_weight_cache_follows_the_weights():
    """The channels_last copies of the conv weights are refreshed whenever the weights change through a
    tracked path (load_state_dict, nn.init / no_grad in-place ops, a replaced Parameter, .to()), and after
    clear_weight_cache for writes through .data; copies of the trunk start empty."""
    import copy

    trunk = LPIPS("vgg16", pretrained=False).trunk
    g = torch.Generator().manual_seed(31)
    x = torch.randn(2, 3, 24, 20, generator=g)
    _assert_taps_equal(trunk, x)
    assert len(trunk._weight_copies) == 13  # one per conv of VGG16's taps
    conv = trunk.features[0]

    def fresh() -> dict:
        return {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in trunk.state_dict().items()}

    trunk.load_state_dict(fresh())
    _assert_taps_equal(trunk, x)
    with torch.no_grad():
        conv.weight.mul_(-1.5)
    _assert_taps_equal(trunk, x)
    torch.nn.init.normal_(trunk.features[2].weight, std=0.05)
    _assert_taps_equal(trunk, x)
    conv.weight = torch.nn.Parameter(torch.randn(conv.weight.shape, generator=g), requires_grad=False)
    _assert_taps_equal(trunk, x)
    conv.weight.data = torch.randn(conv.weight.shape, generator=g)  # a new storage: seen
    _assert_taps_equal(trunk, x)
    # a write through .data keeps storage and version: documented, and cleared by hand
    stale = _nhwc_taps(trunk, x)[0]
    conv.weight.data.mul_(2.0)
    torch.testing.assert_close(_nhwc_taps(trunk, x)[0], stale)
    trunk.clear_weight_cache()
    _assert_taps_equal(trunk, x)
    dup = copy.deepcopy(trunk)
    assert dup._weight_copies == {}
    _assert_taps_equal(dup, x)
    trunk.double()
    _assert_taps_equal(trunk, x.double())


def test_trunk_nhwc_pass_keeps_weight_gradients():
    """With trainable weights and autograd on, the channels_last pass uses the Parameters themselves, not
    the cached copies: the weights' gradients equal the NCHW pass's (float64: in float32 a max-pool window
    whose two largest values are within rounding may route the gradient differently in each layout). LPIPS
    itself stays NCHW when a reverse pass can follow, through the input or through trainable weights."""
    lp = LPIPS("alex", pretrained=False)
    trunk = lp.trunk.double().requires_grad_(True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(32), dtype=torch.float64)
    grads = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        trunk.zero_grad()
        sum(f.square().sum() for f in trunk(x.contiguous(memory_format=fmt))).backward()
        grads.append([p.grad.clone() for p in trunk.parameters()])
    assert trunk._weight_copies == {}
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12 * b.abs().max().item())
    lp.float()
    assert lp._channels_last(x.float()) is False  # trainable trunk, autograd on
    with torch.no_grad():
        assert lp._channels_last(x.float()) is True
    lp.requires_grad_(False)
    assert lp._channels_last(x.float()) is True
