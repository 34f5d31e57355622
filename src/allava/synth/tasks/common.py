"""What every task shares: the `bind` hook, one checked teacher call, tagged-section parsing and
LLaVA record building with provenance. Kept here so each task module is only its prompt and parser."""
from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from allava.synth.base import (
    Completion,
    Item,
    ParseError,
    Request,
    SynthError,
    Task,
    Teacher,
)


class SynthTask(Task):
    """A Task that remembers the run folder given to `bind` (stablellava writes its images there)."""

    out_dir: Path | None = None

    def bind(self, out_dir: Any, args: Any = None) -> None:
        self.out_dir = Path(out_dir)


def opt(args: Any, name: str, default: Any) -> Any:
    """`args.name` when the CLI namespace has it and it is set, else the default."""
    value = getattr(args, name, None) if args is not None else None
    return default if value is None else value


def user(text: str, image: str | None = None) -> dict[str, Any]:
    """A user message; with an image, in the `{"type": "image", "path"}` part the teachers understand."""
    if image is None:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "text", "text": text}, {"type": "image", "path": image}]}


def image_of(task: Task, item: Item) -> str:
    path = item.image_file()
    if path is None:
        raise SynthError(f"{task.name} needs an image and item {item.id!r} has none")
    return str(path)


async def call(teacher: Teacher, request: Request) -> Completion:
    """One teacher call; a truncated or empty answer is a ParseError carrying the raw text."""
    done = await teacher.complete(request)
    if done.finish_reason == "length":
        raise ParseError(f"truncated output (finish_reason=length) at step {request.step!r}", done.text)
    if not (done.text or "").strip():
        raise ParseError(f"empty answer at step {request.step!r}", done.text)
    return done


def sections(raw: str, names: Sequence[str]) -> dict[str, str]:
    """`<start of NAME> ... <end of NAME>` blocks (case and spacing tolerant). The reason of the
    ParseError names the first missing or empty section, and says when it looks truncated."""
    out: dict[str, str] = {}
    for name in names:
        tag = r"\s+".join(map(re.escape, name.split()))
        m = re.search(rf"<\s*start of {tag}\s*>(.*?)<\s*end of {tag}\s*>", raw, flags=re.DOTALL | re.IGNORECASE)
        if m is None:
            if re.search(rf"<\s*start of {tag}\s*>", raw, flags=re.IGNORECASE):
                raise ParseError(f"section {name!r} is not closed (truncated output?)", raw)
            raise ParseError(f"missing section {name!r}", raw)
        text = m.group(1).strip()
        if not text:
            raise ParseError(f"empty section {name!r}", raw)
        out[name] = text
    return out


_NUMBER = re.compile(r"^\s*(?:[-*•]|\(?\d{1,2}[.):]|q\d{1,2}[.):]|question\s*\d{1,2}\s*[.):])\s*", re.IGNORECASE)


def strip_number(line: str) -> str:
    """'1. How ...' / 'Q2: How ...' / '- How ...' -> 'How ...'."""
    return _NUMBER.sub("", line, count=1).strip()


def numbered_list(text: str) -> list[str]:
    """Items of a list written one per line, or inline as '1. ... 2. ...'."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) == 1 and re.search(r"(?:^|\s)2[.)]\s", text):
        lines = re.split(r"(?:^|\s)(?=\d{1,2}[.)]\s)", text.strip())
    return [s for s in (strip_number(ln) for ln in lines) if s]


def pick(options: Sequence[str], key: str) -> str:
    """Deterministic choice from a stable hash of `key` (Python's hash() is salted per process)."""
    return options[zlib.crc32(key.encode("utf-8")) % len(options)]


def meta(line: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Provenance carried into every exported record; `raw` is the teacher text, unchanged. A procedural
    image's seed comes along, so the offline scene judge (`allava qc`, `llm_judge` teacher: scene) can
    rebuild its scene graph."""
    seed = (line.get("input") or {}).get("seed")
    return {"source_id": line["id"], "task": line["task"], "teacher": line.get("teacher"),
            "prompt_version": line["prompt_version"], "raw": line.get("raw"), "usage": line.get("usage"),
            "cost_usd": line.get("cost_usd"), **({"seed": seed} if isinstance(seed, int) else {}), **extra}


def record(line: dict[str, Any], suffix: str, turns: Sequence[tuple[str, str]], image: bool = True,
           **extra: Any) -> dict[str, Any]:
    """A LLaVA record from (human, gpt) pairs; `<image>` goes before the first human turn."""
    has_image = image and line.get("image") is not None
    convs: list[dict[str, str]] = []
    for i, (human, gpt) in enumerate(turns):
        human = human.replace("<image>", "").strip()  # a source's own marker: exactly one is ours
        convs.append({"from": "human", "value": ("<image>\n" if i == 0 and has_image else "") + human})
        convs.append({"from": "gpt", "value": gpt.strip()})
    rec: dict[str, Any] = {"id": f"{line['id']}-{suffix}"}
    if has_image:
        rec["image"] = line["image"]
    rec["conversations"] = convs
    rec["meta"] = meta(line, **extra)
    return rec


_TURN = re.compile(r"^\s*\**\s*(question|answer|response|user|gpt|assistant|human)\s*\**\s*:\s*\**",
                   re.IGNORECASE | re.MULTILINE)
_ASK = {"question", "user", "human"}


def parse_turns(raw: str) -> list[tuple[str, str]]:
    """'Question:/===/Answer:' (or 'User:/GPT:', 'Question:/Response:') blocks -> (question, answer) pairs, in order."""
    marks = list(_TURN.finditer(raw))
    if not marks:
        raise ParseError("no 'Question:'/'Answer:' turns found", raw)
    pairs: list[tuple[str, str]] = []
    pending: str | None = None
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(raw)
        text = re.sub(r"(?m)^\s*===+\s*$", "", raw[m.end():end]).strip()
        if not text:
            raise ParseError(f"empty {m.group(1)} turn {len(pairs) + 1}", raw)
        if m.group(1).lower() in _ASK:
            if pending is not None:
                raise ParseError(f"question {len(pairs) + 1} has no answer", raw)
            pending = text
        else:
            if pending is None:
                raise ParseError(f"answer {len(pairs) + 1} has no question", raw)
            pairs.append((pending, text))
            pending = None
    if pending is not None:
        raise ParseError(f"the last question ({len(pairs) + 1}) has no answer (truncated output?)", raw)
    return pairs


def approx_tokens(text: str) -> int:
    return len(text.split())


def message_text(messages: list[dict[str, Any]]) -> str:
    """All text of a chat, images left out (for approximate token counts)."""
    parts: list[str] = []
    for m in messages:
        c = m.get("content")
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, list):
            parts += [p.get("text", "") for p in c if isinstance(p, dict) and p.get("type") == "text"]
    return "\n".join(parts)
