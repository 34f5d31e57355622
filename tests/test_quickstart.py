"""The offline quickstart end to end at a toy size: every phase runs, the report is complete, and
a rerun resumes instead of redoing the work."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

TOY = ["world.n_train_images=120", "world.n_bench_per_ability=3", "world.n_text=40", "preset=test",
       "lm.max_steps=4", "lm.seq_len=64", "lm.batch_size=8", "clip.max_steps=3", "clip.batch_size=16",
       "stages.stage1.epochs=0.1", "stages.stage2.epochs=0.1", "stages.stage1.model_max_length=512",
       "world.image_size=32"]


@pytest.mark.slow
def test_quickstart_runs_every_phase_and_writes_the_report(tmp_path):
    out = tmp_path / "qs"
    cmd = [sys.executable, "-m", "allava.cli", "quickstart", "--out", str(out), *TOY]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert set(report["evals"]) == {"full/stage1", "full/stage2", "stage2-only/stage2", "full/stage2, scene as text"}
    for ev in report["evals"].values():
        assert len(ev["abilities"]) >= 8
        assert all(0 < a["chance"] < 0.5 for a in ev["abilities"].values())
    phases = {"world", "tokenizer", "stage0-lm", "stage0-clip", "train-full", "train-stage2-only"}
    assert phases <= set(report["phases"])
    full = report["phases"]["train-full"]["stages"]
    assert full["stage1"]["tokens_per_s"] > 0 and full["stage2"]["steps"] > 0
    assert report["peak_rss_mb"] > 0 and {"overall_accuracy", "wall_time"} <= set(report["targets"])
    assert (out / "loss_curves.png").stat().st_size > 1000
    assert "stage2-only/stage2" in (out / "report.md").read_text()

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("already done") >= 8

    # The noise study reuses everything above: inject, QC, stage 2 on the noisy and on the QC'd data.
    noisy = subprocess.run(cmd + ["--inject-noise", "0.2", "--qc"], capture_output=True, text=True, timeout=600)
    assert noisy.returncode == 0, noisy.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert {"noisy/stage2", "qc/stage2"} <= set(report["evals"])
    qc = report["phases"]["noise-qc"]
    assert qc["injected"] == report["phases"]["noise-inject"]["injected"] > 0
    assert qc["injected_removed"] >= 0.9, qc  # what the cheap ops and the scene judge catch even at toy size
    assert report["wall_s_noise_study"] > 0 and report["targets"]["wall_time"]["value"] < report["wall_s_total"]
    assert set(report["comparisons"]) == {"full/stage2 vs stage2-only/stage2", "full/stage2 vs noisy/stage2",
                                          "qc/stage2 vs noisy/stage2"}
    assert all(0 <= c["p_value"] <= 1 for c in report["comparisons"].values())
    text = (out / "report.md").read_text()
    assert "## Noise and quality control" in text and "McNemar" in text
    bad = subprocess.run(cmd + ["--qc"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--inject-noise" in bad.stderr and "Traceback" not in bad.stderr
