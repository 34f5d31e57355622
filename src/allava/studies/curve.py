"""The learning curve: held-out accuracy at a few steps of stage 2, measured while it trains.

A `TrainerCallback` saves the model being trained at each chosen step into a scratch folder
(exactly as a stage's `final/` is saved), answers a fixed, ability-balanced subset of the
benchmark with it and appends the point to `learning_curve.jsonl`. Points survive a resume: the
file keeps what was measured before the interruption and the resumed trainer measures the rest.
The RNG states are restored after each point, so measuring does not change the training run.
"""
from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from allava.model.build import ModelSpec, Recipe, save_checkpoint


def curve_steps(total: int, points: int) -> list[int]:
    """`points` evenly spaced steps strictly inside (0, total), then `total` itself."""
    inner = {round(total * i / (points + 1)) for i in range(1, points + 1)}
    return sorted(s for s in inner if 0 < s < total) + [total] if total > 0 else []


def score_subset(correct_ids: set[str] | list[str], subset: dict[str, str]) -> dict:
    """Overall and per-ability accuracy on `subset` ({question id: ability}) from the correct ids."""
    correct = set(correct_ids)
    per: dict[str, list[int]] = {}
    for qid, ability in subset.items():
        per.setdefault(ability, []).append(int(qid in correct))
    return {"overall": sum(map(sum, per.values())) / max(1, len(subset)), "n": len(subset),
            "abilities": {a: sum(v) / len(v) for a, v in per.items()}}


def read_curve(path: Path) -> dict[int, dict]:
    """{step: point}; a step measured twice (before and after a resume) keeps its latest point."""
    if not path.exists():
        return {}
    points = {}
    for line in path.read_text().splitlines():
        try:
            p = json.loads(line)
        except json.JSONDecodeError:  # a line torn by a kill
            continue
        points[int(p["step"])] = p
    return points


class LearningCurve(TrainerCallback):
    """Measures `evaluate(model_dir) -> {"correct_ids": ...}` on the subset at `curve_steps`."""

    def __init__(self, path: Path, spec: ModelSpec, subset: dict[str, str], points: int,
                 evaluate: Callable[[str, int], dict], scratch: Path):
        self.path, self.spec, self.subset, self.points = path, spec, subset, points
        self.evaluate, self.scratch = evaluate, scratch
        self.steps: list[int] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.steps = curve_steps(state.max_steps, self.points)

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if state.global_step in self.steps:
            self.measure(state.global_step, model, processing_class)

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if state.global_step in self.steps and state.global_step not in read_curve(self.path):
            self.measure(state.global_step, model, processing_class)

    def measure(self, step: int, model, processor) -> None:
        states = random.getstate(), np.random.get_state(), torch.get_rng_state()
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        folder = self.scratch / f"step-{step}"
        try:
            save_checkpoint(getattr(model, "module", model), processor,
                            Recipe(spec=self.spec, stage=f"stage2-step-{step}"), folder)
            result = self.evaluate(str(folder), step)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])
            if cuda is not None:
                torch.cuda.set_rng_state_all(cuda)
        point = {"step": step, **score_subset(result["correct_ids"], self.subset)}
        with self.path.open("a") as f:
            f.write(json.dumps(point) + "\n")


def plot_curve(points: list[dict], total_steps: int, questions: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3))
    if points:
        ax.plot([p["step"] for p in points], [100 * p["overall"] for p in points], marker="o", lw=1.5)
    ax.set_xlim(0, max(1, total_steps))
    ax.set_ylim(0, 100)
    ax.set_xlabel("stage-2 step (0 = after stage 1)")
    ax.set_ylabel(f"held-out accuracy, % ({questions} q)")
    ax.set_title("learning curve", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
