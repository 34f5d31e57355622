"""The operators for teacher mistakes: refusal / language, QA adequacy, repetition, cross-image
near-duplicates, colour-aware image hashes, JPEG / upscale measures, false premises, report_only."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from allava.config import ConfigError
from allava.quality.base import QCRecord
from allava.quality.config import parse_config
from allava.quality.ops.cross_dedup import CrossImageDedup
from allava.quality.ops.image_dedup import ImageDedup
from allava.quality.ops.image_readability import ImageReadability
from allava.quality.ops.qa_adequacy import QAAdequacy
from allava.quality.ops.refusal import Refusal
from allava.quality.ops.text_repetition import TextRepetition, word_repetition


def qa(rid: str, question: str, answer: str, image: str | None = None) -> QCRecord:
    return QCRecord(rid, [{"from": "human", "value": question}, {"from": "gpt", "value": answer}], image=image)


LONG = ("The image contains three shapes: a small yellow circle at the top, a large green square in the top right "
        "and a large purple cross at the bottom. Therefore, the answer is yellow.")


def test_refusal_boilerplate_and_language():
    recs = [qa("ok", "What colour is the circle?", LONG), qa("short", "What colour?", "red"),
            qa("ref", "What colour?", "As an AI language model, I cannot see images."),
            qa("sorry", "Count them.", "I'm sorry, but I can't help with that."),
            qa("chat", "Describe it.", "Sure! " + LONG), qa("es", "Describe it.", "En la imagen se puede ver un círculo rojo."),
            qa("zh", "What colour?", "红色"), qa("de", "Describe.", "Auf dem Bild sieht man einen roten Kreis und ein Quadrat.")]
    st = {r.id: s for r, s in zip(recs, Refusal().compute(recs))}
    assert st["ok"] == {**st["ok"], "refusal": 0, "boilerplate": 0, "language_ok": 1} and st["ok"]["language"] == "en"
    assert st["short"]["language_ok"] == 1 and "language" not in st["short"]  # too short to identify
    assert st["ref"]["refusal"] == 1 and st["sorry"]["refusal"] == 1 and st["chat"]["boilerplate"] == 1
    assert st["es"]["language_ok"] == 0 and st["es"]["language"] == "es" and st["de"]["language"] == "de"
    assert st["zh"]["language_ok"] == 0 and st["zh"]["latin"] == 0.0  # one-word answer, wrong script
    assert Refusal(Refusal.Settings(languages=["en", "es"])).compute(recs[5:6])[0]["language_ok"] == 1


def test_qa_adequacy_flags_terse_and_echoed_answers():
    q = "Which colour does the circle have? Reason step by step before giving the final answer."
    recs = [qa("ok", q, LONG), qa("terse", q, "The answer is yellow."), qa("bare", q, "Yellow."),
            qa("short-ok", "What colour is the circle?\nAnswer the question using a single word or phrase.", "yellow"),
            qa("echo", q, "Which colour does the circle have? Reason step by step before giving the final answer.")]
    st = {r.id: s for r, s in zip(recs, QAAdequacy().compute(recs))}
    assert st["ok"]["adequate"] == 1 and st["ok"]["demand"] == 1 and st["ok"]["echo"] < 0.5
    assert st["terse"]["adequate"] == 0 and st["bare"]["adequate"] == 0
    assert st["short-ok"] == {**st["short-ok"], "adequate": 1, "demand": 0}
    assert st["echo"]["echo"] == 1.0


def test_text_repetition_matches_data_juicer_word_ratio():
    """data-juicer `word_repetition_filter`: sum of the counts of n-grams seen more than once over all n-grams."""
    assert word_repetition("a b a b", 2) == pytest.approx(2 / 3)  # ab, ba, ab: 'ab' twice of 3 n-grams
    assert word_repetition("one two three", 10) == 0.0
    loop = "There is a red circle. " + "I can see a red circle in the top left. " * 5
    a, b = TextRepetition().compute([qa("loop", "Describe.", loop), qa("ok", "Describe.", LONG)])
    assert a["sentence_rep"] >= 0.5 and a["word_rep"] > 0.5 and b == {"word_rep": 0.0, "sentence_rep": 0.0}


def test_cross_image_dedup_keeps_the_record_its_image_supports():
    other = LONG.replace("Therefore", "So")
    recs = [qa("copy", "Describe.", LONG, "b.png"),        # the copy, on the wrong picture, comes first
            qa("orig", "Describe.", other, "a.png"),
            qa("a-sib", "What colour?", "yellow", "a.png"), qa("a-sib2", "What shape?", "square purple cross", "a.png"),
            qa("b-sib", "What colour?", "blue", "b.png"),
            qa("same-img", "Describe again.", LONG, "a.png"),  # same image: text_dedup's business, not this op's
            qa("short", "What colour?", "yellow", "c.png")]
    op = CrossImageDedup()
    st = {r.id: s for r, s in zip(recs, op.finalize(op.features(recs)))}
    assert st["copy"]["duplicate"] == 1 and st["orig"]["duplicate"] == 0 and st["copy"]["similarity"] > 0.7
    assert st["orig"]["support"] > st["copy"]["support"]
    assert st["short"] == {} and st["a-sib"] == {}  # short answers are not compared
    assert st["same-img"]["duplicate"] == 0  # on the winning image: kept here, text_dedup compares it


def _cross(path: Path, colour: tuple[int, int, int], size: int = 96) -> None:
    im = Image.new("RGB", (size, size), (235, 235, 225))
    d = ImageDraw.Draw(im)
    d.rectangle([40, 15, 55, 80], fill=colour)
    d.rectangle([15, 40, 80, 55], fill=colour)
    im.save(path)


def test_colour_aware_image_dedup(tmp_path):
    """A red and a green cross at the same place hash alike in grey; per channel they differ."""
    _cross(tmp_path / "red.png", (200, 40, 40))
    _cross(tmp_path / "green.png", (40, 122, 40))  # the same luma as the red
    _cross(tmp_path / "red-again.png", (200, 40, 40))
    recs = [QCRecord(n, [], image=n, image_file=tmp_path / n) for n in ("red.png", "green.png", "red-again.png")]
    grey = ImageDedup(ImageDedup.Settings(colour=False))
    colour = ImageDedup()
    g = grey.finalize(grey.features(recs))
    c = colour.finalize(colour.features(recs))
    assert g[1]["distance"] <= 1  # grey pHash: the green cross is a "copy" of the red one
    assert c[1]["distance"] > 1 and c[2]["distance"] == 0 and c[2]["near"].endswith("red.png")


def test_image_dedup_keeps_the_original_when_its_damaged_copy_comes_first(tmp_path):
    from PIL import ImageEnhance, ImageFilter

    from allava.scenes.graph import sample_scene
    from allava.scenes.render import render

    render(sample_scene(0)).save(tmp_path / "orig.png")  # a quickstart picture
    with Image.open(tmp_path / "orig.png") as im:
        im.convert("RGB").filter(ImageFilter.GaussianBlur(2.5)).save(tmp_path / "blurred.png")
        ImageEnhance.Brightness(im.convert("RGB")).enhance(0.05).save(tmp_path / "dark.png")
        im.convert("RGB").save(tmp_path / "copy.png")
    names = ("blurred.png", "dark.png", "orig.png", "copy.png")  # the damaged copies first, an exact copy last
    recs = [QCRecord(n, [], image=n, image_file=tmp_path / n) for n in names]
    op = ImageDedup()
    out = dict(zip(names, op.finalize(op.features(recs))))
    assert out["orig.png"]["distance"] > 1 and "near" not in out["orig.png"]  # the sharpest: nothing ranks before it
    assert out["copy.png"]["distance"] == 0 and out["copy.png"]["near"].endswith("orig.png")  # a tie: the later goes
    assert out["blurred.png"]["distance"] == 0 and out["blurred.png"]["near"].endswith("orig.png")
    assert out["dark.png"]["near"].endswith("orig.png")  # ranked below the original too (image_readability's call)


def test_jpeg_ghost_and_detail_flag_damaged_images(tmp_path):
    from allava.scenes.graph import sample_scene
    from allava.scenes.render import render

    ok = []
    for seed in range(6):
        render(sample_scene(seed)).save(tmp_path / f"{seed}.png")
        ok.append(tmp_path / f"{seed}.png")
    src = Image.open(ok[0]).convert("RGB")
    buf = io.BytesIO()
    src.save(buf, "JPEG", quality=6)
    Image.open(io.BytesIO(buf.getvalue())).save(tmp_path / "jpeg.png")
    src.resize((12, 12), Image.Resampling.BILINEAR).resize((96, 96), Image.Resampling.NEAREST).save(tmp_path / "up.png")
    Image.new("RGB", (96, 96), (90, 90, 90)).save(tmp_path / "flat.png")
    files = ok + [tmp_path / "jpeg.png", tmp_path / "up.png", tmp_path / "flat.png"]
    st = ImageReadability().compute([QCRecord(f.name, [], image=f.name, image_file=f) for f in files])
    assert all(s["jpeg_ghost"] >= 0.3 and s["detail"] >= 0.35 for s in st[:6]), st[:6]
    assert st[6]["jpeg_ghost"] < 0.1 and st[7]["detail"] < 0.2
    assert "jpeg_ghost" not in st[8] and st[8]["decodable"] == 1  # flat: nothing to measure against


def test_false_premise_and_reworded_questions_in_the_scene_judge():
    from allava.quality.premise import false_premises, paraphrase_answer, premise_problems
    from allava.scenes.graph import THINGS, sample_scene
    from allava.scenes.verify import question_index

    scene = next(s for s in map(sample_scene, range(200)) if s.things and len(s.things) >= 2)
    absent = next(t for t in THINGS if all(o.name != t for o in scene.items))
    present = scene.things[0]
    assert false_premises(scene, f"How many {absent}s are there?")
    assert not false_premises(scene, f"How many {present.name}s are there?")
    assert premise_problems(scene, f"<image>\nWhat colour is the {absent}?", "red")
    # no question the scene generator asks has a false premise
    assert not any(premise_problems(scene, q, next(iter(a))[1]) for q, a in question_index(scene).items())
    n = sum(o.name == present.name for o in scene.items)
    assert paraphrase_answer(scene, f"Can you count the {present.name}s shown here?") == str(n)
    assert premise_problems(scene, f"Can you count the {present.name}s shown here?", str(n + 1))
    assert not premise_problems(scene, f"Can you count the {present.name}s shown here?", str(n))
    plain = next(s for s in map(sample_scene, range(200)) if s.background == "plain" and len(s.shapes) >= 2)
    assert premise_problems(plain, "Tell me what can be seen in the sky.", "sun")  # no sky on a plain background
    many = next(s for s in map(sample_scene, range(400))
                if len({o.name for o in s.shapes}) < len(s.shapes) and s.background == "plain")
    twice = next(o.name for o in many.shapes if sum(x.name == o.name for x in many.shapes) > 1)
    assert any("several" in p for p in premise_problems(many, f"Tell me the colour of the {twice}.", "red"))


def test_report_only_ops_run_only_when_asked(tmp_path):
    import test_qc_helpers as h

    from allava.quality.pipeline import run_qc_pipeline

    path = h.build_dataset(tmp_path / "d", n=8)
    cfg = parse_config({"ops": [{"name": "text_completeness", "min": 1},
                                {"name": "visual_complexity", "report_only": True}]})
    run = run_qc_pipeline(path, cfg, tmp_path / "a", progress=False, plots=False)
    assert [s.label for s in run.specs] == ["text_completeness"]
    run = run_qc_pipeline(path, cfg, tmp_path / "b", progress=False, plots=False, all_stats=True)
    assert "entropy" in run.stats[0]["visual_complexity"]
    with pytest.raises(ConfigError, match="report_only ops decide nothing"):
        parse_config({"ops": [{"name": "visual_complexity", "report_only": True, "min": 1}]})
    with pytest.raises(ConfigError, match="true or false"):
        parse_config({"ops": [{"name": "visual_complexity", "report_only": "yes"}]})
    assert json.loads((tmp_path / "a" / "report.json").read_text())["ops"][0]["label"] == "text_completeness"


def test_image_ops_decode_each_image_file_once(tmp_path, monkeypatch):
    """Many questions per image: image-only stats are memoised per file (path, size, mtime)."""
    import os

    _cross(tmp_path / "a.png", (200, 40, 40))
    calls = []
    real = ImageReadability._one
    monkeypatch.setattr(ImageReadability, "_one", lambda self, r: calls.append(r.id) or real(self, r))
    op = ImageReadability()
    recs = [QCRecord(f"q{i}", [], image="a.png", image_file=tmp_path / "a.png") for i in range(5)]
    first = op.compute(recs)
    assert len(calls) == 1 and all(s == first[0] for s in first)
    first[0]["iqa"] = 1.0  # a caller adding to its stats does not change the memo
    assert "iqa" not in op.compute(recs[:1])[0] and len(calls) == 1
    os.utime(tmp_path / "a.png", ns=(1, 1))  # the file changed: decoded again
    op.compute(recs[:1])
    assert len(calls) == 2


def test_iqa_backend_selectable_by_name(tmp_path):
    """`iqa_backend` picks a registered IQA scorer by name (transformers is the built-in one)."""
    from allava.quality.iqa import IQA_BACKENDS, register_iqa

    class Mean:
        def __init__(self, ref, label, device):
            self.ref = ref

        def score(self, images):
            return [float(sum(im.convert("L").getdata())) / (im.width * im.height) for im in images]

    register_iqa("test-mean")(Mean)
    try:
        _cross(tmp_path / "a.png", (200, 40, 40))
        cfg = parse_config({"ops": [{"name": "image_readability", "iqa_model": "any", "iqa_backend": "test-mean"}]})
        st = cfg.ops[0].op.compute([QCRecord("a", [], image="a.png", image_file=tmp_path / "a.png")])
        assert 100 < st[0]["iqa"] < 235
        bad = parse_config({"ops": [{"name": "image_readability", "iqa_model": "x", "iqa_backend": "nope"}]})
        with pytest.raises(ConfigError, match="unknown iqa_backend 'nope'; known: .*transformers"):
            bad.ops[0].op.compute([QCRecord("a", [], image="a.png", image_file=tmp_path / "a.png")])
    finally:
        IQA_BACKENDS.pop("test-mean", None)


def test_reworded_questions_naming_their_object_more_fully_and_answers_naming_what_is_absent():
    from allava.quality.premise import absent_answer, premise_problems, referent_answer
    from allava.scenes.abilities import where
    from allava.scenes.graph import SHAPES, THINGS, sample_scene
    from allava.scenes.verify import check_text

    # a shape whose name alone singles it out: the scene asks "the square", a rewording "the small square"
    scene = next(s for s in map(sample_scene, range(400)) if s.background == "plain"
                 and any(sum(x.name == o.name for x in s.shapes) == 1 for o in s.shapes))
    o = next(o for o in scene.shapes if sum(x.name == o.name for x in scene.shapes) == 1)
    q = f"Which colour has the {o.size} {o.name} got?"
    assert referent_answer(scene, q) == o.color
    wrong = next(c for c in ("red", "green", "blue") if c != o.color)
    assert premise_problems(scene, q, wrong) and not premise_problems(scene, q, o.color)
    assert premise_problems(scene, f"Point out the part of the picture that holds the {o.color} {o.name}.",
                            "top" if o.position != "top" else "bottom")
    # "Name the shape of the red object." when the red object is a car: "square" names nothing there
    outdoor = next(s for s in map(sample_scene, range(400)) if any(t.color for t in s.things))
    car = next(t for t in outdoor.things if t.color)
    q = f"Name the shape of the {car.color} object."
    absent = next(x for x in SHAPES if all(i.name != x for i in outdoor.items))
    assert absent_answer(outdoor, q, absent) == absent and premise_problems(outdoor, q, absent)
    assert absent_answer(outdoor, "What word is written on the sign?", "star") is None  # OCR answers are words
    present = next(t.name for t in outdoor.things)
    assert absent_answer(outdoor, "What can you see at the top?", present) is None and present in THINGS
    # "the five in the top left": one object per cell
    shape = scene.shapes[0]
    assert check_text(scene, f"the one {where(shape.position)} is a {shape.name}.") == []
    assert check_text(scene, f"the five {where(shape.position)} is a {shape.name}.")
