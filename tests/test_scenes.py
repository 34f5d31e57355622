"""Scene world: determinism, ability answer spaces, teacher format, LLaVA records, world builder."""
from __future__ import annotations

from collections import Counter
import json
import random

import numpy as np
import pytest

from allava.scenes.abilities import ABILITIES, QA, SHORT_ANSWER_PROMPT, ask, register
from allava.scenes.graph import COLORS, SceneConfig, sample_scene
from allava.scenes.render import object_center, render
from allava.scenes.teacher import (
    ALLAVA_LAION_PROMPT,
    BRIEF_DESCRIPTION_INSTRUCTIONS,
    DETAILED_DESCRIPTION_INSTRUCTIONS,
    PROMPT_VERSION,
    allava_laion,
    allava_record,
    caption,
    caption_record,
    clip_caption,
    one_per_ability,
    scene_from_caption,
    text_record,
    vqa_record,
)
from allava.scenes.world import WorldConfig, all_qas, bench_seed, build_world, read_jsonl, text_seed, train_seed
from allava.synth.tasks.allava_laion import parse as parse_allava_laion

SCENES = [sample_scene(s) for s in range(300)]


def _records(scene, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = allava_laion(scene, rng)
    return [caption_record("c", "train/x.png", scene, out, rng), allava_record("a", "train/x.png", scene, out),
            vqa_record("v", "train/x.png", scene, one_per_ability(scene, rng))]


def test_same_seed_same_pixels_and_records():
    for seed in (0, 7, 123):
        a, b = sample_scene(seed), sample_scene(seed)
        assert a == b
        assert np.array_equal(np.asarray(render(a)), np.asarray(render(b)))
        assert _records(a, seed) == _records(b, seed)
    assert not np.array_equal(np.asarray(render(SCENES[1])), np.asarray(render(SCENES[2])))


def test_image_size_is_configurable():
    img = render(sample_scene(5, SceneConfig(image_size=64)))
    assert img.size == (64, 64) and img.mode == "RGB"


def test_answer_spaces_and_answers():
    assert len(ABILITIES) >= 9
    for ab in ABILITIES.values():
        assert len(ab.answer_space) >= 4 and ab.chance == 1 / len(ab.answer_space)
    for scene in SCENES:
        for name, qas in ask(scene, random.Random(scene.seed)).items():
            for qa in qas:
                assert qa.ability == name and qa.question.strip()
                assert qa.answer in ABILITIES[name].answer_space and qa.answer == qa.answer.lower()


def test_every_ability_occurs_in_200_scenes():
    seen = set()
    for scene in SCENES[:200]:
        seen |= set(ask(scene, random.Random(scene.seed)))
    assert seen == set(ABILITIES)


def test_each_ability_has_three_phrasings():
    questions: dict[str, set[str]] = {}
    for scene in SCENES:
        for name, qas in ask(scene, random.Random(scene.seed)).items():
            questions.setdefault(name, set()).update(qa.question.split(" the ")[0] for qa in qas)
    assert all(len(q) >= 3 for q in questions.values()), {k: len(v) for k, v in questions.items()}


def test_rendered_colour_matches_declared_colour():
    palette = {name: np.array(rgb) for name, rgb in COLORS.items()}
    checked = 0
    for scene in SCENES[:120]:
        img = np.asarray(render(scene)).astype(int)
        for obj in scene.shapes:
            x, y = object_center(scene, obj)
            nearest = min(palette, key=lambda n: np.abs(palette[n] - img[y, x]).sum())
            assert nearest == obj.color, (scene.seed, obj)
            checked += 1
    assert checked > 100


def test_custom_ability_registration():
    with pytest.raises(ValueError):
        register("tiny", ["yes", "no"])

    @register("n_things", [str(i) for i in range(10)])
    def n_things(scene, rng):
        return [QA("n_things", "How many things?", str(len(scene.objects)))]

    try:
        assert ask(SCENES[0], random.Random(0), ["n_things"])["n_things"][0].answer == str(len(SCENES[0].objects))
    finally:
        del ABILITIES["n_things"]


def test_raw_parses_back_into_four_sections():
    assert "guestions" not in ALLAVA_LAION_PROMPT and "{candidate questions}" in ALLAVA_LAION_PROMPT
    assert PROMPT_VERSION == "allava-laion/1"
    assert len(BRIEF_DESCRIPTION_INSTRUCTIONS) == 11 and len(DETAILED_DESCRIPTION_INSTRUCTIONS) == 16
    for scene in SCENES[:60]:
        out = allava_laion(scene, random.Random(scene.seed))
        parsed = parse_allava_laion(out["raw"])
        assert parsed["description"] == out["description"] and parsed["answer"] == out["answer"]
        assert parsed["candidate_questions"] == out["candidate_questions"]
        assert len(set(parsed["candidate_questions"])) == 5
        assert parsed["question"] in parsed["candidate_questions"]
        assert out["raw"].startswith("<start of description>\n") and out["raw"].endswith("\n<end of answer>")


def test_caption_is_fine_grained():
    for scene in SCENES[:60]:
        text = caption(scene, random.Random(scene.seed))
        for obj in scene.items:
            assert obj.name in text and (obj.color is None or obj.color in text)
        if scene.word:
            assert scene.word.text in text
        if scene.abnormal:
            assert "unusual" in text or "Strangely" in text or "oddity" in text
        assert len(clip_caption(scene).split()) < 60


def _graph(scene) -> tuple:
    """What a caption can state: background, and each object but its pixel offset (order aside)."""
    return scene.background, sorted((o.category, o.name, o.cell, o.color, o.size, o.text, o.abnormal)
                                    for o in scene.objects)


def test_caption_reads_back_into_its_scene_graph():
    from allava.scenes.teacher import background_phrase

    for scene in SCENES:
        text = caption(scene, random.Random(scene.seed))
        back = scene_from_caption(text)
        assert back is not None and _graph(back) == _graph(scene), text
        assert background_phrase(back) == background_phrase(scene)
    text = caption(SCENES[0], random.Random(0))
    first_object = text.split(". ")[1]
    assert scene_from_caption(text.replace(first_object, "Something else is there")) is None  # a sentence unread
    assert scene_from_caption(text.replace("In total", "Overall")) is None
    assert scene_from_caption("A red circle in the center.") is None  # free-form text: no scene
    # a count the listing does not give is no caption of a scene
    assert scene_from_caption(text.replace(text.split(" ")[3], "nine", 1)) is None


def _check_conversation(conv: list[dict], image: bool) -> None:
    assert conv and len(conv) % 2 == 0
    for i, turn in enumerate(conv):
        assert turn["from"] == ("human" if i % 2 == 0 else "gpt") and turn["value"].strip()
    joined = "".join(t["value"] for t in conv)
    assert joined.count("<image>") == (1 if image else 0)
    if image:
        assert conv[0]["value"].startswith("<image>\n")


def test_llava_records_are_valid():
    for scene in SCENES[:80]:
        for rec in _records(scene, scene.seed):
            assert rec["id"] and rec["image"].endswith(".png") and rec["meta"]["teacher"] == "scene"
            _check_conversation(rec["conversations"], image=True)
        vqa = _records(scene, scene.seed)[2]["conversations"]
        assert len(vqa) <= 16 and all(t["value"].endswith(SHORT_ANSWER_PROMPT) for t in vqa[::2])
        text = text_record("t", scene, random.Random(scene.seed))
        assert "image" not in text
        _check_conversation(text["conversations"], image=False)


def test_seed_ranges_are_disjoint():
    for s in (0, 1, 2):
        cfg = WorldConfig(seed=s)
        train = {train_seed(cfg, i) for i in range(cfg.n_train_images)}
        others = {text_seed(cfg, i) for i in range(cfg.n_text)} | {bench_seed(cfg, j) for j in range(50_000)}
        assert not train & others
        assert not train & {bench_seed(WorldConfig(seed=t), j) for t in (0, 1, 2) for j in range(50_000)}


def test_clip_hard_negatives_change_exactly_one_detail():
    from allava.scenes.teacher import clip_hard_negatives

    for scene in SCENES[:60]:
        true = clip_caption(scene)
        negs = clip_hard_negatives(scene, random.Random(scene.seed))
        assert negs and true not in negs and len(set(negs)) == len(negs)
        for neg in negs:  # same length in words up to a position phrase: one object's detail changed
            changed = [w for w, v in zip(true.split(), neg.split()) if w != v]
            assert 1 <= len(changed) <= 3 or len(true.split()) != len(neg.split())


def test_clip_patch_labels_follow_the_scene_graph_cell_by_cell():
    """Row-major, one class per 3x3 cell (= one ViT patch of the quickstart's tower): the object's
    name (or empty), its colour and a shape's size; -100 where a label does not apply."""
    from allava.scenes.graph import GRID, SIZES
    from allava.scenes.teacher import PATCH_OBJECTS, clip_patch_labels

    for scene in SCENES[:60]:
        labels = clip_patch_labels(scene)
        assert all(len(v) == GRID * GRID for v in labels.values())
        placed = {o.cell[0] * GRID + o.cell[1]: o for o in scene.objects}
        for k in range(GRID * GRID):
            o = placed.get(k)
            assert PATCH_OBJECTS[labels["object"][k]] == (o.name if o else "empty")
            assert labels["color"][k] == (list(COLORS).index(o.color) if o and o.color else -100)
            assert labels["size"][k] == (list(SIZES).index(o.size) if o and o.category == "shape" else -100)


def test_lm_docs_ask_every_ability_about_a_scene_in_words(tmp_path):
    from allava.train.pretrain_lm import conversation_texts

    cfg = WorldConfig(n_train_images=4, n_bench_per_ability=1, n_text=3, n_lm_scenes=5)
    build_world(tmp_path, cfg, progress=False)
    docs = read_jsonl(tmp_path / "lm_docs.jsonl")
    assert len(docs) == 5 and all("<image>" not in t["value"] for d in docs for t in d["conversations"])
    texts = conversation_texts(docs[:1], "human_assistant")
    turns = len(docs[0]["conversations"]) // 2
    assert len(texts) == turns and texts[0].startswith("Human: ") and texts[1].startswith("\nHuman: ")
    assert texts[0].endswith("Assistant: " + docs[0]["conversations"][1]["value"])


def test_build_world_tiny(tmp_path):
    cfg = WorldConfig(seed=3, n_train_images=12, n_bench_per_ability=3, n_text=6)
    files = build_world(tmp_path, cfg, progress=False)
    for p in (files.captions, files.instruct, files.text, files.clip_pairs, files.corpus, files.bench, files.bench_meta):
        assert p.exists() and p.stat().st_size > 0
    captions, instruct = read_jsonl(files.captions), read_jsonl(files.instruct)
    assert len(captions) == 12 and len(instruct) == 12 + 10 * 12 and len(read_jsonl(files.text)) == 6
    for rec in captions + instruct + read_jsonl(files.clip_pairs):
        assert (files.images / rec["image"]).exists()
    bench = read_jsonl(files.bench)
    meta = json.loads(files.bench_meta.read_text())
    assert set(meta["abilities"]) == set(ABILITIES) and len(bench) == 3 * len(ABILITIES)
    train_seeds = {train_seed(cfg, i) for i in range(cfg.n_train_images)}
    for row in bench:
        assert (files.images / row["image"]).exists() and row["seed"] not in train_seeds
        assert row["answer"] in meta["abilities"][row["ability"]]["answer_space"]
    vqa = Counter(r["meta"]["ability"] for r in instruct if r["meta"]["task"] == "short_vqa")
    assert vqa == {a: 12 for a in ABILITIES}  # balanced: rare abilities repeat, common ones are cut
    assert all(len(r["conversations"]) == 2 for r in instruct if r["meta"]["task"] == "short_vqa")
    lines = files.corpus.read_text().splitlines()
    assert len(lines) == files.counts["corpus_lines"] and all(ln.strip() and "<image>" not in ln for ln in lines)
    again = build_world(tmp_path / "again", cfg, progress=False)
    for name in ("captions.jsonl", "instruct.jsonl", "text.jsonl", "bench.jsonl", "corpus.txt"):
        assert (tmp_path / name).read_bytes() == (again.root / name).read_bytes()


def test_ability_weights_and_images_target_the_slow_abilities(tmp_path):
    """`vqa_ability_weights` scales an ability's record count; `ability_images` adds train scenes on
    which the ability applies (short VQA only), whose seeds still give their scenes back."""
    base = dict(seed=1, n_train_images=20, n_bench_per_ability=1, n_text=2, vqa_per_ability=10)
    plain = read_jsonl(build_world(tmp_path / "plain", WorldConfig(**base), progress=False).instruct)
    cfg = WorldConfig(**base, vqa_ability_weights={"odd_one_out": 3.0, "ocr": 0.5},
                      ability_images={"odd_one_out": 15})
    files = build_world(tmp_path / "rich", cfg, progress=False)
    vqa = [r for r in read_jsonl(files.instruct) if r["meta"]["task"] == "short_vqa"]
    counts = Counter(r["meta"]["ability"] for r in vqa)
    assert counts["odd_one_out"] == 30 and counts["ocr"] == 5 and counts["count"] == 10
    odd_images = {r["image"] for r in vqa if r["meta"]["ability"] == "odd_one_out"}
    plain_odd = {r["image"] for r in plain if r["meta"].get("ability") == "odd_one_out"}
    assert len(odd_images) > len(plain_odd) and len(odd_images) >= 15
    extra = [r for r in vqa if int(r["image"].split("-")[1][:6]) >= cfg.n_train_images]
    assert extra and all((files.images / r["image"]).exists() for r in extra)
    for r in extra[:10]:  # seed -> the same scene with the default sampler, the answer holds
        scene = sample_scene(r["meta"]["seed"], SceneConfig(image_size=cfg.image_size))
        asked = all_qas(scene, r["meta"]["seed"], cfg.vqa_phrasings)[r["meta"]["ability"]]
        assert r["conversations"][1]["value"] in {qa.answer for qa in asked}
    assert len(read_jsonl(files.captions)) == 20 and files.counts["ability_images"] == 15
    with pytest.raises(ValueError, match="unknown keys \\['oddity'\\]"):
        WorldConfig(vqa_ability_weights={"oddity": 2.0})
    with pytest.raises(ValueError, match="must be >= 0"):
        WorldConfig(ability_images={"shape": -1})


def test_quickstart_breakdown_splits_attribute_questions_by_whether_a_look_up_is_needed(tmp_path):
    """benchmarks/quickstart_breakdown.py: a colour / shape question whose scene has one value of
    that attribute needs no look-up; every other one does; each question counted once, right as predicted."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "quickstart_breakdown.py"
    spec = importlib.util.spec_from_file_location("quickstart_breakdown", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    build_world(tmp_path, WorldConfig(n_train_images=2, n_bench_per_ability=12, n_text=1), progress=False)
    bench = read_jsonl(tmp_path / "bench.jsonl")
    preds = {r["id"]: k % 3 == 0 for k, r in enumerate(bench)}
    out = mod.breakdown(bench, preds, 96)
    for ability, field in mod.ATTRIBUTES.items():
        rows = [r for r in bench if r["ability"] == ability]
        one = [r for r in rows if len({getattr(o, field) for o in sample_scene(r["seed"], SceneConfig(image_size=96)).objects
                                       if o.category == "shape"}) == 1]
        assert sum(n for _, n in out[ability].values()) == len(rows) == 12
        assert out[ability].get("one value in the scene", [0, 0]) == [sum(preds[r["id"]] for r in one), len(one)]
        assert sum(r for r, _ in out[ability].values()) == sum(preds[r["id"]] for r in rows)
