"""Principle 3 (task diversity): a task tag per record; number of tasks and their entropy.

Tags come from the synthesizer's own labels (`meta.task` / `meta.ability`) when the records carry
them, else from keyword rules on the first instruction. `source: teacher` is the review's way
(TagGPT): a teacher (any OpenAI-compatible endpoint, or the offline scene teacher) tags the first
instruction with one task from `tasks`; a reply naming none of them counts as "other" and is
counted (`tag_unparsed`), so a bad prompt or model shows up in the report instead of in the tags.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from allava.quality.ask import Asker, TeacherSettings
from allava.quality.base import Op, QCRecord, Stats, no_cache, register_op
from allava.quality.text import task_of

TASKS = ["description", "counting", "color", "spatial", "recognition", "reasoning", "ocr", "existence", "other"]
TAG_SYSTEM = ("You label vision-language instructions with the kind of task they ask for. "
              "Reply with exactly one task name from the list, nothing else.")


def tag_prompt(instruction: str, tasks: list[str]) -> list[dict[str, Any]]:
    return [{"role": "system", "content": TAG_SYSTEM},
            {"role": "user", "content": f"Tasks: {', '.join(tasks)}\n\nInstruction: {instruction}\n\nTask:"}]


def _canon(text: str) -> str:
    return re.sub(r"[\s_-]+", " ", text.lower()).strip()


def parse_tag(text: str | None, tasks: list[str]) -> str | None:
    """The listed task the reply names: the whole reply (quotes, "Task:", markdown, case ignored),
    else the earliest listed task named in it as a whole word; None when it names none."""
    if not text:
        return None
    reply = _canon(re.sub(r"^\W*(?:task\s*:)?[\W_]*|[\W_]*$", "", text.strip(), flags=re.IGNORECASE))
    by_canon = {_canon(t): t for t in tasks}
    if reply in by_canon:
        return by_canon[reply]
    low = f" {_canon(re.sub(r'[^A-Za-z0-9_ -]+', ' ', text))} "
    hits = [(low.find(f" {c} "), -len(c), t) for c, t in by_canon.items() if f" {c} " in low]
    return min(hits)[2] if hits else None


@dataclass
class TaskSettings(TeacherSettings):
    source: str = "auto"  # auto | meta | rules | teacher
    meta_keys: list[str] = field(default_factory=lambda: ["task", "ability"])
    tasks: list[str] = field(default_factory=lambda: list(TASKS))  # what the teacher may answer
    batch_size: int = no_cache(64)


def task_counts(stats: list[Stats]) -> Counter:
    return Counter(s["task"] for s in stats if "task" in s)


@register_op("task_diversity")
class TaskDiversity(Op):
    Settings = TaskSettings

    def __init__(self, settings: TaskSettings | None = None):
        super().__init__(settings)
        self.asker = Asker(self.settings, "tag")

    def compute(self, batch: list[QCRecord]) -> list[Stats]:
        s = self.settings
        if s.source != "teacher":
            return [{"task": task_of(r, s.source, s.meta_keys)} for r in batch]
        prompts = [(r, tag_prompt(r.instructions[0] if r.instructions else "", s.tasks)) for r in batch]
        return [self._tag(r, answers) for r, answers in zip(batch, self.asker.ask("qc-tag", prompts))]

    def _tag(self, r: QCRecord, answers: list[str | None]) -> Stats:
        """Most frequent parsed tag over the k samples (ties: the earlier task in the list)."""
        if all(a is None for a in answers):
            return {"tag_failed": 1}
        tags = [parse_tag(a, self.settings.tasks) for a in answers if a is not None]
        parsed = Counter(t for t in tags if t is not None)
        if not parsed:
            tag, unparsed = "other", 1
        else:
            order = {t: i for i, t in enumerate(self.settings.tasks)}
            tag, unparsed = min(parsed, key=lambda t: (-parsed[t], order[t])), 0
        return {"task": tag if r.image is not None else f"text:{tag}", "tag_unparsed": unparsed}

    def indicators(self, stats: list[Stats]) -> dict[str, Any]:
        c = task_counts(stats)
        n = sum(c.values())
        if not n:
            return {}
        entropy = -sum(v / n * math.log(v / n) for v in c.values())
        out = {"num_tasks": len(c), "task_entropy": entropy, "task_counts": dict(c.most_common())}
        for key in ("tag_unparsed", "tag_failed"):
            if any(key in s for s in stats):
                out[key] = sum(s.get(key, 0) for s in stats)
        return out

    def close(self) -> None:
        self.asker.close()
