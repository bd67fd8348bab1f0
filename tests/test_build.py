"""The package, its compiled library, the native/reference switch and the CLI."""

import json
import os
import subprocess
import sys

import pytest
import torch

import tangentlens
from tangentlens._extension import resolve_impl


def test_native_library_is_built_in_ci():
    # `make test` builds the extension; a silent fallback there would hide a broken build.
    if os.environ.get("TANGENTLENS_EXPECT_NATIVE", "1") == "1":
        assert tangentlens.NATIVE_AVAILABLE, tangentlens.native_build_info()
        info = tangentlens.native_build_info()
        assert info["available"]
        if torch.version.cuda is None:
            assert not info["cuda"]  # a CPU-only torch cannot have CUDA kernels


def test_impl_resolution():
    assert resolve_impl("reference") == "reference"
    if tangentlens.NATIVE_AVAILABLE:
        assert resolve_impl("auto", "cpu") == "native"
        assert resolve_impl("native", "cpu") == "native"
    with pytest.raises(ValueError, match="impl: expected"):
        resolve_impl("fast")
    with pytest.raises(ValueError, match="impl: expected"):
        tangentlens.set_default_impl("fast")


def test_set_default_impl_routes_auto_to_reference():
    try:
        tangentlens.set_default_impl("reference")
        assert resolve_impl("auto", "cpu") == "reference"
    finally:
        tangentlens.set_default_impl("auto")


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd="/",
        timeout=300,
    )


def test_fallback_without_native_warns_once_and_still_works():
    code = (
        "import warnings, torch\n"
        "import tangentlens as tl\n"
        "assert not tl.NATIVE_AVAILABLE\n"
        "x = tl.ops.philox_normal(1, 0, 3, 4, dtype=torch.float64)\n"
        "y = tl.reference.philox_normal(1, 0, 3, 4, dtype=torch.float64)\n"
        "assert torch.equal(x, y)\n"
        "s = tl.paths.sample(1, 0, 3, 8)\n"
        "assert s.tangent is not None\n"
        "try:\n"
        "    tl.ops.philox_normal(1, 0, 3, 4, impl='native')\n"
        "except RuntimeError as e:\n"
        "    assert 'not available' in str(e)\n"
        "else:\n"
        "    raise SystemExit('native should be refused')\n"
        "print('OK')\n"
    )
    r = _run_python(code, TANGENTLENS_DISABLE_NATIVE="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("OK")
    assert r.stderr.count("compiled extension is not available") == 1, r.stderr


def test_cli_info():
    r = subprocess.run(
        [sys.executable, "-m", "tangentlens", "info"], capture_output=True, text=True, cwd="/", timeout=300
    )
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["tangentlens"] == tangentlens.__version__
    assert info["native"]["available"] == tangentlens.NATIVE_AVAILABLE


def test_cli_without_command_prints_help():
    r = subprocess.run(
        [sys.executable, "-m", "tangentlens"], capture_output=True, text=True, cwd="/", timeout=300
    )
    assert r.returncode == 2
    assert "COMMAND" in r.stdout
