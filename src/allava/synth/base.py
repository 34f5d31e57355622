"""The contracts between the synthesis runner, its teachers and its tasks.

distilabel's split, kept small: a *source* yields `Item`s, a *task* turns one item into one or
more teacher `Request`s and parses the answers, a *teacher* answers requests. The runner owns
everything that must hold across all of them: resume, rate limits, budget, cache, rejects.
The raw teacher text is always kept beside the parsed fields, so a parser fix never costs a call.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


@dataclass
class Item:
    """One unit of work. `image` is the path as it will appear in the output record (relative to
    `image_root` when there is one); `fields` carries task inputs (question, answer, caption, boxes,
    ability, and for procedural images the scene graph under "scene")."""

    id: str
    image: str | None = None
    image_root: Path | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    def image_file(self) -> Path | None:
        if self.image is None:
            return None
        p = Path(self.image)
        return p if p.is_absolute() or self.image_root is None else Path(self.image_root) / p


@dataclass
class Request:
    """One teacher call. `messages` are OpenAI chat messages in which an image is given as the part
    {"type": "image", "path": "<file>"}; the openai teacher turns it into a base64 data URL.
    `task`, `step` and `item` let an offline teacher (the scene-graph teacher) answer without pixels."""

    messages: list[dict[str, Any]]
    task: str
    item: Item
    step: str = "main"
    params: dict[str, Any] = field(default_factory=dict)  # temperature, max_tokens, ...


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Completion:
    text: str
    model: str
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    cached: bool = False
    finish_reason: str | None = None


class SynthError(Exception):
    """An item that cannot be finished: it goes to rejects.jsonl with `reason` (and `raw` when a
    teacher answered). The run goes on."""

    def __init__(self, reason: str, raw: str | list[str] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


class ParseError(SynthError):
    """The teacher answered but the answer lacks what the task needs (missing section, truncated)."""


class BudgetExhausted(Exception):
    """Sending the next request could exceed --budget-usd: the run stops cleanly, the item stays pending."""


class Teacher(ABC):
    name: ClassVar[str]

    @abstractmethod
    async def complete(self, request: Request) -> Completion:
        """Answer one request, or raise SynthError (gave up after retries) / BudgetExhausted."""

    async def aclose(self) -> None:
        """Release connections."""


class Task(ABC):
    """A synthesis task: its prompt(s), parser and conversion to LLaVA training records."""

    name: ClassVar[str]
    prompt_version: ClassVar[str]
    # fields an item must carry, each entry a tuple of alternatives: (("captions", "scene"),) = either;
    # checked on the source's first item before anything runs, so a source the task cannot use is one error
    requires: ClassVar[tuple[tuple[str, ...], ...]] = ()
    needs_image: ClassVar[bool] = True

    def bind(self, out_dir: Path, args: Any) -> None:
        """Receive the run folder and the CLI options once, before the first item (e.g. where a
        task that renders images writes them, or which response types to ask for)."""

    @abstractmethod
    async def run(self, item: Item, teacher: Teacher) -> dict[str, Any]:
        """Make the teacher calls for one item and return its output line (see `output_line`).
        Raise ParseError/SynthError with the raw text when the answer cannot be used."""

    @abstractmethod
    def to_llava(self, line: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """Convert one output line to LLaVA records per split: "caption" (stage 1),
        "instruction" (stage 2) and "text" (text-only, mixed into both stages)."""


def output_line(task: Task, item: Item, completions: list[Completion], parsed: dict[str, Any],
                raw: str | list[str]) -> dict[str, Any]:
    """The one line written to records.jsonl per finished item: provenance beside the parsed fields."""
    line: dict[str, Any] = {"id": item.id, "task": task.name, "prompt_version": task.prompt_version}
    if item.image is not None:
        line["image"] = item.image
    line.update({
        "teacher": completions[0].model if completions else None,
        "raw": raw,
        "usage": {"prompt_tokens": sum(c.usage.prompt_tokens for c in completions),
                  "completion_tokens": sum(c.usage.completion_tokens for c in completions)},
        "cost_usd": sum(c.cost_usd for c in completions),
        "cached": bool(completions) and all(c.cached for c in completions),
        "input": {k: v for k, v in item.fields.items() if k != "scene"},
        "output": parsed,
    })
    return line


TASKS: dict[str, type[Task]] = {}
TEACHERS: dict[str, type[Teacher]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    TASKS[cls.name] = cls
    return cls


def register_teacher(cls: type[Teacher]) -> type[Teacher]:
    TEACHERS[cls.name] = cls
    return cls
