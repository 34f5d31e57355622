"""Principle 3 (task diversity): a task tag per record; number of tasks and their entropy.

Tags come from the synthesizer's own labels (`meta.task` / `meta.ability`) when the records carry
them, else from keyword rules on the first instruction (the review uses an LLM tagger, TagGPT; a
teacher-backed tagger is the real backend still to come).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from allava.quality.base import Op, OpSettings, QCRecord, Stats, register_op
from allava.quality.text import task_of


@dataclass
class TaskSettings(OpSettings):
    source: str = "auto"  # auto | meta | rules
    meta_keys: list[str] = field(default_factory=lambda: ["task", "ability"])


def task_counts(stats: list[Stats]) -> Counter:
    return Counter(s["task"] for s in stats if "task" in s)


@register_op("task_diversity")
class TaskDiversity(Op):
    Settings = TaskSettings

    def compute(self, batch: list[QCRecord]) -> list[Stats]:
        return [{"task": task_of(r, self.settings.source, self.settings.meta_keys)} for r in batch]

    def indicators(self, stats: list[Stats]) -> dict[str, Any]:
        c = task_counts(stats)
        n = sum(c.values())
        if not n:
            return {}
        entropy = -sum(v / n * math.log(v / n) for v in c.values())
        return {"num_tasks": len(c), "task_entropy": entropy, "task_counts": dict(c.most_common())}
