"""The chat transcript: the final model talked to about fresh scenes, as a user of `allava chat` would.

Scenes come from seeds that no split of the world uses (between the training and the text-only
ranges), so none was trained on or benchmarked. Each question is one ability's, asked with the
short-answer instruction the benchmark uses, through `allava.serve.chat.Chat` (the code behind
`allava chat`), and scored by the benchmark's normalised exact match.
"""
from __future__ import annotations

import random
from pathlib import Path

from allava.studies.config import QuickstartConfig


def fresh_seeds(cfg: QuickstartConfig, n: int) -> list[int]:
    """Seeds just below the text-only range: above every training seed, outside text and bench."""
    from allava.scenes.world import FRESH_SEEDS, SEED_STRIDE, TEXT_OFFSET

    first = TEXT_OFFSET - n
    if n > FRESH_SEEDS:
        raise ValueError(f"transcript.scenes: at most {FRESH_SEEDS} fresh scenes (the seeds below the text range "
                         f"that no training image uses), got {n}")
    return [cfg.world.seed * SEED_STRIDE + first + i for i in range(n)]


def run_transcript(out: Path, cfg: QuickstartConfig, model_dir: str) -> dict:
    """A phase: {"scenes": [{seed, image, turns: [{ability, question, answer, truth, correct}]}], share...}."""
    from allava.evaluate.generate import Answerer
    from allava.evaluate.synthetic import normalize
    from allava.scenes.abilities import ABILITIES, SHORT_ANSWER_PROMPT, ask
    from allava.scenes.graph import SceneConfig, sample_scene
    from allava.scenes.render import render
    from allava.scenes.world import save_png
    from allava.serve.chat import Chat

    tc = cfg.transcript
    folder = out / "transcript"
    folder.mkdir(parents=True, exist_ok=True)
    chat = Chat(Answerer(model_dir), None, tc.max_new_tokens)
    scenes = []
    for seed in fresh_seeds(cfg, tc.scenes):
        scene = sample_scene(seed, SceneConfig(image_size=cfg.world.image_size))
        image = folder / f"scene-{seed}.png"
        save_png(render(scene), image)
        rng = random.Random(f"transcript/{seed}")
        qas = ask(scene, rng)
        chat.set_image(image)
        turns = []
        for ability in ABILITIES:
            if ability not in qas:
                continue
            qa = rng.choice(qas[ability])
            if not tc.multi_turn:
                chat.set_image(image)
            answer = chat.ask(f"{qa.question}\n{SHORT_ANSWER_PROMPT}")
            turns.append({"ability": ability, "question": qa.question, "answer": answer, "truth": qa.answer,
                          "correct": normalize(answer) == normalize(qa.answer)})
        scenes.append({"seed": seed, "image": str(image.relative_to(out)), "turns": turns})
    total = sum(len(s["turns"]) for s in scenes)
    correct = sum(t["correct"] for s in scenes for t in s["turns"])
    return {"scenes": scenes, "correct": correct, "total": total, "share": correct / max(1, total),
            "multi_turn": tc.multi_turn}
