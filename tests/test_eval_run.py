"""`allava eval run` against a tiny real checkpoint: batching does not change answers, answers are
cached and a rerun resumes, and the judge goes through the synthesis teacher client."""
from __future__ import annotations

import argparse
import json

import pytest
from PIL import Image

from allava.evaluate.cli import add_eval_parser, cmd_run
from allava.evaluate.generate import Answerer, Question


@pytest.fixture(scope="module")
def tiny_ckpt(backbones, tmp_path_factory):
    from allava.model.build import ModelSpec, Recipe, build_model, save_checkpoint

    spec = ModelSpec(vision_tower=backbones["clip"], language_model=backbones["lm"])
    model, processor = build_model(spec)
    out = tmp_path_factory.mktemp("eval_ckpt") / "ckpt"
    save_checkpoint(model, processor, Recipe(spec=spec), out)
    return out


def gqa_fixture(root, n=5):
    (root / "images").mkdir(parents=True)
    qs = {}
    for i in range(n):
        Image.new("RGB", (20 + 4 * i, 24), (40 * i, 200 - 30 * i, 90)).save(root / "images" / f"im{i}.jpg")
        qs[f"q{i}"] = {"imageId": f"im{i}", "question": "what colour is the shape " + "at the top left " * i,
                       "answer": "red"}
    (root / "testdev_balanced_questions.json").write_text(json.dumps(qs))
    return root


def test_batched_generation_matches_batch_size_one(tiny_ckpt, tmp_path):
    answerer = Answerer(tiny_ckpt)
    gqa_fixture(tmp_path)
    questions = [Question([{"from": "human", "value": "<image>\nwhat colour is it" + " and the shape" * i}],
                         tmp_path / "images" / f"im{i}.jpg") for i in range(5)]
    questions.append(Question([{"from": "human", "value": "describe the image"}]))  # text-only, in the same batch
    one = [answerer.answer([q], max_new_tokens=6)[0] for q in questions]
    batched = answerer.answer(questions, max_new_tokens=6)
    assert batched == one
    assert any(one)  # the tiny random model still produces text


def args_for(*argv):
    p = argparse.ArgumentParser()
    add_eval_parser(p)
    return p.parse_args(list(argv))


def test_run_writes_llava_predictions_and_resumes_from_the_cache(tiny_ckpt, tmp_path):
    data = gqa_fixture(tmp_path / "gqa")
    out = tmp_path / "run"
    base = ["run", "--model", str(tiny_ckpt), "--benchmark", "gqa", "--data", str(data), "--out", str(out),
            "--max-new-tokens", "4", "--no-progress"]
    first = cmd_run(args_for(*base, "--limit", "2", "--batch-size", "2"))   # an "interrupted" run: 2 of 5
    assert first["generation"]["generated"] == 2

    second = cmd_run(args_for(*base, "--batch-size", "3"))
    assert (second["generation"]["generated"], second["generation"]["cached"]) == (3, 2)
    preds = [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["question_id"] for p in preds] == [f"q{i}" for i in range(5)]
    assert set(preds[0]) == {"question_id", "prompt", "text", "model_id"}
    assert preds[0]["prompt"].endswith("\nAnswer the question using a single word or phrase.")
    metrics = json.loads((out / "metrics.json").read_text())
    assert "exact match" in metrics["convention"] and metrics["n"] == 5 and "GQA" in metrics["headline"]

    def no_model():
        raise AssertionError("everything is cached: the model must not be loaded")
    third = cmd_run(args_for(*base), answer_fn=no_model)
    assert third["generation"]["cached"] == 5 and third["accuracy"] == second["accuracy"]

    changed = cmd_run(args_for(*base[:-3], "--max-new-tokens", "5", "--limit", "1"),
                      answer_fn=lambda: lambda qs, n: ["red"] * len(qs))   # new settings: not a cache hit
    assert changed["generation"]["generated"] == 1 and changed["accuracy"] == 100.0


def test_missing_images_fail_before_loading_the_model(tiny_ckpt, tmp_path):
    from allava.evaluate.benchmarks import BenchmarkError

    data = gqa_fixture(tmp_path / "gqa", n=2)
    (data / "images" / "im1.jpg").unlink()
    with pytest.raises(BenchmarkError, match="1 image\\(s\\) not found"):
        cmd_run(args_for("run", "--model", str(tiny_ckpt), "--benchmark", "gqa", "--data", str(data), "--out",
                         str(tmp_path / "run"), "--no-progress"), answer_fn=lambda: pytest.fail("model loaded"))


def test_openai_judge_through_the_teacher_client_is_cached(tmp_path):
    from allava.evaluate.judge import OpenAIJudge
    from allava.synth.fake_server import serve

    def responder(body):
        text = body["messages"][-1]["content"]
        return "Answer1" if "good" in text else "unsure"

    with serve(responder=responder) as srv:
        judge = OpenAIJudge(srv.url, "judge-model", tmp_path)
        prompts = [[{"role": "user", "content": "good"}], [{"role": "user", "content": "bad"}]]
        assert judge.ask(prompts, max_tokens=8) == ["Answer1", "unsure"]
        assert srv.server.requests == 2
        assert judge.ask(prompts, max_tokens=8) == ["Answer1", "unsure"]
        assert srv.server.requests == 2  # the second time comes from the judge cache


def test_mmbench_base64_images_reach_the_model(tiny_ckpt, tmp_path):
    from test_eval_benchmarks import mmbench_tsv

    tsv = mmbench_tsv(tmp_path / "mmb.tsv")
    m = cmd_run(args_for("run", "--model", str(tiny_ckpt), "--benchmark", "mmbench", "--data", str(tsv), "--out",
                         str(tmp_path / "run"), "--limit", "1", "--max-new-tokens", "3", "--no-progress"))
    assert m["generation"]["generated"] == 4 and m["n_questions"] == 1 and "CircularEval" in m["convention"]


def test_score_verb_with_a_judge_endpoint(tmp_path, capsys):
    from allava.evaluate.cli import main
    from allava.synth.fake_server import serve

    (tmp_path / "question.jsonl").write_text(json.dumps({"question_id": 1, "text": "q"}) + "\n")
    (tmp_path / "anchor.jsonl").write_text(json.dumps({"question_id": 1, "text": "anchor"}) + "\n")
    (tmp_path / "p.jsonl").write_text(json.dumps({"question_id": 1, "text": "mine"}) + "\n")
    with serve(responder=lambda body: "Answer1") as srv:   # a judge with full position bias
        rc = main(["score", "--benchmark", "vicuna-80", "--data", str(tmp_path), "--predictions",
                   str(tmp_path / "p.jsonl"), "--judge-base-url", srv.url, "--judge-model", "fake"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["wins"], out["losses"], out["win_rate"], out["consistent_win_rate"]) == (1, 1, 50.0, 0.0)
    assert (tmp_path / "judge_cache.sqlite").exists()


def test_synthetic_benchmark_agrees_with_the_quickstart_evaluate_bench(tiny_ckpt, tmp_path):
    from allava.evaluate.synthetic import evaluate_bench

    world = tmp_path / "world"
    (world / "images").mkdir(parents=True)
    items = []
    for i, (colour, ability) in enumerate([((200, 0, 0), "colour"), ((0, 0, 200), "colour"), ((0, 200, 0), "count")]):
        Image.new("RGB", (32, 32), colour).save(world / "images" / f"{i}.png")
        items.append({"id": f"b{i}", "image": f"{i}.png", "question": "what colour is the shape", "answer": "red",
                      "ability": ability})
    (world / "bench.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))
    (world / "bench_meta.json").write_text(json.dumps({"abilities": {"colour": {"chance": 0.25},
                                                                     "count": {"chance": 0.2}}}))
    old = evaluate_bench(tiny_ckpt, world, batch_size=2, predictions_path=tmp_path / "old.jsonl", progress=False)
    new = cmd_run(args_for("run", "--model", str(tiny_ckpt), "--benchmark", "synthetic", "--data", str(world),
                           "--out", str(tmp_path / "run"), "--no-progress"))
    old_text = [json.loads(l)["text"] for l in (tmp_path / "old.jsonl").read_text().splitlines()]
    new_text = [json.loads(l)["text"] for l in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert new_text == old_text
    assert new["overall"] == old["overall"] and new["abilities"] == old["abilities"]


def test_answer_store_skips_a_torn_last_line(tmp_path):
    from allava.evaluate.runner import AnswerStore

    store = AnswerStore(tmp_path / "c.jsonl")
    store.put("k1", "q1", "yes")
    store.close()
    with open(tmp_path / "c.jsonl", "a") as fh:
        fh.write('{"key": "k2", "question_id": "q2", "te')   # killed mid-write
    again = AnswerStore(tmp_path / "c.jsonl")
    assert "k1" in again and "k2" not in again
    again.put("k3", "q3", "no")
    again.close()
    assert "k3" in AnswerStore(tmp_path / "c.jsonl")
