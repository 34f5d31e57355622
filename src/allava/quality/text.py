"""Text helpers shared by the text operators: words, stop words, and the rule-based task tagger."""
from __future__ import annotations

import re
from typing import Any

WORD = re.compile(r"[a-z][a-z'-]*")
STOP = frozenset("""a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on
once only or other our ours ourselves out over own same she should so some such than that the their theirs
them themselves then there these they this those through to too under until up very was we were what when
where which while who whom why will with would you your yours yourself yourselves image picture photo please
answer question using single word phrase describe tell""".split())  # noqa: SIM905 - a word list reads best as text

# (task, patterns) in priority order; the first match on the first instruction wins.
RULES: list[tuple[str, tuple[str, ...]]] = [
    ("counting", ("how many", "count ", "number of")),
    ("description", ("describe", "description", "caption", "what is happening", "what do you see")),
    ("reasoning", ("why", "explain", "reason", "what might", "infer")),
    ("color", ("colour", "color")),
    ("spatial", ("where", "left", "right", "above", "below", "position", "next to", "between")),
    ("existence", ("is there", "are there", "does the", "do you see")),
    ("recognition", ("what is", "what kind", "which", "what type", "identify")),
]


def content_words(text: str) -> list[str]:
    return [w for w in WORD.findall(text.lower()) if w not in STOP and len(w) > 1]


def rule_task(instruction: str, has_image: bool) -> str:
    low = instruction.lower()
    tag = next((task for task, pats in RULES if any(p in low for p in pats)), "other")
    return tag if has_image else f"text:{tag}"


def meta_task(meta: dict[str, Any], keys: list[str]) -> str | None:
    """Join the record's own labels (e.g. task/ability), skipping uninformative ones like "mixed"."""
    parts: list[str] = []
    for k in keys:
        v = meta.get(k)
        if isinstance(v, str) and v and v != "mixed" and v not in parts:
            parts.append(v)
    return "/".join(parts) or None


def task_of(record, source: str, meta_keys: list[str]) -> str:
    """`meta` (record labels only), `rules`, or `auto` (labels when present, else rules)."""
    if source in ("meta", "auto"):
        t = meta_task(record.meta, meta_keys)
        if t is not None or source == "meta":
            return t or "unlabelled"
    first = record.instructions[0] if record.instructions else ""
    return rule_task(first, record.image is not None)
