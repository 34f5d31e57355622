"""The stats cache: one SQLite file, values keyed by (op key, record or dataset hash).

SQLite because it is in the standard library, survives a killed run (each batch is committed) and
looks up 100K keys without loading them all. Thresholds are never part of a key.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any


class StatsCache:
    def __init__(self, path: str | Path | None):
        """`path=None` keeps the cache in memory (nothing reused across runs)."""
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(":memory:" if path is None else str(path))
        self.db.execute("CREATE TABLE IF NOT EXISTS stats (op TEXT, key TEXT, value TEXT, PRIMARY KEY (op, key))")
        self.db.commit()

    def get_many(self, op: str, keys: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        uniq = list(dict.fromkeys(keys))
        for i in range(0, len(uniq), 500):
            part = uniq[i:i + 500]
            q = f"SELECT key, value FROM stats WHERE op = ? AND key IN ({','.join('?' * len(part))})"
            for k, v in self.db.execute(q, [op, *part]):
                found[k] = json.loads(v)
        return found

    def put_many(self, op: str, items: dict[str, Any]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO stats VALUES (?, ?, ?)",
                            [(op, k, json.dumps(v, default=float)) for k, v in items.items()])
        self.db.commit()

    def close(self) -> None:
        self.db.close()
