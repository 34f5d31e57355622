"""Resume: finished ids are skipped, the cache makes reruns free, torn lines are repaired, and a
runner killed with SIGKILL at random moments still ends with every id exactly once."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import synth_helpers as h

from allava.synth.cli import main as synth_main
from allava.synth.fake_server import FakeConfig, serve

ROOT = Path(__file__).resolve().parents[1]


def test_rerun_skips_finished_ids(tmp_path):
    src = h.write_source(tmp_path / "src.jsonl", 40)
    out = tmp_path / "run"
    with serve() as srv:
        assert synth_main(h.synth_args("test-echo", str(src), out, srv.url, "--limit", "15")) == 0
        assert srv.server.requests == 15
        assert synth_main(h.synth_args("test-echo", str(src), out, srv.url)) == 0
        assert srv.server.requests == 40  # only the 25 new ones
        assert synth_main(h.synth_args("test-echo", str(src), out, srv.url)) == 0
        assert srv.server.requests == 40
    h.check_exactly_once(out, {f"t{i:05d}" for i in range(40)})


def test_cache_makes_a_rerun_free(tmp_path):
    pytest.importorskip("allava.synth.tasks.allava_laion")
    out = tmp_path / "run"
    with serve(FakeConfig(faults={"missing": 0.2})) as srv:
        args = h.synth_args("allava-laion", "scenes:12", out, srv.url, "--max-image-side", "64")
        assert synth_main(args) == 0
        first = srv.server.requests
        for name in ("records.jsonl", "rejects.jsonl"):
            (out / name).unlink()
        assert synth_main(args) == 0
        assert srv.server.requests == first  # zero requests: every answer came from the cache
    s = json.loads((out / "summary.json").read_text())
    assert s["cached"] == 12 and s["this_run"]["paid"] == 0 and s["this_run"]["cost_usd"] == 0
    h.check_exactly_once(out, {f"scene-{i:06d}" for i in range(12)})


def test_retry_rejects_asks_again(tmp_path):
    src = h.write_source(tmp_path / "src.jsonl", 20)
    out = tmp_path / "run"
    with serve(FakeConfig(faults={"500_always": 0.3})) as srv:
        assert synth_main(h.synth_args("test-echo", str(src), out, srv.url, "--max-retries", "0")) == 0
        n_rej = len(h.ids_of(out / "rejects.jsonl"))
        assert n_rej > 0
        srv.server.cfg.faults = {}  # the endpoint recovered
        assert synth_main(h.synth_args("test-echo", str(src), out, srv.url, "--retry-rejects")) == 0
    recs, rejs = h.check_exactly_once(out, {f"t{i:05d}" for i in range(20)})
    assert len(recs) == 20 and not rejs and len(h.ids_of(out / "rejects.retried.jsonl")) == n_rej


def test_torn_last_line_is_repaired(tmp_path):
    src = h.write_source(tmp_path / "src.jsonl", 10)
    out = tmp_path / "run"
    with serve() as srv:
        assert synth_main(h.synth_args("test-echo", str(src), out, srv.url, "--limit", "5")) == 0
        with open(out / "records.jsonl", "a") as fh:
            fh.write('{"id": "t00007", "raw": "cut off by SIGK')  # what a kill mid-write leaves
        assert synth_main(h.synth_args("test-echo", str(src), out, srv.url)) == 0
    h.check_exactly_once(out, {f"t{i:05d}" for i in range(10)})


def _spawn(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen([sys.executable, "-m", "allava.synth.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_sigkill_at_random_moments_then_resume(tmp_path):
    pytest.importorskip("allava.synth.tasks.allava_laion")
    n = 400
    out = tmp_path / "run"
    rng = random.Random(1234)
    kills = 0
    with serve(FakeConfig(latency=0.04, faults={"429": 0.05, "missing": 0.1}, retry_after=0.1)) as srv:
        args = h.synth_args("allava-laion", f"scenes:{n}", out, srv.url, "--concurrency", "8", "--max-image-side", "64")
        for _ in range(4):
            proc = _spawn(args)
            time.sleep(rng.uniform(1.0, 2.5))  # imports take ~1 s; then items are being written
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait(timeout=10)
            progress = len(h.ids_of(out / "records.jsonl")) + len(h.ids_of(out / "rejects.jsonl"))
        proc = _spawn(args)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    assert kills >= 3 and 0 < progress
    h.check_exactly_once(out, {f"scene-{i:06d}" for i in range(n)})
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "complete" and s["done"] + s["rejected"] == n


def test_sigint_stops_cleanly_with_interrupted_status(tmp_path):
    pytest.importorskip("allava.synth.tasks.allava_laion")
    out = tmp_path / "run"
    with serve(latency=0.2) as srv:
        proc = _spawn(h.synth_args("allava-laion", "scenes:300", out, srv.url, "--concurrency", "4", "--max-image-side", "64"))
        deadline = time.time() + 20
        while not (out / "records.jsonl").exists() or not h.ids_of(out / "records.jsonl"):
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "interrupted" and s["pending"] > 0
    assert s["done"] + s["rejected"] + s["pending"] == 300
