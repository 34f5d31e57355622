"""Fault injection against the loopback fake server: every input id ends in exactly one of
records/rejects; Retry-After is honoured (measured); the budget is a hard ceiling."""
from __future__ import annotations

import json
from collections import defaultdict

import pytest
import synth_helpers as h

from allava.synth.cli import main as synth_main
from allava.synth.fake_server import FakeConfig, serve

ALL_FAULTS = {"429": 0.1, "500": 0.1, "503": 0.05, "hang": 0.05, "500_always": 0.05,
              "truncate": 0.07, "malformed": 0.07, "missing": 0.07, "empty": 0.04}
FAST = ("--timeout", "0.5", "--max-retries", "2", "--concurrency", "16")


def test_every_fault_every_id_exactly_once(tmp_path):
    src = h.write_source(tmp_path / "src.jsonl", 150)
    out = tmp_path / "run"
    with serve(FakeConfig(latency=0.005, faults=ALL_FAULTS, retry_after=0.05, hang_s=3)) as srv:
        rc = synth_main(h.synth_args("test-echo", str(src), out, srv.url, *FAST))
        status = dict(srv.server.status)
    assert rc == 0
    recs, rejs = h.check_exactly_once(out, {f"t{i:05d}" for i in range(150)})
    assert {429, 500, 503} <= set(status)  # the faults were really injected
    reasons = [json.loads(x)["reason"] for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert any("gave up after 3 attempts" in r for r in reasons)  # 500_always
    assert any("truncated" in r for r in reasons) and any("missing section" in r for r in reasons)
    assert all("raw" in json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines())
    s = json.loads((out / "summary.json").read_text())
    assert s["done"] == len(recs) and s["rejected"] == len(rejs) and s["pending"] == 0
    assert s["this_run"]["retries"] > 0


def test_every_fault_allava_laion_with_images(tmp_path):
    pytest.importorskip("allava.synth.tasks.allava_laion")
    out = tmp_path / "run"
    with serve(FakeConfig(latency=0.005, faults=ALL_FAULTS, retry_after=0.05, hang_s=3)) as srv:
        rc = synth_main(h.synth_args("allava-laion", "scenes:40", out, srv.url, *FAST, "--max-image-side", "64"))
    assert rc == 0
    recs, rejs = h.check_exactly_once(out, {f"scene-{i:06d}" for i in range(40)})
    assert recs and rejs


def test_corrupt_and_small_images_go_to_rejects(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (80, 80), "red").save(folder / f"ok{i}.png")
    Image.new("RGB", (80, 20), "red").save(folder / "thin.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    pytest.importorskip("allava.synth.tasks.allava_laion")
    out = tmp_path / "run"
    with serve() as srv:
        rc = synth_main(h.synth_args("allava-laion", str(folder), out, srv.url, "--min-short-edge", "32"))
    assert rc == 0
    _recs, _rejs = h.check_exactly_once(out, {"ok0.png", "ok1.png", "ok2.png", "ok3.png", "thin.png", "broken.jpg"})
    reasons = {json.loads(x)["id"]: json.loads(x)["reason"] for x in (out / "rejects.jsonl").read_text().splitlines()}
    assert reasons["broken.jpg"].startswith("unreadable image") and reasons["thin.png"].startswith("filtered")


@pytest.mark.parametrize("header", ["retry_after", "retry_after_ms"])
def test_retry_after_is_honoured(tmp_path, header):
    src = h.write_source(tmp_path / "src.jsonl", 6)
    wait = 0.6
    cfg = FakeConfig(faults={"429": 1.0}, retry_after=wait if header == "retry_after" else None,
                     retry_after_ms=wait * 1000 if header == "retry_after_ms" else None)
    with serve(cfg) as srv:
        rc = synth_main(h.synth_args("test-echo", str(src), tmp_path / "run", srv.url, "--concurrency", "6"))
        log = list(srv.server.log)
    assert rc == 0
    by_body = defaultdict(list)
    for t, key, status in log:
        by_body[key].append((t, status))
    gaps = [seq[1][0] - seq[0][0] for seq in by_body.values()]
    assert len(gaps) == 6 and all(seq[0][1] == 429 and seq[1][1] == 200 for seq in by_body.values())
    assert min(gaps) >= wait - 0.02, gaps  # waited at least Retry-After
    assert max(gaps) < wait + 1.0, gaps  # ... and not the exponential backoff on top


def test_budget_stops_cleanly_and_never_overspends(tmp_path):
    src = h.write_source(tmp_path / "src.jsonl", 60)
    out = tmp_path / "run"
    # $1 per 1M tokens in and out: each request reserves ~(prompt bytes + 256) tokens.
    common = ("--model", "fake-model", "--price-in", "1", "--price-out", "1", "--concurrency", "8")
    with serve(latency=0.01) as srv:
        rc = synth_main(h.synth_args("test-echo", str(src), out, srv.url, *common, "--budget-usd", "0.005"))
        s = json.loads((out / "summary.json").read_text())
        assert rc == 3 and s["status"] == "budget_exhausted"
        assert 0 < s["cost_usd"] <= 0.005 and s["pending"] > 0 and s["rejected"] == 0
        assert s["done"] + s["pending"] == 60
        ledger = sum(json.loads(x)["cost_usd"] for x in (out / "ledger.jsonl").read_text().splitlines())
        assert ledger == pytest.approx(s["cost_usd"])
        # the same budget again: nothing more is spent (the budget covers the folder, reruns included)
        assert synth_main(h.synth_args("test-echo", str(src), out, srv.url, *common, "--budget-usd", "0.005")) == 3
        assert json.loads((out / "summary.json").read_text())["cost_usd"] <= 0.005
        # a higher budget continues where it stopped
        assert synth_main(h.synth_args("test-echo", str(src), out, srv.url, *common, "--budget-usd", "1")) == 0
    h.check_exactly_once(out, {f"t{i:05d}" for i in range(60)})
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "complete" and s["cost_usd"] <= 1


def test_budget_exit_message_says_how_to_continue(tmp_path, capsys):
    src = h.write_source(tmp_path / "src.jsonl", 5)
    with serve() as srv:
        rc = synth_main(h.synth_args("test-echo", str(src), tmp_path / "run", srv.url, "--model", "fake",
                                     "--price-in", "1", "--price-out", "1", "--budget-usd", "0.00001"))
    assert rc == 3 and "higher --budget-usd" in capsys.readouterr().err


def test_hung_requests_time_out_and_are_retried(tmp_path):
    src = h.write_source(tmp_path / "src.jsonl", 8)
    out = tmp_path / "run"
    with serve(FakeConfig(faults={"hang": 1.0}, hang_s=5)) as srv:
        rc = synth_main(h.synth_args("test-echo", str(src), out, srv.url, "--timeout", "0.3", "--concurrency", "8"))
    s = json.loads((out / "summary.json").read_text())
    assert rc == 0 and s["done"] == 8 and s["this_run"]["retries"] == 8 and s["this_run"]["requests"] == 16


def test_bad_credentials_stop_the_run_with_one_line(tmp_path, capsys):
    src = h.write_source(tmp_path / "src.jsonl", 20)
    out = tmp_path / "run"
    with serve(FakeConfig(faults={"401": 1.0})) as srv:
        rc = synth_main(h.synth_args("test-echo", str(src), out, srv.url, "--concurrency", "4"))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "401" in err
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "failed" and s["rejected"] == 0 and s["pending"] == 20  # nothing thrown away


def test_fake_server_sustains_128_concurrent_requests(tmp_path):
    src = h.write_source(tmp_path / "src.jsonl", 256)
    with serve(latency=0.3) as srv:
        rc = synth_main(h.synth_args("test-echo", str(src), tmp_path / "run", srv.url, "--concurrency", "128"))
        peak = srv.server.max_in_flight
    assert rc == 0 and peak >= 120
