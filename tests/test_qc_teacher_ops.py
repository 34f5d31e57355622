"""Teacher-backed QC: the offline scene judge, the task tagger and difficulty score through the
real OpenAI client (loopback fake server), and the optional IQA model in image_readability."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from allava.config import ConfigError
from allava.quality.base import QCRecord
from allava.quality.config import load_config, parse_config
from allava.quality.noise import inject_noise, score_injection
from allava.quality.ops.instruction_complexity import InstructionComplexity, parse_difficulty
from allava.quality.ops.llm_judge import LLMJudge
from allava.quality.ops.task_diversity import TaskDiversity, parse_tag
from allava.quality.pipeline import run_qc_pipeline
from allava.scenes.abilities import ABILITIES
from allava.synth.fake_server import qc_answer, serve

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "qc"
FAST = {"timeout": 10, "max_retries": 1}  # every request bounded: a broken server fails the test, not hangs it
SCENE_TASKS = ["description", *ABILITIES]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A small quickstart world: ALLaVA + short-VQA records, captions and text-only, all with meta.seed."""
    from allava.scenes.world import WorldConfig, build_world

    root = tmp_path_factory.mktemp("world")
    files = build_world(root, WorldConfig(n_train_images=120, n_bench_per_ability=1, n_text=40, vqa_per_ability=12), progress=False)
    lines = [line for f in (files.instruct, files.captions, files.text) for line in f.read_text().splitlines()]
    (root / "all.jsonl").write_text("\n".join(lines) + "\n")
    return root


def removed_ids(out: Path) -> set[str]:
    return {json.loads(x)["id"] for x in (out / "removed.jsonl").read_text().splitlines()}


def judge_config() -> object:
    return parse_config({"ops": [{"name": "llm_judge", "teacher": "scene", "k": 1, "min": 1}]})


# ---------------------------------------------------------------- the offline scene judge


def test_scene_judge_keeps_every_clean_quickstart_record(world, tmp_path):
    run = run_qc_pipeline(world / "all.jsonl", judge_config(), tmp_path / "qc", progress=False, plots=False)
    kinds = {json.loads(x)["meta"]["task"] for x in (world / "all.jsonl").read_text().splitlines()}
    assert kinds == {"allava_instruct", "short_vqa", "caption", "text_only"} and len(run.ids) == 400
    assert removed_ids(tmp_path / "qc") == set()
    assert all(st["llm_judge"].get("correct") == 1 for st in run.stats)  # every record judged, none wrong


def test_scene_judge_flags_answers_swapped_between_images(world, tmp_path):
    clean = [json.loads(x) for x in (world / "instruct.jsonl").read_text().splitlines()]
    clean += [json.loads(x) for x in (world / "captions.jsonl").read_text().splitlines()]
    noisy, injected = inject_noise(clean, world / "images", rate=0.3, seed=5, kinds=("swap",))
    before = {r["id"]: r["conversations"] for r in clean}
    # a donor may itself have been swapped earlier and hand a record its own answer back: not noise
    injected = {rid: k for rid, k in injected.items()
                if next(r for r in noisy if r["id"] == rid)["conversations"] != before[rid]}
    assert len(injected) >= 50
    path = tmp_path / "noisy.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in noisy))
    run = run_qc_pipeline(path, judge_config(), tmp_path / "qc", image_folder=world / "images",
                          progress=False, plots=False)
    score = score_injection(removed_ids(tmp_path / "qc"), run.ids, injected)
    assert score["injected_removed"] >= 0.9, score
    assert score["clean_removed"] == 0, score


def vqa(turns: list[tuple[str, str]], seed: int, rid: str = "v") -> QCRecord:
    conv = [{"from": f, "value": v} for q, a in turns for f, v in (("human", q), ("gpt", a))]
    return QCRecord(rid, conv, meta={"seed": seed})


def test_scene_judge_reads_every_turn_and_skips_records_without_a_scene():
    from allava.scenes.abilities import SHORT_ANSWER_PROMPT, ask
    from allava.scenes.graph import sample_scene

    seed = next(s for s in range(100) if {"count", "color"} <= set(ask(sample_scene(s), random.Random(0))))
    qas = ask(sample_scene(seed), random.Random(0))
    count, color = qas["count"][0], qas["color"][0]
    turns = [(f"{count.question}\n{SHORT_ANSWER_PROMPT}", count.answer), (f"{color.question}\n{SHORT_ANSWER_PROMPT}",
                                                                          color.answer)]
    wrong = "green" if color.answer != "green" else "red"
    op = LLMJudge(LLMJudge.Settings(teacher="scene", k=3))
    good, bad, unknown = op.compute([vqa(turns, seed), vqa([turns[0], (turns[1][0], wrong)], seed),
                                     QCRecord("x", vqa(turns, seed).conversations)])
    assert good == {"correct": 1, "agreement": 1.0, "votes": 3, "valid": 3}
    assert bad["correct"] == 0  # the first turn is right, the second is not: the record is wrong
    assert unknown == {"votes": 3, "valid": 0}  # no scene graph: no verdict, not a removal
    assert op.indicators([good, bad, unknown]) == {"correctness": 0.5, "judge_unjudged": 1}


def test_judge_pairs_survive_multiline_turns():
    from allava.synth.teachers.scene import judge_pairs

    op = LLMJudge()
    rec = QCRecord("r", [{"from": "human", "value": "<image>\nIntro.\n\nQuestion: quoted?\nWhat colour?"},
                         {"from": "gpt", "value": "Red.\nReally red."},
                         {"from": "human", "value": "Count them."}, {"from": "gpt", "value": "2"}])
    text = op.messages(rec, image=False)[1]["content"][0]["text"]
    assert judge_pairs(text) == [("Intro.\n\nQuestion: quoted?\nWhat colour?", "Red.\nReally red."),
                                 ("Count them.", "2")]


# ---------------------------------------------------------------- tagger and difficulty


def test_parse_tag_and_difficulty():
    tasks = ["counting", "color", "spatial", "reasoning", "odd_one_out"]
    assert parse_tag("Counting", tasks) == "counting" and parse_tag("**Task:** color.", tasks) == "color"
    assert parse_tag("odd one out", tasks) == "odd_one_out" and parse_tag("`spatial`\n", tasks) == "spatial"
    assert parse_tag("This needs spatial reasoning", tasks) == "spatial"  # the first one named
    assert parse_tag("banana", tasks) is None and parse_tag("", tasks) is None and parse_tag(None, tasks) is None
    assert parse_difficulty("7") == 7 and parse_difficulty("Difficulty: 7/10") == 7
    assert parse_difficulty("On a scale of 1-10, I'd say 4.") == 4 and parse_difficulty("10") == 10
    assert parse_difficulty("12") is None and parse_difficulty("hard") is None and parse_difficulty(None) is None
    assert parse_difficulty("7.5") is None


def rec(rid: str, question: str, image: str | None = "a.png") -> QCRecord:
    return QCRecord(rid, [{"from": "human", "value": question}, {"from": "gpt", "value": "ok"}], image=image)


def test_tagger_and_difficulty_through_the_openai_teacher():
    replies = {"How many": ["Counting", "counting.", "colour"], "What colour": ["**Task:** color"] * 3,
               "Where": ["Spatial reasoning"] * 3, "Sing": ["banana"] * 3}
    seen: list[dict] = []

    def responder(req: dict) -> str:
        seen.append(req)
        text = req["messages"][-1]["content"]
        if "Tasks:" in text:
            key = next(k for k in replies if f"Instruction: {k}" in text)
            return replies[key][req.get("seed", 0)]
        return {"How many": "Difficulty: 3/10", "What colour": "2", "Where": "eleven", "Sing": "9"}[
            next(k for k in replies if f"Instruction: {k}" in text)]

    batch = [rec("a", "How many circles?"), rec("b", "What colour is it?"), rec("c", "Where is it?", image=None),
             rec("d", "Sing a song.")]
    with serve(responder=responder) as server:
        tagger = TaskDiversity(TaskDiversity.Settings(source="teacher", base_url=server.url, model="tagger", k=3,
                                                      **FAST))
        tags = tagger.compute(batch)
        rater = InstructionComplexity(InstructionComplexity.Settings(difficulty=True, base_url=server.url,
                                                                     model="rater", **FAST))
        rated = rater.compute(batch)
    assert [t["task"] for t in tags] == ["counting", "color", "text:spatial", "other"]
    assert [t["tag_unparsed"] for t in tags] == [0, 0, 0, 1]
    ind = tagger.indicators(tags)
    assert ind["tag_unparsed"] == 1 and ind["num_tasks"] == 4
    assert [r["difficulty"] for r in rated] == [3.0, 2.0, None, 9.0] and rated[0]["elements"] >= 1
    assert rater.indicators(rated)["difficulty_unparsed"] == 1
    assert len(seen) == 4 * 3 + 4  # k samples per record for the tagger, one for the rater
    tagger.close()
    rater.close()


def test_answer_cache_spares_repeated_requests(tmp_path):
    batch = [rec("a", "How many circles?"), rec("b", "What colour is it?")]
    settings = {"difficulty": True, "model": "rater", "answer_cache": str(tmp_path / "answers.sqlite"), **FAST}
    with serve(responder=qc_answer) as server:
        first = InstructionComplexity(InstructionComplexity.Settings(base_url=server.url, **settings)).compute(batch)
        again = InstructionComplexity(InstructionComplexity.Settings(base_url=server.url, **settings)).compute(batch)
        assert server.server.requests == 2
    assert first == again and all(s["difficulty"] == 1 for s in first)


def test_teacher_ops_dry_run_with_canned_replies(world, tmp_path):
    """The whole pipeline against the fake server's `qc` responder: every teacher op gives numbers."""
    path = tmp_path / "few.jsonl"
    path.write_text("".join((world / "instruct.jsonl").read_text().splitlines(keepends=True)[:12]))
    with serve(responder=qc_answer) as server:
        common = {"base_url": server.url, "model": "fake", **FAST}
        cfg = parse_config({"ops": [{"name": "llm_judge", "with_image": True, "min": 1, **common},
                                    {"name": "task_diversity", "source": "teacher", **common},
                                    {"name": "instruction_complexity", "difficulty": True, **common}]})
        run = run_qc_pipeline(path, cfg, tmp_path / "qc", image_folder=world / "images", progress=False, plots=False)
        requests = server.server.requests
    assert run.kept == 12 and requests == 12 * 3 + 12 + 12
    for st in run.stats:
        assert st["llm_judge"]["correct"] == 1 and st["task_diversity"]["tag_unparsed"] == 0
        assert 1 <= st["instruction_complexity"]["difficulty"] <= 10


def test_scene_teacher_tags_and_rates_quickstart_instructions(world):
    from allava.quality.reader import iter_qc_records

    recs = [r for r, _ in iter_qc_records(world / "instruct.jsonl", world / "images") if r is not None]
    allava = [r for r in recs if r.meta["task"] == "allava_instruct" and r.meta["ability"] in ABILITIES][:40]
    tagger = TaskDiversity(TaskDiversity.Settings(source="teacher", teacher="scene", tasks=SCENE_TASKS))
    tags = tagger.compute(allava)
    assert [t["task"] for t in tags] == [r.meta["ability"] for r in allava]  # the writer's own label
    rater = InstructionComplexity(InstructionComplexity.Settings(difficulty=True, teacher="scene"))
    assert all(1 <= s["difficulty"] <= 10 for s in rater.compute(allava))


def test_unknown_teacher_is_a_config_error():
    op = LLMJudge(LLMJudge.Settings(teacher="nope"))
    with pytest.raises(ConfigError, match="unknown teacher"):
        op.compute([rec("a", "q")])


# ---------------------------------------------------------------- IQA model in image_readability


def tiny_iqa(root: Path, labels: list[str] | None) -> str:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    n = len(labels) if labels else 1
    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=64, num_labels=n, **({"id2label": dict(enumerate(labels))} if labels else {}))
    ViTForImageClassification(cfg).save_pretrained(root)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root)
    return str(root)


def image_records(tmp_path: Path) -> list[QCRecord]:
    from PIL import Image

    out = []
    for i, size in enumerate((40, 64, 50)):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (size, size), (40 * i, 100, 200)).save(path)
        out.append(QCRecord(f"r{i}", [], image=path.name, image_file=path))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    out.append(QCRecord("bad", [], image="bad.png", image_file=tmp_path / "bad.png"))
    return out


def test_iqa_regression_head_scores_every_readable_image(tmp_path):
    import math

    from allava.quality.ops.image_readability import ImageReadability

    model = tiny_iqa(tmp_path / "iqa", None)
    recs = image_records(tmp_path)
    cfg = parse_config({"ops": [{"name": "image_readability", "iqa_model": model, "batch_size": 2,
                                 "thresholds": {"decodable": {"min": 1}}}]})
    op = cfg.ops[0].op
    assert isinstance(op, ImageReadability)
    stats = op.compute(recs)
    assert all(math.isfinite(s["iqa"]) for s in stats[:3])
    assert stats[3]["decodable"] == 0 and "error" in stats[3] and "iqa" not in stats[3]
    assert op.indicators(stats)["mean_iqa"] == pytest.approx(sum(s["iqa"] for s in stats[:3]) / 3)
    assert op.key() != ImageReadability().key()  # the model is part of the cache key


def test_iqa_label_probability_and_expected_score(tmp_path):
    from allava.quality.ops.image_readability import ImageReadability

    recs = image_records(tmp_path)[:3]
    named = tiny_iqa(tmp_path / "named", ["bad", "fair", "good"])
    probs = ImageReadability(ImageReadability.Settings(iqa_model=named, iqa_label="Good")).compute(recs)
    assert all(0 < s["iqa"] < 1 for s in probs)
    mos = tiny_iqa(tmp_path / "mos", ["1", "2", "3", "4", "5"])
    scores = ImageReadability(ImageReadability.Settings(iqa_model=mos)).compute(recs)
    assert all(1 < s["iqa"] < 5 for s in scores)
    with pytest.raises(ConfigError, match="iqa_label"):
        ImageReadability(ImageReadability.Settings(iqa_model=named)).compute(recs)
    with pytest.raises(OSError, match="not found"):
        ImageReadability(ImageReadability.Settings(iqa_model=str(tmp_path / "missing"))).compute(recs)


# ---------------------------------------------------------------- shipped configs


def test_shipped_qc_configs_load_and_default_judges_offline():
    with pytest.raises(ConfigError, match=r"ops\[4\] \(text_readability\) needs `model:`.*--set ops\.4\.model=PATH"):
        load_config(CONFIGS / "default.yaml")  # it names no model: the quickstart's noise study fills them in
    default = load_config(CONFIGS / "default.yaml", ["ops.4.model=some/lm", "ops.5.model=some/clip"])
    judge = next(s.op for s in default.ops if s.op.name == "llm_judge")
    assert judge.settings.teacher == "scene" and judge.settings.base_url is None
    load_config(CONFIGS / "cheap.yaml")


def test_scene_judge_reads_the_teachers_own_description_when_a_record_has_no_seed():
    """`allava synth` exports carry the teacher's raw output, not the scene: the judge reads the
    scene back from the description the same teacher wrote (and judges nothing when it cannot)."""
    from allava.scenes.graph import sample_scene
    from allava.scenes.teacher import allava_laion

    def teacher_rec(rid: str, out: dict, answer: str) -> QCRecord:
        conv = [{"from": "human", "value": "<image>\n" + out["question"]}, {"from": "gpt", "value": answer}]
        return QCRecord(rid, conv, meta={"raw": out["raw"], "task": "allava-laion"})  # no seed, no scene

    outs = [allava_laion(sample_scene(s), random.Random(s)) for s in range(40)]
    clean = [teacher_rec(f"c{i}", o, o["answer"]) for i, o in enumerate(outs)]
    def recount(answer: str) -> str | None:  # "The image contains three shapes: ..." -> "... six shapes: ..."
        n = next((w for w in ("one", "two", "three", "four", "five") if f"contains {w} " in answer), None)
        return answer.replace(f"contains {n} ", "contains six ", 1) if n else None

    count = [teacher_rec(f"n{i}", o, recount(o["answer"])) for i, o in enumerate(outs) if recount(o["answer"])]
    swapped = [teacher_rec(f"s{i}", o, outs[(i + 1) % len(outs)]["answer"]) for i, o in enumerate(outs)
               if o["short_answer"] != outs[(i + 1) % len(outs)]["short_answer"]]
    edited = teacher_rec("e", {**outs[0], "raw": outs[0]["raw"].replace("This picture", "My photo")
                               .replace("The image shows", "My photo shows").replace("In this image,", "My photo:")},
                         outs[1]["answer"])
    op = LLMJudge(LLMJudge.Settings(teacher="scene", k=1))
    stats = op.compute(clean + count + swapped + [edited])
    verdicts = [st.get("correct") for st in stats]
    assert len(count) >= 20 and len(swapped) >= 20
    assert verdicts[:len(clean)] == [1] * len(clean)  # every clean teacher answer agrees with its description
    assert verdicts[len(clean):-1] == [0] * (len(count) + len(swapped))  # wrong header count, another image's answer
    assert verdicts[-1] is None  # a description it cannot read back: no verdict, kept
