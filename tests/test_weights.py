"""Weights that arrive by themselves (issue 21): the registry's search order, downloads from a local HTTP
server standing in for the owners' hosts (success, wrong digest, truncated transfer, HTTP errors), offline
mode that never touches the network, the cache hit, NVIDIA's vgg16.pt (structure), the manifest override,
the `tangentlens weights` command, and presets that never fall back to pixel distances."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from conftest import NvidiaLikeLPIPS
from tangentlens import weights
from tangentlens.distances import L2Distance, PresetDistanceWarning, make_distance, preset_distance
from tangentlens.lpips import LPIPS, NvidiaTorchScriptLPIPS, find_weights
from tangentlens.models.trunks import TRUNKS
from tangentlens.weights import WeightsDigestError, WeightsDownloadError, WeightsNotFoundError

CHANNELS = {"vgg16": (64, 128, 256, 512, 512), "squeeze": (64, 128, 256, 384, 384, 512, 512)}


def _saved(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _trunk_bytes(net: str) -> bytes:
    torch.manual_seed(0)
    return _saved(TRUNKS[net]().state_dict())  # torchvision's keys (features.N.*), random values


def _linear_bytes(net: str, seed: int = 1) -> bytes:
    g = torch.Generator().manual_seed(seed)
    return _saved(
        {
            f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) / c
            for i, c in enumerate(CHANNELS[net])
        }
    )


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and (".partial" in p.name or p.name.startswith("."))]


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_first_use_downloads_verified_files_then_hits_the_cache(weights_server, tmp_path, capsys):
    trunk, lin = _trunk_bytes("squeeze"), _linear_bytes("squeeze")
    with (
        weights_server.serve("squeeze-trunk", trunk, hash_prefix=_sha(trunk)[:8]),
        weights_server.serve("squeeze-linear", lin, sha256=_sha(lin)),
    ):
        lp = LPIPS("squeeze")
        hub = tmp_path / "hub" / "checkpoints"
        assert (hub / "squeezenet1_1-b8a52dc0.pth").read_bytes() == trunk  # torchvision's name and place
        assert (hub / "lpips" / "v0.1" / "squeeze.pth").read_bytes() == lin
        assert _leftovers(hub) == []
        assert weights_server.requests == [
            "/models/squeezenet1_1-b8a52dc0.pth",
            f"/richzhang/PerceptualSimilarity/{weights.LPIPS_COMMIT}/lpips/weights/v0.1/squeeze.pth",
        ]
        assert lp.weights_info["trunk"]["source"] == "downloaded"
        assert lp.weights_info["linear"]["sha256"] == _sha(lin)
        err = capsys.readouterr().err
        assert "downloading squeezenet1_1-b8a52dc0.pth" in err and "downloading squeeze.pth" in err
        # cache hit: nothing asked of the server again, the same numbers as the files passed explicitly
        again = LPIPS("squeeze")
        assert len(weights_server.requests) == 2
        assert again.weights_info["trunk"]["source"] == "torch.hub cache"
        assert again.weights_info["linear"]["verified"] == "sha256"
        explicit = LPIPS(
            "squeeze",
            trunk_weights=hub / "squeezenet1_1-b8a52dc0.pth",
            linear_weights=hub / "lpips" / "v0.1" / "squeeze.pth",
        )
        x0, x1 = _images(2, 32, 0), _images(2, 32, 1)
        assert torch.equal(again(x0, x1), explicit(x0, x1))
        assert lp.weights_label() == "torchvision squeezenet1_1-b8a52dc0.pth + lpips v0.1 squeeze.pth"


def test_wrong_digest_names_file_expected_and_found_and_leaves_nothing(weights_server, tmp_path):
    served = _linear_bytes("squeeze")
    with weights_server.serve("squeeze-linear", served):  # the registry's real digest stays
        with pytest.raises(WeightsDigestError) as info:
            weights.fetch("squeeze-linear")
    msg = str(info.value)
    assert "squeeze.pth" in msg and weights.REGISTRY["squeeze-linear"].sha256 in msg and _sha(served) in msg
    assert "nothing was written" in msg
    assert not (tmp_path / "hub").exists() or _leftovers(tmp_path / "hub") == []
    assert weights.locate("squeeze-linear") is None
    # the trunk: torchvision's hash prefix, checked as torch.hub checks it
    trunk = _trunk_bytes("squeeze")
    with weights_server.serve("squeeze-trunk", trunk), pytest.raises(WeightsDigestError, match="b8a52dc0"):
        weights.fetch("squeeze-trunk")
    assert weights.locate("squeeze-trunk") is None


def test_truncated_transfer_leaves_nothing_half_written(weights_server, tmp_path):
    trunk = _trunk_bytes("squeeze")
    with weights_server.serve("squeeze-trunk", trunk, hash_prefix=_sha(trunk)[:8]):
        weights_server.truncate["/models/squeezenet1_1-b8a52dc0.pth"] = len(trunk) // 3
        with pytest.raises(
            WeightsDownloadError, match=rf"stopped after {len(trunk) // 3} of {len(trunk)} bytes"
        ):
            weights.fetch("squeeze-trunk", progress=False)
        hub = tmp_path / "hub" / "checkpoints"
        assert list(hub.iterdir()) == []  # not the file, not a partial one
        # the next try, with the whole file served, succeeds
        del weights_server.truncate["/models/squeezenet1_1-b8a52dc0.pth"]
        assert weights.fetch("squeeze-trunk", progress=False).path.read_bytes() == trunk


def test_http_errors_name_the_url_and_how_to_place_the_file(weights_server, tmp_path):
    with weights.override("vgg16-linear", urls=(weights_server.base + "/nowhere/vgg.pth",)):
        with pytest.raises(WeightsDownloadError) as info:
            weights.fetch("vgg16-linear")
    msg = str(info.value)
    assert "/nowhere/vgg.pth" in msg and "404" in msg and "nothing was written" in msg
    assert str(tmp_path / "hub" / "checkpoints" / "lpips" / "v0.1") in msg and "TANGENTLENS_OFFLINE" in msg
    # "auto" keeps its documented fallback to pixels, with its warning
    with weights.override("vgg16-trunk", urls=(weights_server.base + "/nowhere/t.pth",)):
        with pytest.warns(RuntimeWarning, match="using 'l2'"):
            assert isinstance(make_distance("auto"), L2Distance)


@pytest.mark.parametrize("how", ["env", "download=False"])
def test_offline_never_touches_the_network(weights_server, monkeypatch, tmp_path, how):
    lin = _linear_bytes("squeeze")
    with weights_server.serve("squeeze-linear", lin, sha256=_sha(lin)):
        if how == "env":
            monkeypatch.setenv("TANGENTLENS_OFFLINE", "1")
            kwargs = {}
        else:
            kwargs = {"download": False}
        with pytest.raises(WeightsNotFoundError) as info:
            LPIPS("squeeze", **kwargs)
        assert weights_server.requests == []
    msg = str(info.value)
    assert "squeezenet1_1-b8a52dc0.pth" in msg and "offline" in msg
    assert str(tmp_path / "hub" / "checkpoints") in msg  # where to put it
    assert "tangentlens weights --download squeeze-trunk" in msg and "TANGENTLENS_WEIGHTS" in msg
    assert "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth" in msg
    assert "trunk_weights=" in msg


def test_search_order(monkeypatch, tmp_path):
    """$TANGENTLENS_WEIGHTS, then torch.hub's cache, then the lpips package, then torchmetrics' copies
    (neither package imported)."""
    lin = _linear_bytes("vgg16")
    site = tmp_path / "site"
    for pkg, sub in (("lpips", "weights/v0.1"), ("torchmetrics", "functional/image/lpips_models")):
        (site / pkg / sub).mkdir(parents=True)
        (site / pkg / "__init__.py").write_text("raise ImportError('must not be imported')\n")
        (site / pkg / sub / "vgg.pth").write_bytes(lin)
    env_dir, hub = tmp_path / "env", tmp_path / "hub"
    (env_dir / "v0.1").mkdir(parents=True)
    (hub / "checkpoints" / "lpips" / "v0.1").mkdir(parents=True)
    (env_dir / "v0.1" / "vgg.pth").write_bytes(lin)
    (hub / "checkpoints" / "lpips" / "v0.1" / "vgg.pth").write_bytes(lin)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setattr(sys, "path", [str(site), *sys.path])
    monkeypatch.setenv("TANGENTLENS_WEIGHTS", str(env_dir))
    for m in ("lpips", "torchmetrics"):
        monkeypatch.delitem(sys.modules, m, raising=False)
    with weights.override("vgg16-linear", sha256=_sha(lin)):
        order = [
            (env_dir / "v0.1" / "vgg.pth", "$TANGENTLENS_WEIGHTS"),
            (hub / "checkpoints" / "lpips" / "v0.1" / "vgg.pth", "torch.hub cache"),
            (site / "lpips" / "weights" / "v0.1" / "vgg.pth", "the lpips package"),
            (
                site / "torchmetrics" / "functional" / "image" / "lpips_models" / "vgg.pth",
                "the torchmetrics package",
            ),
        ]
        for path, where in order:
            found = weights.fetch("vgg16-linear", download=False)
            assert (found.path, found.source, found.verified) == (path, where, "sha256")
            path.unlink()
        with pytest.raises(WeightsNotFoundError):
            find_weights("vgg.pth", "linear")
    assert "lpips" not in sys.modules and "torchmetrics" not in sys.modules


def test_a_found_file_that_is_not_the_registered_one_is_an_error(monkeypatch, tmp_path):
    other = _linear_bytes("vgg16", seed=7)
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "vgg.pth").write_bytes(other)
    monkeypatch.setenv("TANGENTLENS_WEIGHTS", str(tmp_path / "w"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsDigestError) as info:
        weights.fetch("vgg16-linear", download=False)
    msg = str(info.value)
    assert str(tmp_path / "w" / "vgg.pth") in msg and _sha(other) in msg
    assert weights.REGISTRY["vgg16-linear"].sha256 in msg and "pass it explicitly" in msg
    # an explicit file is used as given
    lp = LPIPS("squeeze", pretrained=False)
    assert lp.weights_label() == "random weights (pretrained=False)"


def _torchscript_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "nv.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in torch 2.13
        torch.jit.save(torch.jit.script(NvidiaLikeLPIPS()), str(path))
    return path.read_bytes()


@pytest.mark.filterwarnings("ignore:`torch.jit.(save|load|script)` is deprecated:DeprecationWarning")
def test_nvidia_vgg16_is_downloaded_and_its_structure_checked(weights_server, tmp_path):
    archive = _torchscript_bytes(tmp_path)
    with weights_server.serve("nvidia-vgg16", archive):  # no digest: VGG16's size is required
        with pytest.raises(WeightsDigestError, match="fewer than VGG16's parameters"):
            LPIPS.from_nvidia_torchscript()
    with weights_server.serve("nvidia-vgg16", b"<html>not found</html>", min_tensor_bytes=0):
        with pytest.raises(WeightsDigestError, match="not a zip archive"):
            LPIPS.from_nvidia_torchscript()
    with weights_server.serve("nvidia-vgg16", archive, min_tensor_bytes=0):
        nv = LPIPS.from_nvidia_torchscript()
        assert nv.weights_info["module"]["source"] == "downloaded"
        assert (tmp_path / "hub" / "checkpoints" / "nvidia" / "vgg16.pt").read_bytes() == archive
        assert nv.weights_label() == "NVIDIA vgg16.pt"
        # the stylegan2 presets take it (finite differences); the exact mode takes tangentlens' LPIPS
        assert isinstance(preset_distance("stylegan2", method="fd"), NvidiaTorchScriptLPIPS)
        with pytest.raises(WeightsNotFoundError, match="vgg16-397923af.pth"):
            preset_distance("stylegan2_crop", method="jvp", download=False)


@pytest.mark.filterwarnings("ignore:`torch.jit.(save|load|script)` is deprecated:DeprecationWarning")
def test_nvidia_vgg16_is_found_in_nvidias_own_cache(monkeypatch, tmp_path):
    archive = _torchscript_bytes(tmp_path)
    url = weights.REGISTRY["nvidia-vgg16"].urls[0]
    cache = tmp_path / "dnnlib" / "downloads"
    cache.mkdir(parents=True)
    (cache / f"{hashlib.md5(url.encode()).hexdigest()}_vgg16.pt").write_bytes(archive)
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(tmp_path / "dnnlib"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with weights.override("nvidia-vgg16", min_tensor_bytes=0):
        found = weights.fetch("nvidia-vgg16", download=False)
    assert found.source == "NVIDIA's dnnlib cache" and found.verified == "structure"


def test_peer_presets_never_fall_back_to_pixels(monkeypatch, tmp_path):
    from tangentlens.models.stylegan2 import StyleGAN2Generator
    from tangentlens.ppl import ppl

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(tmp_path / "dnnlib"))
    G = StyleGAN2Generator(z_dim=8, w_dim=8, img_resolution=16, channel_base=64, channel_max=8, seed=1)
    kw = dict(num_samples=4, progress=False, bootstrap=0)
    for preset, names in (
        ("stylegan2", ["vgg16.pt", "vgg16-397923af.pth", "vgg.pth"]),
        ("stylegan2_crop", ["vgg16.pt", "vgg16-397923af.pth"]),
        ("torchmetrics", ["vgg16-397923af.pth"]),
        ("torch_fidelity", ["vgg16-397923af.pth"]),
    ):
        with pytest.raises(WeightsNotFoundError) as info:
            ppl(G, preset=preset, **kw)
        msg = str(info.value)
        assert all(n in msg for n in names) and "does not fall back to pixel distances" in msg, msg
    # explicitly pixels: allowed, and the result says so
    r = ppl(G, preset="stylegan2", distance="l2", **kw)
    assert r.distance == "l2 (pixels)" and "distance l2 (pixels)" in str(r)
    # "auto" without a preset: its documented fallback and warning
    with pytest.warns(RuntimeWarning, match="using 'l2'"):
        r = ppl(G, space="z", **kw)
    assert "distance l2 (pixels)" in str(r) and "precision fp32" in str(r) and "method jvp" in str(r)


def test_preset_without_nvidia_module_warns_and_names_its_lpips(weights_server, tmp_path):
    trunk, lin = _trunk_bytes("vgg16"), _linear_bytes("vgg16")
    with (
        weights_server.serve("vgg16-trunk", trunk, hash_prefix=_sha(trunk)[:8]),
        weights_server.serve("vgg16-linear", lin, sha256=_sha(lin)),
    ):
        with pytest.warns(PresetDistanceWarning, match="NVIDIA's vgg16.pt is not available"):
            d = preset_distance("stylegan2", method="fd", progress=False)
        assert isinstance(d, LPIPS) and d.eps_mode == "outside"
        tm = preset_distance("torchmetrics", eps_mode="torchmetrics", progress=False)
        assert tm.eps_mode == "inside"
        from tangentlens.ppl.engine import _describe_distance

        label = _describe_distance(tm)["label"]
        assert label == "lpips-vgg16 v0.1 (torchvision vgg16-397923af.pth + lpips v0.1 vgg.pth)"


def _run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tangentlens", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_manifest_override_and_the_weights_command(weights_server, tmp_path):
    """A subprocess with $TANGENTLENS_WEIGHTS_MANIFEST (a mirror and digests of test-written files):
    `tangentlens weights --download lpips-squeeze` fetches, `--list` shows them present and verified."""
    trunk, lin = _trunk_bytes("squeeze"), _linear_bytes("squeeze")
    weights_server.files["/mirror/squeezenet1_1-b8a52dc0.pth"] = trunk
    weights_server.files["/mirror/squeeze.pth"] = lin
    manifest = tmp_path / "manifest.json"
    manifest.write_text(
        json.dumps(
            {
                "mirror": weights_server.base + "/mirror/",
                "files": {
                    "squeeze-trunk": {"hash_prefix": _sha(trunk)[:8]},
                    "squeeze-linear": {"sha256": _sha(lin)},
                },
            }
        )
    )
    env = dict(os.environ, TANGENTLENS_WEIGHTS_MANIFEST=str(manifest), TORCH_HOME=str(tmp_path / "th"))
    env.pop("TANGENTLENS_OFFLINE", None)
    env.pop("TANGENTLENS_WEIGHTS", None)
    r = _run_cli(["weights", "--download", "lpips-squeeze", "--no-progress"], env)
    assert r.returncode == 0, r.stderr
    hub = tmp_path / "th" / "hub" / "checkpoints"
    assert (hub / "squeezenet1_1-b8a52dc0.pth").read_bytes() == trunk
    assert (hub / "lpips" / "v0.1" / "squeeze.pth").read_bytes() == lin
    r = _run_cli(["weights", "--list", "--json", str(tmp_path / "list.json")], env)
    assert r.returncode == 0, r.stderr
    rows = {row["key"]: row for row in json.loads((tmp_path / "list.json").read_text())["files"]}
    assert rows["squeeze-trunk"]["status"] == "present, sha256 prefix ok (torch.hub cache)"
    assert rows["squeeze-linear"]["status"] == "present, sha256 ok (torch.hub cache)"
    assert rows["vgg16-trunk"]["status"] == "missing"
    assert "squeeze-linear" in r.stdout and "missing" in r.stdout
    # offline: --download is refused without a connection attempt; a damaged file makes --list fail
    (hub / "lpips" / "v0.1" / "squeeze.pth").write_bytes(lin[:-10] + b"0123456789")
    r = _run_cli(["weights"], env)
    assert r.returncode == 1 and "MISMATCH" in r.stdout and "squeeze-linear" in r.stderr
    r = _run_cli(["weights", "--download"], dict(env, TANGENTLENS_OFFLINE="1"))
    assert r.returncode == 2 and "TANGENTLENS_OFFLINE" in r.stderr
    assert sum(p.startswith("/mirror/") for p in weights_server.requests) == 2
