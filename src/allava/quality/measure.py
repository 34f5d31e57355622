"""Measure a QC config on injected noise: per-kind removal and clean false removal.

Shared by `benchmarks/qc_noise.py` (a config on a quickstart world), the tests and the noise study's
report, so the three print the same table from the same numbers.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any


def sample_key(r: dict[str, Any]) -> str:
    """What makes two records the same sample: their image and conversations (not their ids)."""
    return json.dumps([r.get("image"), r.get("conversations")], sort_keys=True)


def distinct(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first record of each sample (`sample_key`): the quickstart's balanced short VQA repeats
    identical records on purpose, and a repeat is the same sample, not a clean record of its own."""
    seen: set[str] = set()
    out = []
    for r in records:
        key = sample_key(r)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def sample_world(records: list[dict[str, Any]], image_folder: Path, out: Path, n: int, seed: int = 0
                 ) -> list[dict[str, Any]]:
    """`n` distinct records (all abilities, long and short), their images copied under out/images,
    so injected images never land in the world's own folder."""
    pool = distinct(records)
    picked = sorted(random.Random(seed).sample(range(len(pool)), min(n, len(pool))))
    rows = [pool[i] for i in picked]
    for r in rows:
        if r.get("image"):
            dst = out / "images" / r["image"]
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(image_folder / r["image"], dst)
    return rows


def kind_table(score: dict[str, Any], counts: dict[str, int] | None = None) -> list[str]:
    """Markdown rows: each injected kind's removal, then the clean records' false removal."""
    lines = ["| kind | injected | removed |", "|---|---|---|"]
    for kind, share in score["per_kind"].items():
        n = (counts or {}).get(kind, "")
        lines.append(f"| {kind} | {n} | {share:.1%} |")
    lines.append(f"| **all injected** | {score['injected']} | **{score['injected_removed']:.1%}** |")
    lines.append(f"| clean (false removals) | {score['clean']} | **{score['clean_removed']:.1%}** |")
    return lines


def removed_ids(qc_out: Path) -> set[str]:
    with open(qc_out / "removed.jsonl", encoding="utf-8") as fh:
        return {json.loads(line)["id"] for line in fh if line.strip()}
