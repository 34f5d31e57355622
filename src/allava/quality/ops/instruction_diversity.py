"""Principle 4 (instruction diversity): per task, a co-occurrence graph of the instructions' content
words, split into communities; more communities = more distinct ways of asking.

The review uses Ego-Splitting (overlapping communities); Louvain from networkx is the
non-overlapping stand-in. Each record gets the community most of its words fall in
(`task:community`), so the indicator can be recounted on any subset (e.g. what QC kept).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from allava.quality.base import DatasetOp, OpSettings, QCRecord, Stats, register_op
from allava.quality.text import content_words, task_of


@dataclass
class InstructionDiversitySettings(OpSettings):
    source: str = "auto"  # task tags, as in task_diversity
    meta_keys: list[str] = field(default_factory=lambda: ["task", "ability"])
    max_words: int = 30  # per instruction (edges grow with its square)
    resolution: float = 1.0
    seed: int = 0


@register_op("instruction_diversity")
class InstructionDiversity(DatasetOp):
    Settings = InstructionDiversitySettings

    def features(self, batch: list[QCRecord]) -> list[Any]:
        s = self.settings
        return [{"task": task_of(r, s.source, s.meta_keys),
                 "words": sorted(set(content_words(" ".join(r.instructions))))[: s.max_words]} for r in batch]

    def finalize(self, features: list[Any]) -> list[Stats]:
        import networkx as nx

        by_task: dict[str, list[int]] = defaultdict(list)
        for i, f in enumerate(features):
            by_task[f["task"]].append(i)
        out: list[Stats] = [{} for _ in features]
        for task, idx in by_task.items():
            weights: Counter = Counter()
            g = nx.Graph()
            for i in idx:
                words = features[i]["words"]
                g.add_nodes_from(words)
                weights.update(combinations(words, 2))
            g.add_weighted_edges_from((a, b, w) for (a, b), w in weights.items())
            if g.number_of_nodes() == 0:
                continue
            comms = nx.community.louvain_communities(g, resolution=self.settings.resolution, seed=self.settings.seed)
            where = {w: k for k, c in enumerate(sorted(comms, key=min)) for w in c}
            for i in idx:
                words = features[i]["words"]
                if words:
                    k = Counter(where[w] for w in words).most_common(1)[0][0]
                    out[i] = {"community": f"{task}:{k}"}
        return out

    def indicators(self, stats: list[Stats]) -> dict[str, Any]:
        per_task: dict[str, set] = defaultdict(set)
        for s in stats:
            if "community" in s:
                per_task[s["community"].rsplit(":", 1)[0]].add(s["community"])
        if not per_task:
            return {}
        return {"instruction_diversity": float(np.mean([len(v) for v in per_task.values()])),
                "instruction_communities": sum(len(v) for v in per_task.values())}
