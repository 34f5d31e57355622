"""The quickstart's held-out ability benchmark: short answers, exact match after normalization,
accuracy per ability next to its chance level (1 / size of the ability's answer space)."""
from __future__ import annotations

import json
import re
from collections.abc import Collection
from pathlib import Path

from tqdm import tqdm

from allava.evaluate.benchmarks.base import SHORT_ANSWER, Sample
from allava.evaluate.generate import Answerer, Question

NUMBERS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}


def normalize(answer: str) -> str:
    """Lowercase, drop punctuation and articles, spell numbers as digits (VQA-style)."""
    words = re.sub(r"[^\w\s]", " ", answer.lower()).split()
    return " ".join(NUMBERS.get(w, w) for w in words if w not in ("a", "an", "the"))


def text_question(sample: Sample, image_size: int) -> Question:
    """The same question with the scene given as words instead of pixels (no image): what the LM can
    do with perfect perception, as LLaVA's text-only GPT-4 reference does for the teacher."""
    import random

    from allava.scenes.graph import SceneConfig, sample_scene
    from allava.scenes.teacher import scene_in_words

    seed = sample.meta["seed"]
    words = scene_in_words(sample_scene(seed, SceneConfig(image_size=image_size)), random.Random(f"bench-text/{seed}"))
    return Question([{"from": "human", "value": f"{words}\n\n{sample.prompt}"}])


def balanced_subset(bench_dir: str | Path, n: int) -> dict[str, str]:
    """{question id: ability} of a fixed subset of about `n` questions, the same number per ability
    (the benchmark file is sorted by ability, so its first n lines would cover only the first ones)."""
    from allava.evaluate.benchmarks import get_benchmark

    by_ability: dict[str, list[str]] = {}
    for s in get_benchmark("synthetic").load(Path(bench_dir)):
        by_ability.setdefault(s.meta["ability"], []).append(s.question_id)
    per = max(1, n // max(1, len(by_ability)))
    return {q: a for a, ids in by_ability.items() for q in ids[:per]}


def evaluate_bench(model_dir: str | Path, bench_dir: str | Path, batch_size: int = 32, limit: int | None = None,
                   predictions_path: str | Path | None = None, progress: bool = True,
                   scene_as_text: bool = False, question_ids: Collection[str] | None = None,
                   desc: str = "held-out questions", device: str | None = "auto") -> dict:
    """Accuracy per ability, scored by the registered `synthetic` benchmark; with `scene_as_text` the
    image is replaced by the scene's description (a text-only upper bound that separates "cannot
    see" from "cannot reason"). `question_ids` keeps only those questions (a learning curve's fixed
    subset); `device="auto"` answers on the GPU when there is one."""
    import torch

    from allava.evaluate.benchmarks import get_benchmark

    bench_dir = Path(bench_dir)
    world = bench_dir / "world.json"
    image_size = json.loads(world.read_text())["config"]["image_size"] if world.exists() else 96
    bench = get_benchmark("synthetic")
    samples = bench.load(bench_dir)
    if question_ids is not None:
        keep = set(question_ids)
        samples = [s for s in samples if s.question_id in keep]
    samples = samples[:limit] if limit else samples
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else None
    answerer = Answerer(model_dir, device=device)
    answers: dict[str, str] = {}
    bar = tqdm(total=len(samples), desc=desc, unit="q", disable=not progress)
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        questions = [text_question(s, image_size) if scene_as_text else
                     Question([{"from": "human", "value": f"<image>\n{s.prompt}"}], s.image) for s in chunk]
        answers.update(zip((s.question_id for s in chunk), answerer.answer(questions, max_new_tokens=8)))
        bar.update(len(chunk))
    bar.close()
    scores = bench.score(samples, answers)
    correct = {s.question_id for s in samples if normalize(answers[s.question_id]) == normalize(s.target)}
    if predictions_path:
        rows = [{"question_id": s.question_id, "prompt": s.prompt.removesuffix(f"\n{SHORT_ANSWER}"),
                 "text": answers[s.question_id], "answer": s.target, "ability": s.meta["ability"],
                 "correct": s.question_id in correct} for s in samples]
        Path(predictions_path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"overall": scores["overall"], "n": scores["n"], "abilities": scores["abilities"],
            "metric": scores["convention"], "correct_ids": sorted(correct)}
