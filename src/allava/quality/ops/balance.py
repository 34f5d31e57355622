"""Principle 10 (balance): per-task counts and their variance; optional uniform resampling.

With `target_size`, the survivors of the earlier ops are resampled so every task gets an equal
share (tasks smaller than their share keep everything, the rest is shared among the others), as
the review does by "randomly and uniformly sampling from various task labels". This is a decision,
not a stat: it is recomputed from the cached task tags on every run and costs nothing.
"""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from allava.quality.base import Stats, no_cache, register_op
from allava.quality.ops.task_diversity import TaskDiversity, TaskSettings, task_counts


def quotas(sizes: dict[str, int], target: int) -> dict[str, int]:
    """Water-filling: equal shares, with what small tasks cannot use passed on to the others."""
    left, out, todo = target, {}, dict(sizes)
    while todo:
        share = left // len(todo)
        small = {t: n for t, n in todo.items() if n <= share}
        if not small:
            extra = left - share * len(todo)
            for k, t in enumerate(sorted(todo, key=lambda t: -todo[t])):
                out[t] = share + (1 if k < extra else 0)
            return out
        for t, n in small.items():
            out[t] = n
            left -= n
            del todo[t]
    return out


@dataclass
class BalanceSettings(TaskSettings):
    target_size: int | None = no_cache(None)  # a decision setting: changes what is kept, not the stats
    seed: int = no_cache(0)


@register_op("balance")
class Balance(TaskDiversity):
    Settings = BalanceSettings

    def indicators(self, stats: list[Stats]) -> dict:
        counts = np.array(list(task_counts(stats).values()), dtype=float)
        if counts.size == 0:
            return {}
        return {"balance_variance": float(counts.var()),
                "balance_cv": float(counts.std() / counts.mean()) if counts.mean() else 0.0}

    def select(self, stats: list[Stats], alive: list[bool]) -> list[bool] | None:
        target = self.settings.target_size
        if target is None:
            return None
        by_task: dict[str, list[int]] = defaultdict(list)
        for i, (s, a) in enumerate(zip(stats, alive)):
            if a:
                by_task[s.get("task", "unlabelled")].append(i)
        q = quotas({t: len(v) for t, v in by_task.items()}, target)
        rng = random.Random(self.settings.seed)
        keep = [False] * len(stats)
        for t in sorted(by_task):
            for i in rng.sample(by_task[t], min(q[t], len(by_task[t]))):
                keep[i] = True
        return keep
