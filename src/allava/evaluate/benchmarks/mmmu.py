"""MMMU val: the official prompt (llava1.5 config) and answer parser (eval_utils.py).

Reads the released parquet files (needs ``pyarrow``) or a JSON/JSONL export with the same
columns. Only ``image_1`` is shown to the model, as in the official LLaVA-1.5 evaluation.
"""
from __future__ import annotations

import ast
import base64
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from allava.evaluate.benchmarks import register_benchmark
from allava.evaluate.benchmarks.base import (
    LETTER_ANSWER,
    LETTERS,
    SHORT_ANSWER,
    Benchmark,
    BenchmarkError,
    Sample,
    choice_key,
    match_by_choice_key,
    only_answered,
    pct,
    read_json,
    read_jsonl,
)
from allava.evaluate.metrics.choice import MMMU_SEED, mmmu_gold, mmmu_open_correct, parse_mmmu_choice, parse_mmmu_open


def _read_rows(path: Path, bench: str) -> list[dict[str, Any]]:
    if path.is_file():
        files = [path]
    else:
        found = sorted(p for p in path.rglob("*") if p.suffix in (".parquet", ".json", ".jsonl"))
        files = [p for p in found if "validation" in p.name]
        if not files:  # an export under another name is taken only if it reads as one
            files = [p for p in found if p.suffix == ".parquet" or _looks_mmmu(p)]
    if not files:
        raise BenchmarkError(f"{bench}: no MMMU validation parquet/JSON files under {path}")
    rows: list[dict[str, Any]] = []
    for f in files:
        if f.suffix == ".parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise BenchmarkError(f"{bench}: reading {f.name} needs pyarrow (pip install 'allava[eval]'), "
                                     "or pass a JSON/JSONL export of the same columns") from None
            batch = pq.read_table(f).to_pylist()
        else:
            batch = read_jsonl(f, bench) if f.suffix == ".jsonl" else read_json(f, bench)
        for r in batch:
            r["_dir"] = f.parent
        rows += batch
    return rows


def _looks_mmmu(path: Path) -> bool:
    """A JSON/JSONL file whose first row has MMMU's columns (id, question, options, answer)."""
    try:
        with open(path, encoding="utf-8") as fh:
            head = fh.read(65536).lstrip()
    except (OSError, UnicodeDecodeError):
        return False
    return all(f'"{k}"' in head[:4096] for k in ("id", "question", "options", "answer"))


def _image(value: Any, base: Path) -> Any:
    """parquet: {"bytes": b"...", "path": ...}; JSON: a path (relative to the file) or base64 bytes."""
    if value is None:
        return None
    if isinstance(value, dict):
        data = value.get("bytes")
        if isinstance(data, str):
            return base64.b64decode(data)
        if data:
            return data
        value = value.get("path")
        if not value:
            return None
    return base / str(value)


@register_benchmark("mmmu")
class MMMU(Benchmark):
    convention = ("MMMU val, official llava1.5 prompt ('(A) option' lines) and parser: multiple choice by letter, "
                  "bracket, or option text, else a random letter from one generator seeded 42 drawn in question order (subjects alphabetical), as main_parse_and_eval.py (counted); open answers "
                  "by key sub-response and numbers rounded to 2 decimals; first image only")
    data_help = "the MMMU folder (<Subject>/validation-*.parquet) or a JSON/JSONL export of the validation rows"

    def load(self, path: Path) -> list[Sample]:
        if not path.exists():
            raise self.missing(path)
        samples = []
        for r in _read_rows(path, self.name):
            if not {"id", "question", "options", "answer"} <= set(r):
                raise BenchmarkError(f"{self.name}: rows need id, question, options, answer (got {sorted(r)[:8]})")
            opts = r["options"]
            if isinstance(opts, str):
                try:
                    opts = ast.literal_eval(opts) if opts.strip() else []
                except (ValueError, SyntaxError):
                    raise BenchmarkError(f"{self.name}: {r['id']}: options is not a list literal") from None
            qtype = r.get("question_type") or ("multiple-choice" if opts else "open")
            if qtype == "multiple-choice":
                block = "".join(f"({LETTERS[i]}) {o}\n" for i, o in enumerate(opts))
                prompt = f"{r['question']}\n{block}\n{LETTER_ANSWER}"
            else:
                prompt = f"{r['question']}\n{SHORT_ANSWER}"
            parts = str(r["id"]).split("_")
            subject = "_".join(parts[1:-1]) if len(parts) > 2 else str(r.get("subfield", ""))
            samples.append(Sample(str(r["id"]), prompt, _image(r.get("image_1"), r["_dir"]), mmmu_gold(r["answer"]),
                                  {"type": qtype, "options": [str(o) for o in opts], "subject": subject,
                                   "question": str(r["question"])}))
        return samples

    def match(self, samples, answers):
        """lmms-eval's mmmu_val docs keep MMMU's ``id`` (validation_Art_1), so do VLMEvalKit's MMMU rows
        where they carry an ``id`` column; a row without one is matched by question and options."""
        return match_by_choice_key(samples, answers, super().match(samples, answers),
                                   lambda s: choice_key(s.meta["question"], None, s.meta["options"]))

    def score(self, samples, answers, judge=None):
        samples, n_missing = only_answered(samples, answers)
        per_subject: dict[str, list[bool]] = defaultdict(list)
        guessed = 0
        # main_parse_and_eval.py: subjects in alphabetical order, questions in file order, and one
        # generator (random.seed(42) at import) drawn only for the unparsable multiple-choice answers
        rng = random.Random(MMMU_SEED)
        for s in sorted(samples, key=lambda s: s.meta["subject"]):
            text = answers[s.question_id]
            if s.meta["type"] == "multiple-choice":
                letters = list(LETTERS[:len(s.meta["options"])])
                pick, guess = parse_mmmu_choice(text, letters, dict(zip(letters, s.meta["options"])), rng)
                guessed += guess
                gold = s.target if isinstance(s.target, list) else [s.target]
                ok = pick in gold
            else:
                ok = mmmu_open_correct(s.target, parse_mmmu_open(text))
            per_subject[s.meta["subject"]].append(ok)
        hits = [ok for v in per_subject.values() for ok in v]
        acc = sum(hits) / max(1, len(hits))
        return {"headline": {"MMMU-val": pct(acc)}, "accuracy": pct(acc), "n": len(hits), "n_missing": n_missing,
                "random_guesses": guessed,
                "per_subject": {k: pct(sum(v) / len(v)) for k, v in sorted(per_subject.items())},
                "convention": self.convention}
