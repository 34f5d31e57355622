"""Prices and the hard cost ceiling.

Before a request is sent its worst-case cost is *reserved*: prompt tokens bounded by the UTF-8
byte count of the text (a byte-level BPE never makes more tokens than bytes) plus the provider's
image-token formula, and the full `max_tokens` for the answer. After the answer the reservation is
replaced by the real cost. A reservation that does not fit waits for in-flight requests to settle;
if it still does not fit with nothing in flight, the run stops. So spend never exceeds the budget,
and at most one request's estimate is left unused.
"""
from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from allava.config import SHIPPED_CONFIGS
from allava.synth.base import BudgetExhausted
from allava.synth.config import SynthConfigError

PER_MESSAGE_TOKENS = 4  # chat-format overhead per message (role, separators)
REPLY_PRIMING_TOKENS = 3


@dataclass
class Price:
    """USD per 1M tokens, and how the model counts image tokens."""

    input: float
    output: float
    image: dict[str, Any] = field(default_factory=lambda: {"tiles": {"base": 85, "per_tile": 170}})

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1e6

    def image_tokens(self, width: int, height: int, detail: str = "auto") -> int:
        """OpenAI's published formulas; "auto" is counted as "high" to stay an upper bound."""
        if "patches" in self.image:
            patches = min(1536, math.ceil(width / 32) * math.ceil(height / 32))
            return math.ceil(patches * float(self.image["patches"].get("multiplier", 1.0)))
        tiles = self.image.get("tiles", {"base": 85, "per_tile": 170})
        base, per_tile = int(tiles["base"]), int(tiles["per_tile"])
        if detail == "low":
            return base
        scale = min(1.0, 2048 / max(width, height))
        w, h = width * scale, height * scale
        scale = min(1.0, 768 / min(w, h))
        w, h = w * scale, h * scale
        return base + per_tile * math.ceil(w / 512) * math.ceil(h / 512)


def default_prices_path() -> Path | None:
    """configs/prices.yaml of the working directory, else of the source checkout."""
    for p in (Path.cwd() / "configs" / "prices.yaml", SHIPPED_CONFIGS / "prices.yaml"):
        if p.is_file():
            return p
    return None


def load_prices(path: str | Path | None = None) -> dict[str, Price]:
    path = Path(path) if path else default_prices_path()
    if path is None:
        return {}
    if not path.is_file():
        raise SynthConfigError(f"{path}: no such price table")
    raw = yaml.safe_load(path.read_text()) or {}
    out = {}
    for name, entry in (raw.get("models") or {}).items():
        try:
            out[str(name)] = Price(float(entry["input"]), float(entry["output"]),
                                   **({"image": entry["image"]} if "image" in entry else {}))
        except (KeyError, TypeError, ValueError) as e:
            raise SynthConfigError(f"{path}: model {name}: needs numeric input and output prices ({e})") from None
    return out


def lookup_price(model: str, prices: dict[str, Price]) -> Price | None:
    if model in prices:
        return prices[model]
    keys = [k for k in prices if model.startswith(k + "-")]
    return prices[max(keys, key=len)] if keys else None


def resolve_price(model: str, price_in: float | None, price_out: float | None,
                  prices_path: str | Path | None, need: bool) -> Price | None:
    """The price for `model`: --price-in/--price-out override the table. A budget without a price
    is refused: spending blind is exactly what a budget exists to prevent."""
    if (price_in is None) != (price_out is None):
        raise SynthConfigError("give both --price-in and --price-out (USD per 1M tokens)")
    table_price = lookup_price(model, load_prices(prices_path))
    if price_in is not None:
        image = table_price.image if table_price else Price(0, 0).image
        return Price(float(price_in), float(price_out), image)
    if table_price is None and need:
        raise SynthConfigError(
            f"--budget-usd needs a price for model {model!r}, which is not in the price table; "
            "give --price-in and --price-out (USD per 1M tokens)")
    return table_price


def text_token_bound(messages: list[dict[str, Any]]) -> int:
    """Upper bound of the prompt's text tokens (images counted separately)."""
    total = REPLY_PRIMING_TOKENS
    for m in messages:
        total += PER_MESSAGE_TOKENS
        content = m.get("content")
        parts = [content] if isinstance(content, str) else (content or [])
        for part in parts:
            if isinstance(part, str):
                total += len(part.encode("utf-8"))
            elif isinstance(part, dict) and part.get("type") == "text":
                total += len(str(part.get("text", "")).encode("utf-8"))
    return total


class Budget:
    """Hard ceiling in USD over everything this output folder has paid (`spent` starts from the
    ledger of earlier runs). `limit=None` only accounts."""

    def __init__(self, limit: float | None, spent: float = 0.0):
        self.limit = limit
        self.spent = spent
        self.reserved = 0.0
        self.in_flight = 0
        self.exhausted = False
        self._cond: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    async def reserve(self, estimate: float) -> None:
        if self.limit is None:
            self.reserved += estimate
            self.in_flight += 1
            return
        cond = self._condition()
        async with cond:
            while True:
                if self.exhausted:
                    raise BudgetExhausted(self.message())
                if self.spent + self.reserved + estimate <= self.limit + 1e-12:
                    self.reserved += estimate
                    self.in_flight += 1
                    return
                if self.in_flight == 0:
                    self.exhausted = True
                    raise BudgetExhausted(self.message())
                await cond.wait()  # an in-flight request may settle below its estimate

    async def settle(self, estimate: float, actual: float) -> None:
        """Replace a reservation by the real cost (0 for a request that failed unbilled)."""
        self.reserved -= estimate
        self.in_flight -= 1
        self.spent += actual
        if self._cond is not None:
            async with self._cond:
                self._cond.notify_all()

    def message(self) -> str:
        return f"budget of ${self.limit:.4f} reached (${self.spent:.4f} spent)"
