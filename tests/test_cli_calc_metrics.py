"""The CLI the way NVIDIA's calc_metrics.py is used (issue 21): `tangentlens ppl --network ... --metrics
ppl2_wend,...` with NVIDIA's configurations and JSONL record (against NVIDIA's own functions' outputs,
tests/fixtures/nvidia_metrics), several metrics in one run, `--nproc 2` and torchrun equal to one process,
`--labels`, weight options, `tangentlens metrics` on saved arrays, and help texts that match what each
command accepts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import NvidiaLikeLPIPS
from tangentlens.cli import main
from tangentlens.cli import ppl as cli_ppl
from tangentlens.ppl import NVIDIA_METRICS, PRESETS

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "nvidia_metrics" / "metric_main.json").read_text())

FACTORY = textwrap.dedent(
    """
    from tangentlens.models.stylegan2 import StyleGAN2Generator

    def make():
        return StyleGAN2Generator(z_dim=8, w_dim=8, img_resolution=16, channel_base=64, channel_max=8, seed=1)

    def make_conditional():
        return StyleGAN2Generator(
            z_dim=8, c_dim=3, w_dim=8, img_resolution=16, channel_base=64, channel_max=8, seed=2
        )
    """
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "gens.py").write_text(FACTORY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in torch 2.13
        torch.jit.save(torch.jit.script(NvidiaLikeLPIPS(channels=4, seed=5)), str(root / "vgg16.pt"))
    return root


def test_metric_names_are_nvidias_configurations():
    """Each name's protocol = the arguments NVIDIA's metric_main passes to compute_ppl."""
    assert set(NVIDIA_METRICS) == set(FIXTURE["ppl_metrics"])
    for name, want in FIXTURE["ppl_metrics"].items():
        preset, fields = NVIDIA_METRICS[name]
        p = PRESETS[preset]
        got = dict(
            num_samples=p.num_samples,
            epsilon=p.epsilon,
            space=fields["space"],
            sampling=fields["sampling"],
            crop=p.crop,
            batch_size=p.batch_size,
        )
        assert got == want, name
        assert p.method == "fd" and p.precision == "fp32" and p.resize == "box256" and p.replay == "nvidia"


def test_jsonl_record_is_nvidias(monkeypatch):
    for seconds, text in FIXTURE["format_time"].items():
        assert cli_ppl._format_time(float(seconds)) == text, seconds
    inp = FIXTURE["jsonl_inputs"]
    monkeypatch.setattr(cli_ppl.time, "time", lambda: inp["timestamp"])
    line = cli_ppl.nvidia_record(
        inp["metric"], inp["value"], inp["total_time"], inp["num_gpus"], inp["snapshot_pkl"]
    )
    assert line == FIXTURE["jsonl_line"]


@pytest.mark.filterwarnings("ignore:`torch.jit.(save|load|script)` is deprecated:DeprecationWarning")
def test_metrics_share_one_run_and_append_nvidias_jsonl(files, tmp_path, capsys):
    jsonl, out = tmp_path / "metric-ppl.jsonl", tmp_path / "r.json"
    jsonl.write_text('{"earlier": "line"}\n')  # appended to, as NVIDIA's metric-*.jsonl
    args = ["ppl", "--generator", f"{files / 'gens.py'}:make", "--metrics", "ppl2_wend,ppl_zfull,ppl_wend"]
    args += ["--nvidia-vgg16", str(files / "vgg16.pt"), "--num-samples", "6", "--no-progress"]
    args += ["--jsonl", str(jsonl), "--json", str(out), "--bootstrap", "0", "--no-check-range"]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    lines = jsonl.read_text().splitlines()
    assert lines[0] == '{"earlier": "line"}' and len(lines) == 4
    doc = json.loads(out.read_text())["metrics"]
    for line, name in zip(lines[1:], ["ppl2_wend", "ppl_zfull", "ppl_wend"], strict=True):
        rec = json.loads(line)
        assert list(rec) == FIXTURE["jsonl_keys"]
        assert rec["metric"] == name and rec["results"] == {name: doc[name]["mean"]}
        assert rec["num_gpus"] == 1 and rec["snapshot_pkl"] == f"{files / 'gens.py'}:make"
        assert rec["total_time_str"] == cli_ppl._format_time(rec["total_time"])
        assert line in stdout  # printed too, as report_metric does
        cfg = doc[name]["config"]
        want = FIXTURE["ppl_metrics"][name]
        assert (cfg["space"], cfg["sampling"], cfg["crop"]) == (want["space"], want["sampling"], want["crop"])
        assert cfg["distance"]["label"] == f"lpips-vgg16 (NVIDIA vgg16.pt: {files / 'vgg16.pt'})"
        assert f"{name}: PPL" in stdout and "distance lpips-vgg16 (NVIDIA vgg16.pt" in stdout
    # the networks are shared: one distance fingerprint, one generator fingerprint
    assert len({doc[n]["config"]["distance"]["fingerprint"] for n in doc}) == 1
    assert len({json.dumps(doc[n]["config"]["generator"], sort_keys=True) for n in doc}) == 1


def test_metrics_option_errors(files, capsys):
    gen = f"{files / 'gens.py'}:make"
    assert main(["ppl", "--network", gen, "--metrics", "ppl2_wend,fid50k"]) == 2
    assert "fid50k" in capsys.readouterr().err
    assert main(["ppl", "--network", gen, "--metrics", "ppl_zend", "--space", "w"]) == 2
    assert "--space cannot be combined" in capsys.readouterr().err
    assert main(["ppl", "--network", gen, "--jsonl", "x.jsonl"]) == 2
    assert "pass --metrics" in capsys.readouterr().err
    # offline and no perceptual weights: the preset names the files instead of measuring pixels
    assert main(["ppl", "--network", gen, "--metrics", "ppl2_wend", "--offline", "--num-samples", "4"]) == 2
    err = capsys.readouterr().err
    assert "vgg16.pt" in err and "vgg16-397923af.pth" in err and "pixel" in err


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONWARNINGS"] = "ignore::DeprecationWarning"
    return env


def test_nproc_2_and_torchrun_equal_one_process(files, tmp_path):
    """--nproc 2 starts two gloo processes itself; torchrun -m tangentlens ppl works too; both give the
    single process's distances bit for bit (same per-process batch)."""
    base = ["ppl", "--generator", f"{files / 'gens.py'}:make", "--distance", "l2", "--num-samples", "10"]
    base += ["--batch-size", "2", "--bootstrap", "0", "--no-progress", "--seed", "4", "--no-check-range"]
    one, two, tr = tmp_path / "one.json", tmp_path / "two.json", tmp_path / "tr.json"
    threads = torch.get_num_threads()
    # as the processes below (OMP_NUM_THREADS=1): convolutions round differently per thread count
    torch.set_num_threads(1)
    try:
        assert main([*base, "--json", str(one)]) == 0
    finally:
        torch.set_num_threads(threads)
    r = subprocess.run(
        [sys.executable, "-m", "tangentlens", *base, "--nproc", "2", "--json", str(two)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("PPL") == 1  # rank 0 reports
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "tangentlens"]
        + [*base, "--json", str(tr)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    a, b, c = (json.loads(p.read_text()) for p in (one, two, tr))
    assert a["config"]["world_size"] == 1 and b["config"]["world_size"] == 2 == c["config"]["world_size"]
    assert a["distances"] == b["distances"] == c["distances"] and a["mean"] == b["mean"] == c["mean"]


def test_labels_for_conditional_generators(files, tmp_path, capsys):
    rows = np.eye(3, dtype=np.float32)[[0, 0, 0, 2]]  # class 1 never occurs
    np.save(tmp_path / "labels.npy", rows)
    torch.save({"c": torch.from_numpy(rows)}, tmp_path / "labels.pt")
    gen = f"{files / 'gens.py'}:make_conditional"
    outs = []
    for spec in (str(tmp_path / "labels.npy"), f"{tmp_path / 'labels.pt'}:c"):
        out = tmp_path / f"r{len(outs)}.json"
        args = ["ppl", "--generator", gen, "--labels", spec, "--distance", "l2", "--num-samples", "6"]
        assert main([*args, "--no-progress", "--bootstrap", "0", "--json", str(out)]) == 0
        outs.append(json.loads(out.read_text()))
    assert outs[0]["distances"] == outs[1]["distances"] and outs[0]["config"]["labels"] == "given rows"
    default = tmp_path / "default.json"
    args = ["ppl", "--generator", gen, "--distance", "l2", "--num-samples", "6", "--no-progress"]
    assert main([*args, "--bootstrap", "0", "--json", str(default)]) == 0
    assert json.loads(default.read_text())["distances"] != outs[0]["distances"]
    capsys.readouterr()
    assert main([*args, "--labels", str(tmp_path / "missing.npy")]) == 2
    assert "--labels" in capsys.readouterr().err


def _codes_factors(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rs = np.random.RandomState(seed)
    factors = rs.randint(0, 4, size=(n, 2))
    codes = np.concatenate([factors + 0.3 * rs.randn(n, 2), rs.randn(n, 1)], axis=1)
    return codes, factors


def test_metrics_command_on_saved_arrays(tmp_path, capsys):
    import tangentlens.metrics as tm

    c, f = _codes_factors(300, 0)
    ct, ft = _codes_factors(150, 1)
    np.save(tmp_path / "codes.npy", c)
    np.save(tmp_path / "factors.npy", f)
    np.savez(tmp_path / "test.npz", codes=ct, factors=ft)
    torch.save(torch.from_numpy(c), tmp_path / "codes.pt")
    out = tmp_path / "scores.json"
    args = ["metrics", "--codes", str(tmp_path / "codes.npy"), "--factors", str(tmp_path / "factors.npy")]
    args += [
        "--codes-test",
        f"{tmp_path / 'test.npz'}:codes",
        "--factors-test",
        f"{tmp_path / 'test.npz'}:factors",
    ]
    assert main([*args, "--json", str(out)]) == 0
    s = json.loads(out.read_text())["scores"]
    assert s["mig"] == tm.mig(c, f) and s["modularity"] == tm.modularity(c, f) and s["irs"] == tm.irs(c, f)
    assert s["sap"] == tm.sap(c, f, ct, ft)
    assert s["dci"] == tm.dci(c, f, ct, ft).as_dict()
    assert s["explicitness"] == tm.explicitness(c, f, ct, ft).as_dict()
    assert s["unsupervised"] == tm.unsupervised_scores(c)
    assert "mig:" in capsys.readouterr().out
    # no test split: the accumulating classes' seeded hold-out; a .pt file read with weights_only
    out2 = tmp_path / "held.json"
    args = ["metrics", "--codes", str(tmp_path / "codes.pt"), "--factors", str(tmp_path / "factors.npy")]
    assert main([*args, "--metrics", "sap,mig", "--json", str(out2)]) == 0
    doc = json.loads(out2.read_text())
    sap = tm.SAP()
    sap.update(c, f)
    assert doc["scores"] == {"sap": sap.compute(), "mig": tm.mig(c, f)}
    assert doc["config"]["test"] == {"held_out_fraction": 1 / 3, "seed": 0}
    # errors: one line, exit 2
    assert (
        main(["metrics", "--codes", str(tmp_path / "test.npz"), "--factors", str(tmp_path / "factors.npy")])
        == 2
    )
    assert "name one as" in capsys.readouterr().err
    assert main([*args, "--metrics", "bogus"]) == 2
    assert "bogus" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command", ["ppl", "spectrum", "metrics", "weights", "demo", "info", "linear-gaussian"]
)
def test_help_matches_what_each_command_accepts(command, capsys):
    with pytest.raises(SystemExit) as exc:
        from tangentlens.cli import build_parser

        build_parser().parse_args([command, "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    if command in ("ppl", "spectrum"):
        assert "file.pkl" in text and "module:attr" in text and "file.py:attr" in text and "--network" in text
        assert "--trunk-weights" in text and "--offline" in text
    if command == "ppl":
        assert all(name in text for name in NVIDIA_METRICS) and "--jsonl" in text and "--gpus" in text
        assert "--nproc" in text and "--labels" in text and "--nvidia-vgg16" in text and "torchrun" in text
    if command == "metrics":
        assert ".npy" in text and ".npz" in text and ".pt" in text and "--codes-test" in text
    if command == "weights":
        assert "--download" in text and "--list" in text


def test_launch_uses_one_thread_per_process_as_torchrun(monkeypatch):
    """--nproc/--gpus set OMP_NUM_THREADS=1 unless it is set, as torchrun does: the same thread count gives
    the same bits as a torchrun run (convolutions round per thread count) and N processes do not
    oversubscribe the cores."""
    from tangentlens.cli import _launch

    envs: list[dict[str, str]] = []

    class _Done:
        def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
            envs.append(env)

        def poll(self) -> int:
            return 0

    monkeypatch.setattr(_launch.subprocess, "Popen", _Done)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert _launch.launch(2, ["info"]) == 0
    assert [e["OMP_NUM_THREADS"] for e in envs] == ["1", "1"]
    assert [e["RANK"] for e in envs] == ["0", "1"]
    envs.clear()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert _launch.launch(2, ["info"]) == 0
    assert [e["OMP_NUM_THREADS"] for e in envs] == ["3", "3"]
