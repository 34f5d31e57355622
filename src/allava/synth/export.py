"""`allava synth export RUN --to llava`: turn a run's records.jsonl into LLaVA training files.

Each line is converted by the task that wrote it (`TASKS[line["task"]]().to_llava`), so the
conversion lives beside the prompt and parser it depends on. Files per split:
captions.jsonl (stage 1), instructions.jsonl (stage 2) and text.jsonl (text-only, mixed into
both). Records carry their provenance under `meta` (teacher, prompt version, raw text, usage).
Image paths are written as the run recorded them (relative to the source's image folder, or to
the run folder for generated images), so the default `out_dir` is the run folder itself.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

from allava.synth.base import TASKS, Task
from allava.synth.outputs import iter_lines

log = logging.getLogger(__name__)

SPLIT_FILES = {"caption": "captions.jsonl", "instruction": "instructions.jsonl", "text": "text.jsonl"}
FORMATS = ("llava",)


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    """Output lines (a torn last line of a killed run is skipped with a warning)."""
    return (line for line in iter_lines(path) if "task" in line)


def export(run_dir: str | Path, out_dir: str | Path | None = None, to: str = "llava") -> dict[str, int]:
    """Write one LLaVA JSONL file per split; returns the number of records per split.

    Streams the input (flat memory); each file is written to a temporary name and renamed, so an
    interrupted export never leaves a half-written training file. A repeated id is exported once.
    """
    import allava.synth.tasks  # noqa: F401 - registers the built-in tasks

    if to not in FORMATS:
        raise ValueError(f"unknown export format {to!r}; choose from {FORMATS}")
    run_dir = Path(run_dir)
    src = run_dir / "records.jsonl"
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no records to export (run `allava synth TASK --out {run_dir}` first)")
    out = Path(out_dir) if out_dir is not None else run_dir
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out}: is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    tmp = {s: out / (f + ".tmp") for s, f in SPLIT_FILES.items()}
    try:
        with ExitStack() as stack:
            files = {s: stack.enter_context(open(p, "w", encoding="utf-8")) for s, p in tmp.items()}
            counts = _convert(src, files)
    except BaseException:
        for p in tmp.values():
            p.unlink(missing_ok=True)
        raise
    for split, name in SPLIT_FILES.items():
        os.replace(tmp[split], out / name)
    return counts


def _convert(src: Path, files: dict[str, IO[str]]) -> dict[str, int]:
    """Each line through its task's `to_llava`; the first line with an id wins."""
    counts = dict.fromkeys(SPLIT_FILES, 0)
    tasks: dict[str, Task] = {}
    seen: set[str] = set()
    for line in _lines(src):
        if str(line["id"]) in seen:
            continue
        seen.add(str(line["id"]))
        name = line["task"]
        if name not in tasks:
            if name not in TASKS:
                raise ValueError(f"{src}: line {line['id']!r} was written by unknown task {name!r} "
                                 f"(known: {sorted(TASKS)}); import the module that registers it")
            tasks[name] = TASKS[name]()
        for split, records in tasks[name].to_llava(line).items():
            if split not in files:
                raise ValueError(f"task {name!r} returned unknown split {split!r}")
            for rec in records:
                files[split].write(json.dumps(rec, ensure_ascii=False) + "\n")
                counts[split] += 1
    return counts
