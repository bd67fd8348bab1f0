"""`tangentlens demo` end to end on the shipped models, at small sizes."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("matplotlib")


def test_demo_writes_report_and_plots(tmp_path) -> None:
    from tangentlens.demo import run_demo

    rep = run_demo(
        tmp_path,
        ppl_samples=64,
        spectra_points=8,
        metric_samples=400,
        metric_points=64,
        geodesic_pairs=2,
        quiet=True,
    )
    for name in (
        "report.json",
        "report.md",
        "ppl_histogram.png",
        "eigenvalue_decay.png",
        "alignment.png",
        "traversals_beta1.png",
        "traversals_beta4.png",
        "geodesics.png",
    ):
        assert (tmp_path / name).stat().st_size > 500, name
    data = json.loads((tmp_path / "report.json").read_text())
    assert set(data["models"]) == {"beta1", "beta4"} and data == json.loads(json.dumps(rep, default=float))
    for m in data["models"].values():
        p = m["ppl"]["l2"]
        assert p["ci_low"] < p["mean"] < p["ci_high"] and p["num_samples"] == 64
        assert m["spectra"]["condition_number"]["q50"] >= 1 and 0 <= m["spectra"]["alignment_max"]["q50"] <= 1
        assert {
            "mig",
            "sap",
            "dci_disentanglement",
            "modularity",
            "beta_vae_eval_accuracy",
            "factor_vae_eval_accuracy",
        } <= set(m["metrics"])
        g = m["geodesics"]
        assert g["num_pairs"] == 2 and 0 < g["efficiency"]["mean"] <= 1 and "efficiency_fine" in g
    md = (tmp_path / "report.md").read_text()
    assert "β = 1" in md and "β = 4" in md and "column orthogonality" in md and "geodesic efficiency" in md


def test_demo_bad_arguments(tmp_path) -> None:
    from tangentlens.demo import run_demo

    with pytest.raises(ValueError, match="ppl_samples"):
        run_demo(tmp_path, ppl_samples=1, quiet=True)
    with pytest.raises(ValueError, match="geodesic_pairs"):
        run_demo(tmp_path, geodesic_pairs=1, quiet=True)
