"""Resumable phases: what the default run and every study are made of."""
from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from allava.train.stages import StageResult


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children, in MiB."""
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024


class Phases:
    """Wall time per phase, and a done-marker per phase so a rerun skips finished work.

    Each run (the default run, each study) keeps its own `phases.json`, so the wall time of the
    default run is the sum of its own file, whatever studies ran beside it."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / "phases.json"
        self.done: dict[str, dict] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def run(self, name: str, fn: Callable[..., dict | None], *args: Any, **kwargs: Any) -> dict:
        if name in self.done:
            print(f"[{name}] already done ({self.done[name]['wall_s']:.0f}s)", flush=True)
            return self.done[name]
        print(f"[{name}]", flush=True)
        t0 = time.perf_counter()
        result = fn(*args, **kwargs) or {}
        # the running peak after each phase shows which phase set it
        self.done[name] = {"wall_s": time.perf_counter() - t0, "peak_rss_mb_after": peak_rss_mb(), **result}
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.done, indent=2))
        return self.done[name]

    def wall_s(self) -> float:
        return sum(p["wall_s"] for p in self.done.values())

    def peak_rss_mb(self) -> float:
        """The highest peak recorded after any of these phases: a report rewritten later (by a study,
        or a rerun that skips every phase) must not show the rewriting process's own, smaller peak."""
        return max([p.get("peak_rss_mb_after", 0.0) for p in self.done.values()], default=peak_rss_mb())


def stage_summary(r: StageResult) -> dict:
    """What the report keeps of a finished stage (a `run_stage` result)."""
    return {"model_dir": r.model_dir, "steps": r.steps, "wall_s": r.wall_s, "tokens_per_s": r.tokens_per_s,
            "losses": r.losses, "trainable": r.trainable, "data": r.data, "train_s": r.train_s,
            "samples_per_s": r.samples_per_s, "feature_cache": r.feature_cache}
