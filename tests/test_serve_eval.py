"""`allava eval run --base-url URL --model NAME` against `allava serve` on loopback: the same
predictions, hence the same scores, as `allava eval run --model DIR` on the same checkpoint; the
endpoint's 429s are retried by the synthesis teacher client; a run resumes from its cache."""
from __future__ import annotations

import json

import pytest

from allava.config import ConfigError
from allava.evaluate.cli import cmd_run
from allava.evaluate.generate import Answerer, Question
from allava.evaluate.remote import to_messages
from allava.serve.batching import Engine

from serve_helpers import running, tiny_checkpoint
from tests.test_eval_run import args_for, gqa_fixture


@pytest.fixture(scope="module")
def ckpt(backbones, tmp_path_factory):
    return tiny_checkpoint(backbones, tmp_path_factory.mktemp("serve_eval") / "tiny-llava")


def test_messages_place_each_image_where_its_marker_is():
    q = Question([{"from": "human", "value": "<image>\nwhat is it"}, {"from": "gpt", "value": "red"},
                  {"from": "human", "value": "and <image>\nthis"}], "im.png")
    assert to_messages(q) == [
        {"role": "user", "content": [{"type": "image", "path": "im.png"}, {"type": "text", "text": "what is it"}]},
        {"role": "assistant", "content": "red"},
        {"role": "user", "content": [{"type": "text", "text": "and "}, {"type": "image", "path": "im.png"},
                                     {"type": "text", "text": "this"}]}]


def test_scores_through_the_api_equal_the_local_run(ckpt, tmp_path):
    data = gqa_fixture(tmp_path / "gqa", n=6)
    common = ["--benchmark", "gqa", "--data", str(data), "--max-new-tokens", "6", "--no-progress"]
    local = cmd_run(args_for("run", "--model", str(ckpt), "--out", str(tmp_path / "local"), *common))
    engine = Engine(Answerer(ckpt))
    with running(ckpt, engine, max_batch_size=4, max_queue=2) as url:  # a queue of 2 for 6 in flight: 429s
        args = args_for("run", "--base-url", url + "/v1", "--model", "tiny-llava", "--out", str(tmp_path / "api"),
                        "--concurrency", "6", "--batch-size", "6", *common)
        remote = cmd_run(args)
        import httpx

        assert httpx.get(url + "/health").json()["refused_queue_full"] > 0  # some were refused, then retried
    assert remote["generation"]["generated"] == 6 and remote["coverage"]["answered"] == 6
    assert remote["headline"] == local["headline"] and remote["accuracy"] == local["accuracy"]
    texts = lambda run: [json.loads(l)["text"] for l in (tmp_path / run / "predictions.jsonl").read_text().splitlines()]
    assert texts("api") == texts("local") and any(texts("local"))
    assert remote["base_url"] == url + "/v1" and remote["model"] == "tiny-llava"
    ledger = (tmp_path / "api" / "ledger.jsonl").read_text().splitlines()
    assert len(ledger) == 6  # one paid request per question, retries not double-counted

    again = cmd_run(args_for("run", "--base-url", url + "/v1", "--model", "tiny-llava", "--out",
                             str(tmp_path / "api"), *common))  # the server is gone: everything is cached
    assert again["generation"]["cached"] == 6 and again["accuracy"] == remote["accuracy"]


def test_unreachable_endpoint_and_local_flags_are_one_line_errors(tmp_path):
    data = gqa_fixture(tmp_path / "gqa", n=2)
    common = ["--benchmark", "gqa", "--data", str(data), "--max-new-tokens", "2", "--no-progress"]
    with pytest.raises(ConfigError, match="--device / --dtype"):
        cmd_run(args_for("run", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--dtype", "float16",
                         "--out", str(tmp_path / "a"), *common))
    with pytest.raises(ConfigError, match="cannot reach the endpoint http://127.0.0.1:9/v1"):
        cmd_run(args_for("run", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--out", str(tmp_path / "b"),
                         *common))
