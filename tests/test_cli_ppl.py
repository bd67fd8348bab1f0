"""The ``tangentlens ppl`` command: a generator from ``file.py:factory``, JSON output, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tangentlens.cli import main

FACTORY = textwrap.dedent(
    """
    from tangentlens.models.stylegan2 import StyleGAN2Generator

    def make():
        return StyleGAN2Generator(z_dim=8, w_dim=8, img_resolution=8, channel_base=64, channel_max=8, seed=1)
    """
)


def test_cli_ppl_writes_json(tmp_path, capsys) -> None:
    f = tmp_path / "gens.py"
    f.write_text(FACTORY)
    out = tmp_path / "r.json"
    rc = main(
        [
            "ppl",
            "--generator",
            f"{f}:make",
            "--num-samples",
            "12",
            "--batch-size",
            "5",
            "--distance",
            "l2",
            "--json",
            str(out),
            "--no-progress",
            "--seed",
            "3",
        ]
    )
    assert rc == 0
    assert "PPL" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["num_samples"] == 12 and len(data["distances"]) == 12 and data["config"]["seed"] == 3
    assert data["config"]["method"] == "jvp" and data["config"]["generator"]["kind"].startswith("stylegan2")


def test_cli_ppl_errors(tmp_path, capsys) -> None:
    assert main(["ppl", "--generator", "nocolon"]) == 2
    assert "module:attr" in capsys.readouterr().err
    assert main(["ppl", "--generator", str(tmp_path / "missing.py") + ":make"]) == 2
    assert "no such file" in capsys.readouterr().err
    r = subprocess.run([sys.executable, "-m", "tangentlens", "ppl", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--preset" in r.stdout
