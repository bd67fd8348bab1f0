"""Small things a new user notices (issue 21): saved plots keep their labels inside the figure, progress bars
name their unit, the doc examples that failed as written, and the CPU batch picked from the measured cost
of one forward pass."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import torch

import tangentlens as tl
from tangentlens import spectra
from tangentlens.models.stylegan2 import StyleGAN2Generator

ROOT = Path(__file__).resolve().parents[1]


def _linear_generator(z_dim: int = 3):
    w = torch.randn(z_dim, 8 * 8, generator=torch.Generator().manual_seed(0))

    def G(z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z @ w).reshape(-1, 1, 8, 8)

    return G


def _inside(fig, *axes) -> None:
    """Every axes' labels, ticks and title lie inside the saved figure."""
    fig.savefig(io.BytesIO(), format="png")
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    for ax in axes:
        bb = ax.get_tightbbox(renderer)
        assert bb.x0 >= box.x0 - 0.5 and bb.y0 >= box.y0 - 0.5, (bb, box)
        assert bb.x1 <= box.x1 + 0.5 and bb.y1 <= box.y1 + 0.5, (bb, box)


def test_saved_plots_keep_their_labels_inside():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    G = _linear_generator()
    r = tl.ppl(G, z_dim=3, space="z", distance="l2", num_samples=50, progress=False, bootstrap=0)
    ax = r.plot_histogram(log=True)
    _inside(ax.figure, ax)
    res = spectra.scan(G, 6, 0, k=None, z_dim=3, store_eigenvectors=True, progress=False)
    ax = res.plot_eigenvalue_decay()
    _inside(ax.figure, ax)
    ax = res.plot_alignment()
    _inside(ax.figure, *ax.figure.axes)  # the heat map and its colour bar


def test_progress_bars_name_their_unit(capsys):
    pytest.importorskip("tqdm")
    G = _linear_generator()
    spectra.scan(G, 4, 0, k=None, z_dim=3, progress=True, batch_size=2)
    assert "point/s" in capsys.readouterr().err
    tl.ppl(G, z_dim=3, space="z", distance="l2", num_samples=4, progress=True, bootstrap=0)
    assert "sample/s" in capsys.readouterr().err


def test_doc_examples_that_failed_as_written():
    readme = (ROOT / "README.md").read_text()
    # the philox example ran only with CUDA
    example = next(
        line for line in readme.splitlines() if "tl.ops.philox_normal(seed=0, start=1_000_000" in line
    )
    assert 'device="cuda"' not in example
    device = "cuda" if torch.cuda.is_available() else "cpu"
    z = tl.ops.philox_normal(seed=0, start=1_000_000, count=4, dim=8, dtype=torch.float32, device=device)
    assert z.shape == (4, 8)
    # plot_alignment needs the eigenvectors: the scan example stores them
    doc = (ROOT / "docs" / "spectra.md").read_text()
    scan_call = doc[doc.index("res = spectra.scan(") : doc.index("res.aggregate()")]
    assert "store_eigenvectors=True" in scan_call and "res.plot_alignment()" in doc
    # the demo's log names a section that exists
    demo = (ROOT / "python" / "tangentlens" / "demo.py").read_text()
    section = re.search(r"docs/lpips.md, '([^']+)'", demo).group(1)
    assert f"## {section}" in (ROOT / "docs" / "lpips.md").read_text()


def test_cpu_batch_is_picked_from_the_measured_cost(monkeypatch):
    """Cheap generators get large batches, expensive ones stay small; the choice is recorded, an explicit
    batch wins, and the distances agree with another batch size to float rounding."""
    import importlib

    ppl_module = importlib.import_module("tangentlens.ppl.run")  # where the CPU batch is picked

    G = _linear_generator()
    kw = dict(z_dim=3, space="z", distance="l2", num_samples=40, progress=False, bootstrap=0, seed=2)
    cheap = tl.ppl(G, **kw)
    auto = cheap.config["batch_size_auto"]
    assert cheap.config["batch_size"] == auto["batch_size"] == ppl_module.CPU_BATCH_MAX
    assert auto["seconds_per_sample"] > 0
    explicit = tl.ppl(G, batch_size=3, **kw)
    assert explicit.config["batch_size"] == 3 and "batch_size_auto" not in explicit.config
    torch.testing.assert_close(cheap.distances, explicit.distances, rtol=1e-6, atol=0)
    # a costly forward pass keeps the small batch
    monkeypatch.setattr(ppl_module, "_seconds_per_sample", lambda engine, seed: 0.5)
    big = StyleGAN2Generator(z_dim=8, w_dim=8, img_resolution=16, channel_base=64, channel_max=8, seed=1)
    r = tl.ppl(big, distance="l2", num_samples=4, progress=False, bootstrap=0, check_range=False)
    assert r.config["batch_size"] == ppl_module.CPU_BATCH_SIZE


@pytest.mark.parametrize("command", ["ppl", "metrics"])
def test_help_examples_keep_their_lines(command, capsys):
    """The examples under ``--help`` print one command line per line, as written (not re-flowed)."""
    import importlib

    from tangentlens.cli import build_parser

    examples = importlib.import_module(f"tangentlens.cli.{command}").EXAMPLES
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    lines = capsys.readouterr().out.splitlines()
    for line in examples.strip().splitlines():
        assert line in lines, line


def test_auto_cpu_batch_resumes_with_the_checkpoints_batch(tmp_path, monkeypatch):
    """A resumed run keeps the batch its checkpoint was written with, whatever the timing says now (the batch
    size changes the distances at float rounding), and gives the identical result."""
    import importlib

    ppl_module = importlib.import_module("tangentlens.ppl.run")
    G = _linear_generator()
    ckpt = tmp_path / "run.ckpt"
    kw = dict(z_dim=3, space="z", distance="l2", progress=False, bootstrap=0, seed=4, checkpoint=ckpt)
    monkeypatch.setattr(ppl_module, "_seconds_per_sample", lambda engine, seed: 1e-9)
    first = tl.ppl(G, num_samples=20, **kw)
    assert first.config["batch_size"] == ppl_module.CPU_BATCH_MAX
    monkeypatch.setattr(ppl_module, "_seconds_per_sample", lambda engine, seed: 0.5)  # would pick 4
    resumed = tl.ppl(G, num_samples=30, **kw)
    assert resumed.config["batch_size"] == ppl_module.CPU_BATCH_MAX
    assert resumed.config["batch_size_auto"]["from_checkpoint"] == str(ckpt)
    fresh = tl.ppl(G, num_samples=30, batch_size=ppl_module.CPU_BATCH_MAX, **{**kw, "checkpoint": None})
    assert torch.equal(resumed.distances, fresh.distances)
