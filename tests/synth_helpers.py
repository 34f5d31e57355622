"""Shared by the synth engine tests: a tiny text-only task, run helpers and output checks."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from allava.synth.base import (
    TASKS,
    Item,
    ParseError,
    Request,
    Task,
    Teacher,
    output_line,
    register_task,
)


class EchoTask(Task):
    """Text-only, one call per item; needs the <answer> section of the fake server's A.1 reply."""

    name = "test-echo"
    prompt_version = "test-echo/1"
    needs_image = False

    async def run(self, item: Item, teacher: Teacher) -> dict[str, Any]:
        done = await teacher.complete(Request([{"role": "user", "content": f"Say something about {item.id}."}],
                                              self.name, item, params={"max_tokens": 256}))
        if done.finish_reason == "length":
            raise ParseError("truncated output", done.text)
        m = re.search(r"<start of answer>(.*?)<end of answer>", done.text, flags=re.DOTALL)
        if not m:
            raise ParseError("missing section 'answer'", done.text)
        return output_line(self, item, [done], {"answer": m.group(1).strip()}, done.text)

    def to_llava(self, line: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        return {}


if "test-echo" not in TASKS:
    register_task(EchoTask)


def write_source(path: Path, n: int, prefix: str = "t") -> Path:
    path.write_text("".join(json.dumps({"id": f"{prefix}{i:05d}", "question": f"q{i}"}) + "\n" for i in range(n)))
    return path


def ids_of(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()]


def check_exactly_once(out: Path, expected: set[str]) -> tuple[list[str], list[str]]:
    """Every expected id in exactly one of records/rejects, none twice, nothing else."""
    recs, rejs = ids_of(out / "records.jsonl"), ids_of(out / "rejects.jsonl")
    both = recs + rejs
    assert len(both) == len(set(both)), "an id was written twice"
    assert set(both) == expected, f"missing {sorted(expected - set(both))[:5]} extra {sorted(set(both) - expected)[:5]}"
    return recs, rejs


def synth_args(task: str, images: str, out: Path, url: str | None, *extra: str) -> list[str]:
    args = [task, "--images", images, "--out", str(out), "--no-progress"]
    if url:
        args += ["--base-url", url]
    return args + list(extra)
