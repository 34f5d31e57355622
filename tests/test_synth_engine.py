"""Synthesis engine parts: limits, prices and budget, cache keys, sources, sharding, merge, CLI."""
from __future__ import annotations

import asyncio
import functools
import json
import operator
import time

import pytest
import synth_helpers as h
from PIL import Image

from allava.synth.base import BudgetExhausted
from allava.synth.budget import (
    Budget,
    Price,
    load_prices,
    lookup_price,
    resolve_price,
    text_token_bound,
)
from allava.synth.cache import fingerprint
from allava.synth.cli import main as synth_main
from allava.synth.config import SynthConfigError, parse_shard
from allava.synth.fake_server import serve
from allava.synth.limits import TokenBucket
from allava.synth.outputs import repair
from allava.synth.sources import open_source, selected_ids, shard_of
from allava.synth.teachers.openai import backoff_s, encode_image, retry_after_s


def test_token_bucket_paces_requests():
    async def go() -> float:
        bucket = TokenBucket(per_minute=600, burst_s=0.1)  # 10/s, burst of 1
        t = time.monotonic()
        for _ in range(6):
            await bucket.acquire()
        return time.monotonic() - t

    elapsed = asyncio.run(go())
    assert 0.45 <= elapsed < 1.5


def test_prices_lookup_and_refusal(tmp_path):
    prices = load_prices()
    assert lookup_price("gpt-4o-2024-08-06", prices).input == prices["gpt-4o"].input
    assert lookup_price("gpt-4o-mini-2024-07-18", prices) is prices["gpt-4o-mini"]
    assert lookup_price("my-local-llava", prices) is None
    with pytest.raises(SynthConfigError, match="--price-in"):
        resolve_price("my-local-llava", None, None, None, need=True)
    assert resolve_price("my-local-llava", 1.0, 2.0, None, need=True).cost(1_000_000, 1_000_000) == pytest.approx(3.0)
    # OpenAI's worked example: a 1024x1024 high-detail image is 765 tokens on gpt-4o.
    assert Price(2.5, 10).image_tokens(1024, 1024) == 765
    assert Price(2.5, 10).image_tokens(1024, 1024, "low") == 85


def test_budget_is_a_hard_ceiling():
    async def go() -> Budget:
        b = Budget(limit=1.0)
        await b.reserve(0.6)
        waiter = asyncio.create_task(b.reserve(0.6))  # does not fit while 0.6 is reserved
        await asyncio.sleep(0.01)
        assert not waiter.done()
        await b.settle(0.6, 0.3)  # real cost below the estimate: now it fits
        await asyncio.wait_for(waiter, 1)
        await b.settle(0.6, 0.6)
        with pytest.raises(BudgetExhausted):
            await b.reserve(0.2)  # 0.9 spent, nothing in flight: stop
        return b

    b = asyncio.run(go())
    assert b.spent == pytest.approx(0.9) and b.spent <= b.limit


def test_cache_key_hashes_image_content(tmp_path):
    for name, colour in (("a.png", "red"), ("b.png", "red"), ("c.png", "blue")):
        Image.new("RGB", (8, 8), colour).save(tmp_path / name)
    from allava.synth.cache import file_sha256

    def key(name: str, temperature: float = 0.0) -> str:
        msgs = [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image", "path": str(tmp_path / name)}]}]
        return fingerprint("m", msgs, {"temperature": temperature}, {str(tmp_path / name): file_sha256(tmp_path / name)})

    assert key("a.png") == key("b.png")  # same pixels, other path
    assert key("a.png") != key("c.png")
    assert key("a.png") != key("a.png", 0.5)


def test_encode_image_resizes_and_rejects_corrupt(tmp_path):
    Image.new("RGB", (400, 200), "red").save(tmp_path / "big.jpg")
    enc = encode_image(tmp_path / "big.jpg", 100)
    assert (enc.width, enc.height) == (100, 50) and enc.url.startswith("data:image/jpeg;base64,")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    from allava.synth.base import SynthError

    with pytest.raises(SynthError, match="unreadable image"):
        encode_image(tmp_path / "bad.png", 100)


def test_retry_after_headers_and_backoff():
    assert retry_after_s({"retry-after": "2"}) == 2.0
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_s({}) is None
    assert all(0.25 <= backoff_s(0) <= 0.5 for _ in range(20))
    assert backoff_s(20) <= 60


def test_text_token_bound_is_an_upper_bound():
    msgs = [{"role": "user", "content": "héllo world " * 10}]
    assert text_token_bound(msgs) >= len("héllo world " * 10) // 4


def test_sources_folder_records_scenes_and_shards(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    Image.new("RGB", (64, 32)).save(folder / "small.png")
    Image.new("RGB", (64, 64)).save(folder / "sub" / "ok.jpg")
    (folder / "notes.txt").write_text("x")
    src = open_source(str(folder), tmp_path / "out", min_short_edge=40)
    assert list(src.ids()) == ["small.png", "sub/ok.jpg"]
    recs = tmp_path / "recs.jsonl"
    recs.write_text('{"id": 1, "image": "sub/ok.jpg", "question": "q"}\nnot json\n{"question": "no id"}\n')
    entries = list(open_source(str(recs), tmp_path, image_folder=folder).entries(lambda _id: True))
    assert entries[0].id == "1" and entries[0].fields == {"question": "q"} and entries[0].image_file() == folder / "sub/ok.jpg"
    assert [type(e).__name__ for e in entries[1:]] == ["Rejected", "Rejected"]
    scenes = open_source("scenes:50@7", tmp_path)
    ids = list(scenes.ids())
    shards = [list(selected_ids(scenes, (i, 3), None)) for i in range(3)]
    assert sorted(functools.reduce(operator.iadd, shards, [])) == ids and all(shards)
    assert all(shard_of(i, 3) == k for k, s in enumerate(shards) for i in s)
    assert list(selected_ids(scenes, (1, 3), 4)) == shards[1][:4]
    abil = list(open_source("abilities:2", tmp_path).ids())
    assert "color-00000" in abil and len(abil) == len(set(abil))
    with pytest.raises(SynthConfigError):
        parse_shard("3/3")
    with pytest.raises(SynthConfigError):
        open_source("nope/nothing", tmp_path)


def test_repair_truncates_torn_line(tmp_path):
    p = tmp_path / "records.jsonl"
    p.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "raw": "half')
    assert repair(p) > 0
    assert p.read_text() == '{"id": "a"}\n{"id": "b"}\n'


def test_allava_laion_end_to_end_through_openai_teacher(tmp_path):
    pytest.importorskip("allava.synth.tasks.allava_laion")
    out = tmp_path / "run"
    with serve(latency=0.01) as srv:
        rc = synth_main(h.synth_args("allava-laion", "scenes:6", out, srv.url, "--budget-usd", "1", "--max-image-side", "64"))
        sent = srv.server.requests
    assert rc == 0 and sent == 6
    lines = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and all((out / ln["image"]).exists() for ln in lines)
    ln = lines[0]
    assert ln["task"] == "allava-laion" and len(ln["output"]["candidate_questions"]) == 5
    assert ln["usage"]["prompt_tokens"] > 0 and ln["cost_usd"] > 0 and "<start of answer>" in ln["raw"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["done"] == 6 and summary["pending"] == 0
    assert summary["cost_usd"] == pytest.approx(sum(x["cost_usd"] for x in lines))
    try:
        from allava.synth.export import export  # noqa: F401 - the other half of the pipeline
    except ImportError:
        return
    assert synth_main(["export", str(out), "--to", "llava", "--out", str(tmp_path / "llava")]) == 0
    assert any((tmp_path / "llava").iterdir())


def test_scene_teacher_runs_offline(tmp_path):
    pytest.importorskip("allava.synth.teachers.scene")
    out = tmp_path / "scene"
    assert synth_main(h.synth_args("allava-laion", "scenes:4", out, None, "--teacher", "scene")) == 0
    assert len(h.ids_of(out / "records.jsonl")) == 4


def test_budget_without_price_is_a_one_line_user_error(tmp_path, capsys):
    rc = synth_main(h.synth_args("test-echo", "abilities:1", tmp_path / "o", "http://127.0.0.1:9/v1",
                                 "--model", "my-local-model", "--budget-usd", "5"))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--price-in" in err


def test_merge_checks_missing_and_doubled(tmp_path):
    src = h.write_source(tmp_path / "src.jsonl", 30)
    with serve() as srv:
        for i in range(3):
            assert synth_main(h.synth_args("test-echo", str(src), tmp_path / f"s{i}", srv.url, "--shard", f"{i}/3")) == 0
    shards = [str(tmp_path / f"s{i}") for i in range(3)]
    assert synth_main(["merge", str(tmp_path / "m"), *shards]) == 0
    h.check_exactly_once(tmp_path / "m", {f"t{i:05d}" for i in range(30)})
    assert synth_main(["merge", str(tmp_path / "m2"), *shards[:2]]) == 1  # shard 2 missing
    dup = tmp_path / "s1" / "records.jsonl"
    dup.write_text(dup.read_text() + (tmp_path / "s0" / "records.jsonl").read_text().splitlines()[0] + "\n")
    assert synth_main(["merge", str(tmp_path / "m3"), *shards]) == 1


def test_top_level_cli_has_the_synth_verb(tmp_path, capsys):
    pytest.importorskip("allava.synth.teachers.scene")
    from allava.cli import main

    out = tmp_path / "top"
    assert main(["synth", "allava-laion", "--images", "scenes:2", "--out", str(out), "--teacher", "scene", "--no-progress"]) == 0
    assert "2 of 2 items done" in capsys.readouterr().out
    assert main(["synth", "allava-laion", "--images", "no/such/dir", "--out", str(out), "--teacher", "scene"]) == 2


def test_t2i_prompt_source_renders_images_for_any_task(tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(r) for r in [
        {"id": "p/ok", "prompt": "a large red circle in the top left, two blue squares in the center and the bottom right"},
        {"id": "p/odd", "prompt": "a dragon made of marshmallows"},  # the procedural renderer cannot draw it
        {"id": "p/none"},
    ]) + "\n")
    out = tmp_path / "run"
    assert synth_main(["allava-laion", "--images", f"t2i:{prompts}", "--out", str(out), "--teacher", "scene",
                       "--no-progress"]) == 0
    h.check_exactly_once(out, {"p/ok", "p/odd", "p/none"})
    [rec] = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assert rec["id"] == "p/ok" and (out / "images" / "p_ok.png").exists()
    assert rec["input"]["prompt"].startswith("a large red circle")
    assert "red circle" in rec["output"]["description"]
    reasons = {r["id"]: r["reason"] for r in map(json.loads, (out / "rejects.jsonl").read_text().splitlines())}
    assert reasons["p/odd"].startswith("procedural renderer could not parse prompt")
    assert reasons["p/none"] == "record has no prompt"
    capsys.readouterr()
    assert synth_main(["allava-laion", "--images", f"t2i:{tmp_path / 'missing.txt'}", "--out", str(out)]) == 2
    assert "prompt file" in capsys.readouterr().err
