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
