"""What a run spends, request by request: budget, price, the spend ledger and per-item accounts.

The ledger (OUT/ledger.jsonl, one line per paid answer, flushed) is the memory of money across
crashes and resumes: the budget of a rerun starts from what earlier runs paid, even for answers
whose item never finished. Per-item accounts travel in a context variable so a reject line can say
what its item cost without threading counters through every task's code.
"""
from __future__ import annotations

import contextvars
import json
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from allava.synth.base import Completion
from allava.synth.budget import Budget, Price


@dataclass
class ItemAccount:
    id: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    bypass_cache: bool = False  # a --retry-rejects item must ask again, not reread its bad answer


CURRENT_ITEM: contextvars.ContextVar[ItemAccount | None] = contextvars.ContextVar("allava_synth_item", default=None)


def read_ledger(path: Path) -> tuple[float, int, int]:
    cost = pt = ct = 0
    if path.exists():
        with open(path, "rb") as fh:
            for raw in fh:
                try:
                    d = json.loads(raw)
                except ValueError:
                    continue  # torn last line after a kill
                cost += d.get("cost_usd", 0.0)
                pt += d.get("prompt_tokens", 0)
                ct += d.get("completion_tokens", 0)
    return cost, pt, ct


class Meter:
    def __init__(self, out: Path, price: Price | None, budget_usd: float | None):
        self.path = Path(out) / "ledger.jsonl"
        spent, self.prev_prompt_tokens, self.prev_completion_tokens = read_ledger(self.path)
        self.prev_cost = spent
        self.price = price
        self.budget = Budget(budget_usd, spent)
        self.requests = 0  # HTTP attempts, retries included
        self.paid = 0  # answers received and billed
        self.cache_hits = 0
        self.retries = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost_usd = 0.0
        self._fh: IO[str] | None = None

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return self.price.cost(prompt_tokens, completion_tokens) if self.price else 0.0

    def record(self, c: Completion, step: str) -> None:
        """Account one answer (paid or cached) to the run and the current item."""
        acct = CURRENT_ITEM.get()
        if acct is not None:
            acct.prompt_tokens += c.usage.prompt_tokens
            acct.completion_tokens += c.usage.completion_tokens
            acct.cost_usd += c.cost_usd
        if c.cached:
            self.cache_hits += 1
            return
        self.paid += 1
        self.prompt_tokens += c.usage.prompt_tokens
        self.completion_tokens += c.usage.completion_tokens
        self.cost_usd += c.cost_usd
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
        self._fh.write(json.dumps({"id": acct.id if acct else None, "step": step,
                                   "prompt_tokens": c.usage.prompt_tokens,
                                   "completion_tokens": c.usage.completion_tokens,
                                   "cost_usd": c.cost_usd}) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
