"""The quickstart's held-out ability benchmark: short answers, exact match after normalization,
accuracy per ability next to its chance level (1 / size of the ability's answer space)."""
from __future__ import annotations

import json
import re
from pathlib import Path

from tqdm import tqdm

from allava.evaluate.generate import SHORT_ANSWER, Answerer, Question

NUMBERS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}


def normalize(answer: str) -> str:
    """Lowercase, drop punctuation and articles, spell numbers as digits (VQA-style)."""
    words = re.sub(r"[^\w\s]", " ", answer.lower()).split()
    return " ".join(NUMBERS.get(w, w) for w in words if w not in ("a", "an", "the"))


def _text_question(item: dict, image_size: int) -> Question:
    """The same question with the scene given as words instead of pixels (no image): what the LM can
    do with perfect perception, as LLaVA's text-only GPT-4 reference does for the teacher."""
    import random

    from allava.scenes.graph import SceneConfig, sample_scene
    from allava.scenes.teacher import scene_in_words

    scene = sample_scene(item["seed"], SceneConfig(image_size=image_size))
    words = scene_in_words(scene, random.Random(f"bench-text/{item['seed']}"))
    return Question([{"from": "human", "value": f"{words}\n\n{item['question']}\n{SHORT_ANSWER}"}])


def evaluate_bench(model_dir: str | Path, bench_dir: str | Path, batch_size: int = 32, limit: int | None = None,
                   predictions_path: str | Path | None = None, progress: bool = True,
                   scene_as_text: bool = False) -> dict:
    """Accuracy per ability; with `scene_as_text` the image is replaced by the scene's description
    (a text-only upper bound that separates "cannot see" from "cannot reason")."""
    bench_dir = Path(bench_dir)
    world = bench_dir / "world.json"
    image_size = json.loads(world.read_text())["config"]["image_size"] if world.exists() else 96
    items = [json.loads(line) for line in (bench_dir / "bench.jsonl").read_text().splitlines() if line.strip()]
    meta = json.loads((bench_dir / "bench_meta.json").read_text())["abilities"]
    items = items[:limit] if limit else items
    answerer = Answerer(model_dir)
    preds: list[dict] = []
    bar = tqdm(total=len(items), desc="eval", unit="q", disable=not progress)
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        questions = [_text_question(it, image_size) if scene_as_text else
                     Question([{"from": "human", "value": f"<image>\n{it['question']}\n{SHORT_ANSWER}"}],
                              bench_dir / "images" / it["image"]) for it in chunk]
        for it, text in zip(chunk, answerer.answer(questions, max_new_tokens=8)):
            preds.append({"question_id": it["id"], "prompt": it["question"], "text": text, "answer": it["answer"],
                          "ability": it["ability"], "correct": normalize(text) == normalize(it["answer"])})
        bar.update(len(chunk))
    bar.close()
    if predictions_path:
        Path(predictions_path).write_text("".join(json.dumps(p) + "\n" for p in preds))
    abilities = {}
    for name, info in meta.items():
        rows = [p for p in preds if p["ability"] == name]
        if rows:
            abilities[name] = {"accuracy": sum(p["correct"] for p in rows) / len(rows), "n": len(rows),
                               "chance": info["chance"]}
    return {"overall": sum(p["correct"] for p in preds) / max(1, len(preds)), "n": len(preds),
            "abilities": abilities, "metric": "exact match after lowercasing, article/punctuation removal, number words as digits"}
