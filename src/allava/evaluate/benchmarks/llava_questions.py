"""LLaVA's own question files (``playground/data/eval/<bench>/``) as ``--data``, recognised by content.

``model_vqa_loader.py`` / ``model_vqa.py`` read JSONL lines ``{question_id, image, text[, category]}``;
``model_vqa_science.py`` a JSON list of ``{id, image?, conversations: [{from: human, value}, ...]}``.
A benchmark given such a file finds its gold files where LLaVA's scripts keep them (beside it), asks
exactly LLaVA's prompt about LLaVA's image, and maps LLaVA's ids onto its own so LLaVA's answer
files for the same questions match.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

from allava.evaluate.benchmarks.base import Benchmark, BenchmarkError, Sample

ANSWER_KEYS = {"answer_id", "model_id", "prompt", "label", "answer", "answers"}  # answer / gold files


@dataclass
class LlavaQuestion:
    qid: str
    text: str  # the human turn without the <image> marker
    image: str | None = None
    category: str | None = None


def read_llava_questions(path: Path) -> list[LlavaQuestion] | None:
    """The questions when `path` is a LLaVA question file, else None (a gold or answer file, a folder)."""
    if not path.is_file() or path.suffix not in (".json", ".jsonl"):
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    head = text.lstrip()[:1]
    if head == "[":
        try:
            rows = json.loads(text)
        except ValueError:
            return None
        if not rows or not all(isinstance(r, dict) and "id" in r and isinstance(r.get("conversations"), list)
                               for r in rows):
            return None
        return [LlavaQuestion(str(r["id"]), _human(r, path), r.get("image")) for r in rows]
    if head != "{":
        return None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            if not out:
                return None  # one JSON document, not JSONL (SEED-Bench.json, mm-vet.json, ...)
            raise BenchmarkError(f"{path}:{n}: not valid JSON (a LLaVA question file has one object per line)") from None
        if not isinstance(row, dict) or "question_id" not in row or "text" not in row or ANSWER_KEYS & set(row):
            if not out:
                return None
            raise BenchmarkError(f"{path}:{n}: expected question_id and text like the lines before it")
        out.append(LlavaQuestion(str(row["question_id"]), str(row["text"]).replace("<image>", "").strip(),
                                 row.get("image"), row.get("category")))
    return out or None


def _human(row: dict, path: Path) -> str:
    turn = next((t for t in row["conversations"] if isinstance(t, dict) and t.get("from") == "human"), None)
    if turn is None:
        raise BenchmarkError(f"{path}: question {row['id']}: no human turn in conversations")
    return str(turn.get("value", "")).replace("<image>", "").strip()  # model_vqa_science.py does the same


def overlay(bench: Benchmark, samples: list[Sample], questions: list[LlavaQuestion], source: Path,
            sample_key: Callable[[Sample], Hashable], question_key: Callable[[LlavaQuestion], Hashable],
            prompt: Callable[[LlavaQuestion], str] = lambda q: q.text,
            image: Callable[[LlavaQuestion, Sample], object] | None = None) -> list[Sample]:
    """The benchmark's samples for LLaVA's questions, in LLaVA's order, with LLaVA's prompt (and image,
    where `image` says how to find it). A question the gold files do not hold is an error naming it;
    the gold questions LLaVA's file leaves out are not asked. LLaVA's id -> ours goes to
    ``bench.llava_ids`` for the answers (ids several questions share are left to ``match``)."""
    by_key: dict[Hashable, list[Sample]] = {}
    for s in samples:
        by_key.setdefault(sample_key(s), []).append(s)
    out, seen_ids = [], {}
    for q in questions:
        cands = by_key.get(question_key(q))
        if not cands:
            raise BenchmarkError(f"{bench.name}: {source.name}: question {q.qid} ({q.text[:60]!r}) is not in the "
                                 f"gold files found beside it; --data must be {bench.data_help}")
        s = cands.pop(0)
        s.prompt = prompt(q)
        if image is not None:
            s.image = image(q, s)
        s.meta["llava_id"] = q.qid
        seen_ids[q.qid] = seen_ids.get(q.qid, 0) + 1
        out.append(s)
    bench.llava_ids = {s.meta["llava_id"]: s.question_id for s in out if seen_ids[s.meta["llava_id"]] == 1}
    bench.question_file = str(source)
    return out
