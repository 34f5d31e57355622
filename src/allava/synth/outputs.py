"""The run folder's append-only files: records.jsonl, rejects.jsonl.

One JSON line per finished item, written with a single write and flushed, so a killed process
leaves at most one torn final line, which `repair` cuts away on the next start. The ids already
in either file are what a rerun skips.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)


def repair(path: Path) -> int:
    """Truncate a torn final line (no trailing newline); returns the bytes removed."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return 0
        pos, step = size, 1 << 16
        keep = 0
        while pos > 0:  # scan back to the last newline
            start = max(0, pos - step)
            fh.seek(start)
            chunk = fh.read(pos - start)
            i = chunk.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            pos = start
        fh.truncate(keep)
    log.warning("%s: removed a torn last line (%d bytes) left by an interrupted run", path, size - keep)
    return size - keep


def _parse(path: Path, n: int, raw: bytes) -> dict[str, Any] | None:
    """One output line as a dict with an id, or None (blank, torn or foreign lines are skipped)."""
    if not raw.strip():
        return None
    try:
        d = json.loads(raw)
    except ValueError:
        log.warning("%s:%d: unreadable line skipped", path, n)
        return None
    return d if isinstance(d, dict) and "id" in d else None


def iter_lines(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            d = _parse(path, n, raw)
            if d is not None:
                yield d


_DECODER = json.JSONDecoder()
_ID_PREFIX = b'{"id": '


def iter_ids(path: Path) -> Iterator[str]:
    """The ids of a records/rejects file. Our lines start with `{"id": `, so only that value is
    decoded (a 700K-line records file holds gigabytes of raw teacher text); others fall back to json."""
    if not path.exists():
        return
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            if raw.startswith(_ID_PREFIX):
                try:
                    value, _ = _DECODER.raw_decode(raw[len(_ID_PREFIX):len(_ID_PREFIX) + 4096].decode("utf-8", "replace"))
                    yield str(value)
                    continue
                except ValueError:
                    pass
            d = _parse(path, n, raw)
            if d is not None:
                yield str(d["id"])


class AppendFile:
    def __init__(self, path: Path):
        self.path = path
        self.count = 0
        self._fh: IO[str] = open(path, "a", encoding="utf-8")

    def write(self, line: dict[str, Any]) -> None:
        self._fh.write(json.dumps(line, ensure_ascii=False) + "\n")
        self._fh.flush()
        self.count += 1

    def close(self) -> None:
        self._fh.close()


class RunFiles:
    """records + rejects of one run folder, with the set of ids already finished."""

    def __init__(self, out: Path, retry_rejects: bool = False):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.records_path, self.rejects_path = self.out / "records.jsonl", self.out / "rejects.jsonl"
        for p in (self.records_path, self.rejects_path):
            repair(p)
        self.retry_ids: set[str] = set()
        if retry_rejects and self.rejects_path.exists():
            self._drop_rejects()
        self.done: set[str] = set()
        self.n_records = self.n_rejects = 0
        for rid in iter_ids(self.records_path):
            if rid not in self.done:
                self.done.add(rid)
                self.n_records += 1
        for rid in iter_ids(self.rejects_path):
            if rid not in self.done:
                self.done.add(rid)
                self.n_rejects += 1
        self.records = AppendFile(self.records_path)
        self.rejects = AppendFile(self.rejects_path)

    def _drop_rejects(self) -> None:
        """Keep the old rejects in rejects.retried.jsonl (history), then empty rejects.jsonl."""
        data = self.rejects_path.read_bytes()
        with open(self.out / "rejects.retried.jsonl", "ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        self.retry_ids = set(iter_ids(self.rejects_path))
        tmp = self.rejects_path.with_suffix(".tmp")
        tmp.write_bytes(b"")
        os.replace(tmp, self.rejects_path)

    def add_record(self, line: dict[str, Any]) -> bool:
        if line["id"] in self.done:
            return False
        self.records.write(line)
        self.done.add(line["id"])
        self.n_records += 1
        return True

    def add_reject(self, line: dict[str, Any]) -> bool:
        if line["id"] in self.done:
            return False
        self.rejects.write(line)
        self.done.add(line["id"])
        self.n_rejects += 1
        return True

    def close(self) -> None:
        self.records.close()
        self.rejects.close()
