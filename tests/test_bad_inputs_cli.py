"""The command line's answers to user errors (issue 17): exit status 2 and one line on stderr, no traceback
unless --debug; output paths checked before the run; a corrupted or mismatched checkpoint named; and a run
killed with SIGKILL resumes bit for bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch

from tangentlens.cli import main

GENERATORS = textwrap.dedent(
    """
    import time

    import torch

    from tangentlens.models.stylegan2 import StyleGAN2Generator

    A = torch.randn(4, 3 * 8 * 8, generator=torch.Generator().manual_seed(0)) / 2


    def make():
        return StyleGAN2Generator(z_dim=8, w_dim=8, img_resolution=8, channel_base=64, channel_max=8, seed=1)


    def plain(z):
        return torch.tanh(z @ A).reshape(-1, 3, 8, 8)


    def nan(z):
        x = plain(z).clone()
        x[1] = float("nan")
        return x


    def slow(z):
        time.sleep(0.05)
        return plain(z)


    class Broken:
        def __init__(self):
            raise RuntimeError("weights file missing")
    """
)


@pytest.fixture
def gens(tmp_path: Path) -> str:
    f = tmp_path / "gens.py"
    f.write_text(GENERATORS)
    return str(f)


def _err_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err  # exactly one line, no traceback
    assert "Traceback" not in err
    return lines[0]


PLAIN = ["--z-dim", "4", "--space", "z", "--distance", "l2", "--no-progress", "--num-samples", "8"]
GEO = [
    "--distance",
    "l2",
    "--pairs",
    "2",
    "--points",
    "3",
    "--max-iters",
    "2",
    "--no-refine",
    "--no-progress",
]


def test_argument_errors_are_one_line(gens, capsys) -> None:
    cases = [
        (["ppl", "--generator", f"{gens}:plain", "--num-samples", "abc"], "--num-samples: invalid int value"),
        (["ppl", "--generator", f"{gens}:plain", "--preset", "nvidia"], "argument --preset: invalid choice"),
        (
            ["ppl", "--generator", f"{gens}:plain", "--checkpoint-every", "-5"],
            "--checkpoint-every: expected a finite",
        ),
        (["ppl"], "the following arguments are required: --generator"),
        (["ppl", "--generator", "nocolon"], "--generator: expected 'module:attr'"),
        (["ppl", "--generator", "/nonexistent/g.py:make"], "--generator: no such file"),
        (["ppl", "--generator", f"{gens}:missing"], "has no attribute 'missing'"),
        (
            ["ppl", "--generator", f"{gens}:Broken"],
            "calling .*Broken.* failed with RuntimeError: weights file missing",
        ),
        (["ppl", "--generator", "no_such_module_xyz:G"], "cannot import module 'no_such_module_xyz'"),
        (
            ["ppl", "--generator", f"{gens}:plain", *PLAIN, "--bootstrap", "-1"],
            "bootstrap: expected a non-negative int",
        ),
        (["ppl", "--generator", f"{gens}:plain", *PLAIN, "--seed", "-1"], "seed: expected an int in"),
        (
            ["ppl", "--generator", f"{gens}:plain", "--distance", "l2", "--num-samples", "8"],
            "z_dim: a plain callable",
        ),
        (["ppl", "--generator", f"{gens}:nan", *PLAIN], r"NaN values at sample indices \[1\]"),
        (
            ["spectrum", "--generator", f"{gens}:make", "--points", "0", "--no-progress"],
            "num_points: expected an int >= 1",
        ),
        (
            ["spectrum", "--generator", f"{gens}:plain", "--points", "2", "--no-progress"],
            "z_dim: a plain callable",
        ),
        (["spectrum", "--generator", f"{gens}:make", "--k", "-1", "--points", "2"], "k: expected"),
        (
            ["geodesic", "--generator", f"{gens}:make", "--pairs", "0", "--no-progress"],
            "num_pairs: expected an int >= 1, got 0",
        ),
        (["geodesic", "--generator", f"{gens}:plain", *GEO], "z_dim: a plain callable"),
        (["geodesic", "--generator", f"{gens}:plain", *GEO, "--z-dim", "4", "--tol", "0"], "tol: expected a"),
        (
            ["geodesic", "--generator", f"{gens}:plain", *GEO, "--z-dim", "4", "--points", "2"],
            "points: expected",
        ),
        (
            ["geodesic", "--generator", f"{gens}:nan", *GEO, "--z-dim", "4"],
            r"NaN values at sample indices \[1\]",
        ),
        (
            ["geodesic", "--generator", f"{gens}:plain", *GEO, "--z-dim", "4", "--checkpoint-every", "-5"],
            "--checkpoint-every: expected a finite",
        ),
        (["geodesic", "--generator", "nocolon", *GEO], "--generator: expected 'module:attr'"),
    ]
    import re

    for argv, pattern in cases:
        assert main(argv) == 2, argv
        line = _err_line(capsys)
        assert re.search(pattern, line), (argv, line)


def test_output_paths_are_checked_before_the_run(gens, tmp_path, capsys, monkeypatch) -> None:
    ppl_module = sys.modules["tangentlens.ppl"]  # (the package attribute `ppl` is the function)

    def never(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the run started")

    monkeypatch.setattr(ppl_module, "ppl", never)
    base = ["ppl", "--generator", f"{gens}:plain", *PLAIN]
    assert main([*base, "--json", str(tmp_path / "missing" / "r.json")]) == 2
    line = _err_line(capsys)
    assert "--json" in line and "does not exist" in line
    assert main([*base, "--json", str(tmp_path)]) == 2
    assert "is a directory" in _err_line(capsys)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if not os.access(ro, os.W_OK):  # (as root, permissions do not bind: nothing to check)
            assert main([*base, "--json", str(ro / "r.json")]) == 2
            assert "cannot create a file" in _err_line(capsys)
    finally:
        ro.chmod(0o700)


def test_geodesic_output_paths_are_checked_before_the_run(gens, tmp_path, capsys, monkeypatch) -> None:
    from tangentlens import geodesics

    def never(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the run started")

    monkeypatch.setattr(geodesics, "scan", never)
    base = ["geodesic", "--generator", f"{gens}:plain", "--z-dim", "4", *GEO]
    for option, path, message in (
        ("--json", tmp_path / "missing" / "r.json", "does not exist"),
        ("--plot", tmp_path, "is a directory"),
        ("--checkpoint", tmp_path / "missing" / "c.ckpt", "does not exist"),
    ):
        assert main([*base, option, str(path)]) == 2
        line = _err_line(capsys)
        assert option in line and message in line, line


def test_geodesic_run_options(gens, tmp_path, capsys) -> None:
    """--output-range / --no-check-range reach the engine (one range warning, or none); the JSON records
    the declared range."""
    from tangentlens.generators.outputs import GeneratorRangeWarning

    f = Path(gens).with_name("unit.py")
    f.write_text(GENERATORS + "\n\ndef unit(z):\n    return (plain(z) + 1) / 2\n")
    base = ["geodesic", "--generator", f"{f}:unit", "--z-dim", "4", *GEO]
    out = tmp_path / "g.json"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*base, "--json", str(out)]) == 0
    ranges = [w for w in caught if issubclass(w.category, GeneratorRangeWarning)]
    assert len(ranges) == 1 and "output_range='0_1'" in str(ranges[0].message)
    assert json.loads(out.read_text())["config"]["output_range"] == "-1_1"
    with warnings.catch_warnings():
        warnings.simplefilter("error", GeneratorRangeWarning)
        assert main([*base, "--output-range", "0_1", "--json", str(out)]) == 0
        assert main([*base, "--no-check-range"]) == 0
    assert json.loads(out.read_text())["config"]["output_range"] == "0_1"


def test_unwritable_json_after_the_run_keeps_the_result(gens, tmp_path, capsys, monkeypatch) -> None:
    from tangentlens.cli import _common

    out = tmp_path / "r.json"
    real = _common.write_result

    def vanishing(write, path, option):  # noqa: ANN001, ANN202  (the directory goes away mid-run)
        def failing(p):  # noqa: ANN001, ANN202
            if p == path:
                raise OSError(28, "No space left on device")
            return write(p)

        return real(failing, path, option)

    monkeypatch.setattr("tangentlens.cli.ppl.write_result", vanishing)
    assert main(["ppl", "--generator", f"{gens}:plain", *PLAIN, "--json", str(out)]) == 2
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if "error" in x][0]
    assert "No space left" in line and "the result was written to" in line
    fallback = Path(line.split("the result was written to ")[1].split(" (")[0])
    assert json.loads(fallback.read_text())["num_samples"] == 8
    fallback.unlink()


def test_checkpoint_errors_name_the_checkpoint(gens, tmp_path, capsys) -> None:
    ck = tmp_path / "run.ckpt"
    base = ["ppl", "--generator", f"{gens}:plain", *PLAIN, "--checkpoint", str(ck)]
    assert main(base) == 0
    capsys.readouterr()
    assert main([*base, "--seed", "5"]) == 2
    line = _err_line(capsys)
    assert str(ck) in line and "another configuration" in line and "seed" in line
    ck.write_bytes(ck.read_bytes()[:64])
    assert main(base) == 2
    line = _err_line(capsys)
    assert str(ck) in line and "cannot be read" in line and "weights_only" not in line


def test_debug_shows_the_traceback(gens, capsys) -> None:
    assert main(["ppl", "--generator", "nocolon", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("tangentlens ppl: error:")


def test_help_shows_the_defaults() -> None:
    r = subprocess.run([sys.executable, "-m", "tangentlens", "ppl", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for needle in (
        "50 000",
        "--checkpoint-every SECONDS",
        "(default: 60.0)",
        "--bootstrap",
        "(default: 1000)",
        "--resume-unverified",
        "--no-check-range",
        "(default: auto)",
    ):
        assert needle in text, needle
    r = subprocess.run(
        [sys.executable, "-m", "tangentlens", "spectrum", "--help"], capture_output=True, text=True
    )
    assert "(default: 1000)" in " ".join(r.stdout.split())


def test_unknown_impl_environment_variable_is_one_line(gens, tmp_path) -> None:
    env = dict(os.environ, TANGENTLENS_IMPL="nativ")
    r = subprocess.run(
        [sys.executable, "-m", "tangentlens", "ppl", "--generator", f"{gens}:plain", *PLAIN],
        capture_output=True,
        text=True,
        env=env,
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "$TANGENTLENS_IMPL" in lines[0] and "'nativ'" in lines[0]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tangentlens", "ppl", *args]


def test_sigkill_then_resume_is_bit_identical(gens, tmp_path) -> None:
    """A run killed with SIGKILL after it wrote a checkpoint, resumed with the same command, gives the
    distances of an uninterrupted run bit for bit."""
    args = [
        "--generator",
        f"{gens}:slow",
        "--z-dim",
        "4",
        "--space",
        "z",
        "--distance",
        "l2",
        "--no-progress",
        "--num-samples",
        "160",
        "--batch-size",
        "4",
        "--seed",
        "7",
        "--bootstrap",
        "50",
    ]
    ck, killed_json, ref_json = tmp_path / "run.ckpt", tmp_path / "resumed.json", tmp_path / "ref.json"
    proc = subprocess.Popen(
        _cli(*args, "--checkpoint", str(ck), "--checkpoint-every", "0", "--json", str(killed_json)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not ck.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # a few more checkpoints
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not killed_json.exists()
    resumed = subprocess.run(
        _cli(*args, "--checkpoint", str(ck), "--json", str(killed_json)), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    ref = subprocess.run(_cli(*args, "--json", str(ref_json)), capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    a, b = json.loads(killed_json.read_text()), json.loads(ref_json.read_text())
    assert 0 < a["resumed_from"] < 160
    assert torch.equal(
        torch.tensor(a["distances"], dtype=torch.float64), torch.tensor(b["distances"], dtype=torch.float64)
    )
    assert (a["mean"], a["ci_low"], a["ci_high"]) == (b["mean"], b["ci_low"], b["ci_high"])


@pytest.mark.parametrize("command", ["ppl", "geodesic"])
def test_resume_unverified_flag(gens, tmp_path, capsys, command) -> None:
    f = Path(gens).with_name("counted.py")
    counted = textwrap.dedent(
        """
        import itertools

        COUNTER = itertools.count()  # state in C: no reliable fingerprint


        def counted(z):
            _ = COUNTER
            return plain(z)
        """
    )
    f.write_text(GENERATORS + "\n" + counted)
    ck = tmp_path / "c.ckpt"
    args, fewer = (
        (PLAIN, ["--num-samples", "4"]) if command == "ppl" else (["--z-dim", "4", *GEO], ["--pairs", "1"])
    )
    base = [command, "--generator", f"{f}:counted", *args, "--checkpoint", str(ck)]
    assert main([*base, *fewer]) == 0
    capsys.readouterr()
    assert main(base) == 2
    line = _err_line(capsys)
    assert "cannot verify" in line and "--resume-unverified" in line
    assert main([*base, "--resume-unverified"]) == 0
