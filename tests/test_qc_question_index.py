"""The judge's question index enumerates every phrasing of every scene question (no random draws):
same verdicts as the sampled index it replaced, and never a phrasing less."""
from __future__ import annotations

import random
from functools import lru_cache

import pytest

from allava.quality import premise
from allava.scenes import verify
from allava.scenes.abilities import ABILITIES, SHORT_ANSWER_PROMPT, ask
from allava.scenes.graph import sample_scene
from allava.scenes.teacher import complex_question, detailed_answer


def _records(n: int):
    """Question / answer pairs as the world and a noisy teacher write them: the scene's question
    (bare, short-answer, complex), correct long and short answers, and wrong short answers."""
    out = []
    for seed in range(n):
        scene, rng = sample_scene(seed), random.Random(seed)
        for name, qas in ask(scene, rng).items():
            qa = rng.choice(qas)
            wrong = rng.choice([a for a in ABILITIES[name].answer_space if a != qa.answer])
            for q in (qa.question, f"<image>\n{qa.question}\n{SHORT_ANSWER_PROMPT}", complex_question(qa, rng)):
                for a in (detailed_answer(scene, qa, rng), qa.answer, wrong, f"The answer is {wrong}."):
                    out.append((scene, q, a))
    return out


def _verdicts(records):
    return [(tuple(verify.check_answer(s, q, a)), tuple(premise.premise_problems(s, q, a))) for s, q, a in records]


def test_exact_index_has_every_sampled_phrasing():
    for seed in range(25):
        scene = sample_scene(seed)
        exact, sampled = verify.question_index(scene), verify.sampled_question_index(scene, draws=200)
        assert exact == sampled, seed


def test_verdicts_identical_to_the_sampled_index(monkeypatch):
    records = _records(60)  # 60 scenes, ~2,000 question / answer pairs
    new = _verdicts(records)
    assert any(v[0] for v in new) and not all(v[0] for v in new)  # some judged wrong, some right
    monkeypatch.setattr(verify, "question_index", lru_cache(maxsize=None)(verify.sampled_question_index))
    monkeypatch.setattr(premise, "_key_index", lru_cache(maxsize=None)(premise.sampled_key_index))
    assert _verdicts(records) == new


def test_find_qa_uses_the_exact_index():
    from allava.synth.teachers.scene import find_qa

    scene = sample_scene(3)
    for qa in verify.scene_questions(scene):
        hit = find_qa(scene, f"<image>\nLook closely. {qa.question}")
        assert hit is not None and hit.answer in {a for _, a in verify.question_index(scene)[verify._norm(qa.question)]}


@pytest.fixture
def fresh_question_caches():
    """The scene question caches emptied before and after: the test registers an ability of its own."""
    verify.scene_questions.cache_clear()
    yield
    verify.scene_questions.cache_clear()
    verify.question_index.cache_clear()


def test_an_ability_drawing_otherwise_is_sampled(monkeypatch, fresh_question_caches):
    """An ability that uses its rng beyond `choice` still gets indexed (by sampling)."""
    from allava.scenes.abilities import QA, Ability

    def coin(scene, rng):
        return [QA("coin", f"Is it heads {rng.randint(1, 2)}?", "a")]

    monkeypatch.setitem(ABILITIES, "coin", Ability("coin", coin, ("a", "b", "c", "d")))
    qs = {qa.question for qa in verify.scene_questions(sample_scene(1)) if qa.ability == "coin"}
    assert qs == {"Is it heads 1?", "Is it heads 2?"}


@pytest.mark.parametrize("leak", [lambda rng: rng.choice(("x", "y")) + "?", lambda rng: f"{rng.choice(('x', 'y'))}?"])
def test_an_alternative_used_outside_format_is_sampled(monkeypatch, fresh_question_caches, leak):
    from allava.scenes.abilities import QA, Ability

    monkeypatch.setitem(ABILITIES, "leak", Ability("leak", lambda s, rng: [QA("leak", leak(rng), "a")], ("a", "b", "c", "d")))
    qs = {qa.question for qa in verify.scene_questions(sample_scene(1)) if qa.ability == "leak"}
    assert qs == {"x?", "y?"}


def test_question_tables_share_what_recurs_and_a_run_of_scenes_fits(fresh_question_caches):
    """Every scene of a 100K-record QC run stays cached (records revisit an image after ~1,200
    others) in bounded memory: tables hold shared question strings and answer sets, ~4 KB a scene."""
    import tracemalloc

    from allava.scenes.graph import sample_scene

    assert verify.question_index.cache_info().maxsize == premise._key_index.cache_info().maxsize == verify.SCENE_CACHE
    assert verify.SCENE_CACHE >= 25_000 and verify.scene_questions.cache_info().maxsize <= 1024
    scenes = [sample_scene(s) for s in range(7000, 7060)]
    for s in scenes[:10]:  # the shared values most scenes use
        verify.question_index(s), premise._key_index(s)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tables = [(verify.question_index(s), premise._key_index(s)) for s in scenes[10:]]
        verify.scene_questions.cache_clear()  # only needed to build the tables
        per_scene = (tracemalloc.get_traced_memory()[0] - before) / len(tables)
    finally:
        tracemalloc.stop()
    assert per_scene < 8_000, per_scene  # both tables (was ~33 KB, and ~14 KB more for the questions)
    a, b = (verify.question_index(s) for s in scenes[10:12])
    both = set(a) & set(b)
    assert both and all(next(k for k in a if k == q) is next(k for k in b if k == q) for q in both)
    assert all(a[q] is b[q] for q in both if a[q] == b[q])
