"""Request-level answer cache: a rerun, a resumed run or a changed downstream step never pays twice.

Keyed by a fingerprint of (model, messages, parameters) in which every image is replaced by the
SHA-256 of its file content and the resize it was sent at: renaming or moving image files keeps
hits, changing pixels misses. sqlite in WAL mode: each answer is committed on its own, so a
SIGKILL loses at most the answer being written, never the file.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from allava.synth.base import Completion, Usage

_SCHEMA = """CREATE TABLE IF NOT EXISTS answers (
  key TEXT PRIMARY KEY, model TEXT, text TEXT, finish_reason TEXT,
  prompt_tokens INTEGER, completion_tokens INTEGER, cost_usd REAL)"""


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(model: str, messages: list[dict[str, Any]], params: dict[str, Any],
                image_hashes: dict[str, str]) -> str:
    """Stable key; `image_hashes` maps each image path in `messages` to its content hash."""
    def canon(part: Any) -> Any:
        if isinstance(part, dict) and part.get("type") == "image":
            return {"type": "image", "sha256": image_hashes[str(part["path"])]}
        if isinstance(part, dict):
            return {k: canon(v) for k, v in part.items()}
        if isinstance(part, list):
            return [canon(v) for v in part]
        return part

    blob = json.dumps({"model": model, "messages": canon(messages), "params": params},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class AnswerCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process kills
        self.db.execute(_SCHEMA)
        self.hits = 0

    def get(self, key: str) -> Completion | None:
        row = self.db.execute("SELECT model, text, finish_reason, prompt_tokens, completion_tokens "
                              "FROM answers WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        self.hits += 1
        model, text, finish, pt, ct = row
        return Completion(text=text, model=model, usage=Usage(pt, ct), cost_usd=0.0, cached=True,
                          finish_reason=finish)

    def put(self, key: str, c: Completion) -> None:
        self.db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (key, c.model, c.text, c.finish_reason, c.usage.prompt_tokens,
                         c.usage.completion_tokens, c.cost_usd))

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self.db.close()
