"""Ask a teacher one prompt per record, k samples each: what every teacher-backed QC op shares.

The judge (principle 2), the task tagger (3) and the difficulty score (7) all need the same thing:
any teacher of the synthesis registry (`openai` for any OpenAI-compatible endpoint, `scene` for the
offline scene-graph teacher), with the synthesis client's retries, rate limits and request cache.
One `Asker` lives as long as its op, so its ledger (and so `budget_usd`) covers the whole QC run,
not one batch. The stats themselves are cached by the pipeline; `answer_cache` additionally keeps
every raw answer, so changing `k` or a parser never pays twice for the same request.
"""
from __future__ import annotations

import asyncio
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allava.quality.base import OpSettings, QCRecord, no_cache

Messages = list[dict[str, Any]]


@dataclass
class TeacherSettings(OpSettings):
    """Which teacher answers and how it is reached (the `allava synth` options of the same names)."""

    teacher: str = "openai"  # openai (any OpenAI-compatible endpoint) | scene (offline, needs scene graphs)
    model: str = "gpt-4o-mini"
    base_url: str | None = None
    api_key_env: str = no_cache("OPENAI_API_KEY")
    k: int = 1  # samples per record
    temperature: float = 0.0
    max_tokens: int = 16
    concurrency: int = no_cache(8)
    budget_usd: float | None = no_cache(None)  # hard ceiling over the op's whole run (needs a known price)
    max_retries: int = no_cache(6)
    timeout: float = no_cache(120.0)
    answer_cache: str | None = no_cache(None)  # sqlite file of raw answers (openai teacher)
    batch_size: int = no_cache(16)


def record_item(r: QCRecord) -> Any:
    """The synthesis `Item` of a record: its image, and its meta (where the scene teacher finds the
    scene graph or seed of procedurally rendered images)."""
    from allava.synth.base import Item

    fields: dict[str, Any] = {"meta": r.meta}
    if isinstance(r.meta.get("scene"), dict):
        fields["scene"] = r.meta["scene"]
    return Item(r.id, image=str(r.image_file) if r.image_file is not None else None, fields=fields)


class Asker:
    """`ask(task, prompts)` -> k answers (None where the teacher gave up) per (record, messages)."""

    def __init__(self, settings: TeacherSettings, op: str):
        self.settings, self.op = settings, op
        self._dir: Path | None = None

    def ask(self, task: str, prompts: list[tuple[QCRecord, Messages]]) -> list[list[str | None]]:
        if not prompts:
            return []
        return asyncio.run(self._ask(task, prompts))

    def _teacher(self) -> Any:
        import allava.synth.teachers  # noqa: F401 - registers the built-in teachers
        from allava.config import ConfigError
        from allava.synth.base import TEACHERS

        s = self.settings
        if s.teacher not in TEACHERS:
            raise ConfigError(f"{self.op}: unknown teacher {s.teacher!r}; known: {sorted(TEACHERS)}")
        if s.teacher != "openai":
            return TEACHERS[s.teacher]()
        from allava.synth.budget import resolve_price
        from allava.synth.cache import AnswerCache
        from allava.synth.config import SynthConfig
        from allava.synth.meter import Meter

        if self._dir is None:  # one ledger per op run: the budget spans every batch
            self._dir = Path(tempfile.mkdtemp(prefix=f"allava-qc-{self.op}-"))
            weakref.finalize(self, shutil.rmtree, self._dir, True)  # also when `close` is never called
        cfg = SynthConfig(task=f"qc-{self.op}", images=None, out=self._dir, model=s.model, base_url=s.base_url,
                          api_key_env=s.api_key_env, concurrency=s.concurrency, max_tokens=s.max_tokens,
                          budget_usd=s.budget_usd, max_retries=s.max_retries, timeout=s.timeout, progress=False)
        price = resolve_price(s.model, None, None, None, need=s.budget_usd is not None)
        cache = AnswerCache(s.answer_cache) if s.answer_cache else None
        return TEACHERS["openai"](cfg, Meter(self._dir, price, s.budget_usd), cache)

    async def _ask(self, task: str, prompts: list[tuple[QCRecord, Messages]]) -> list[list[str | None]]:
        from allava.config import ConfigError
        from allava.synth.base import BudgetExhausted, Request, SynthError

        s = self.settings
        teacher = self._teacher()
        sem = asyncio.Semaphore(max(1, s.concurrency))

        async def one(r: QCRecord, messages: Messages, sample: int) -> str | None:
            req = Request(messages, task=task, item=record_item(r), step=f"{self.op}-{sample}",
                          params={"temperature": s.temperature, "seed": sample})
            async with sem:
                try:
                    return (await teacher.complete(req)).text
                except SynthError:
                    return None

        try:
            return [list(v) for v in await asyncio.gather(
                *(asyncio.gather(*(one(r, m, j) for j in range(s.k))) for r, m in prompts))]
        except BudgetExhausted as e:  # stop, like synth: what is cached so far stays, a rerun goes on
            raise ConfigError(f"{self.op}: {e} (raise budget_usd and rerun: finished batches are cached)") from None
        finally:
            await teacher.aclose()
            cache = getattr(teacher, "cache", None)
            if cache is not None:
                cache.close()
            meter = getattr(teacher, "meter", None)
            if meter is not None:
                meter.close()

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
