"""The settings of one synthesis run, filled by the CLI (or by Python callers) in one dataclass.

Everything the runner, the teachers and the sources need travels in `SynthConfig`, so a run can be
described, logged and reproduced from one object rather than from a scattered argparse namespace.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from allava.config import ConfigError


class SynthConfigError(ConfigError):
    """A synthesis setting the user must fix (unknown task, budget without a price, bad --shard...).
    A ConfigError, so the CLI prints it as one line and exits 2."""


class TeacherFatal(SynthConfigError):
    """The endpoint refuses every request (bad key, unknown model, no quota): stop instead of
    rejecting the whole source item by item."""


@dataclass
class SynthConfig:
    task: str
    images: str | None
    out: Path
    teacher: str = "openai"
    base_url: str | None = None
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 16
    rpm: float | None = None
    tpm: float | None = None
    budget_usd: float | None = None
    price_in: float | None = None
    price_out: float | None = None
    prices: Path | None = None
    shard: tuple[int, int] = (0, 1)
    limit: int | None = None
    max_image_side: int = 1024
    image_detail: str = "auto"
    max_tokens: int = 2048
    timeout: float = 120.0
    max_retries: int = 6
    min_short_edge: int = 0
    image_folder: Path | None = None
    cache: Path | None = None  # default: OUT/cache.sqlite
    no_cache: bool = False
    retry_rejects: bool = False
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # task/teacher specific CLI values

    def __post_init__(self) -> None:
        """Out-of-range numbers are refused here, not read as "no limit" or "spend nothing"."""
        rules = {"concurrency": 1, "limit": 1, "max_image_side": 1, "max_tokens": 1, "max_retries": 0,
                 "min_short_edge": 0, "budget_usd": 0, "price_in": 0, "price_out": 0}
        for key, low in rules.items():
            value = getattr(self, key)
            if value is not None and value < low:
                what = "at least 1" if low == 1 else "not negative"
                raise SynthConfigError(f"--{key.replace('_', '-')} must be {what}, got {value:g}")
        for key in ("rpm", "tpm", "timeout"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise SynthConfigError(f"--{key.replace('_', '-')} must be positive, got {value:g}")

    @property
    def cache_path(self) -> Path | None:
        if self.no_cache:
            return None
        return Path(self.cache) if self.cache else Path(self.out) / "cache.sqlite"


def parse_shard(text: str) -> tuple[int, int]:
    """`I/N` with 0 <= I < N (0-based, like torch ranks)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise SynthConfigError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise SynthConfigError(f"--shard {text!r}: need 0 <= I < N (shards are numbered from 0)")
    return i, n
