"""Reading and writing LLaVA conversation data (JSON arrays and JSONL).

Public ALLaVA / LLaVA files are JSON arrays of ``{"id", "image"?, "conversations": [...]}``;
our own outputs are JSONL so they can be streamed and appended. Both load through
:func:`iter_raw`, which reports unreadable entries as :class:`Problem` instead of raising,
so one bad line never hides the rest of a file.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO, Iterable, Iterator

CheckImages = str  # "exists" | "decode" | "none"


class DataError(Exception):
    """A data problem the CLI reports as a plain message (no traceback)."""


@dataclass
class Problem:
    """Why one entry of a data file is unusable.

    ``line`` is the JSONL line number, or ``None`` for entries of a JSON array.
    ``kinds`` are short stable keys (e.g. ``"corrupt_image"``) used for counting.
    """

    record_id: str
    reason: str
    line: int | None
    kinds: tuple[str, ...] = ()


def is_jsonl(path: str | Path) -> bool:
    """True when ``path`` holds one object per line; sniffs files without a known suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return True
    if suffix == ".json":
        return False
    with open(path, "rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return not head.startswith(b"[")


def _check_path(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: permission denied")


def _json_msg(e: json.JSONDecodeError) -> str:
    """The decoder's message without its own trailing "at" ("Invalid control character at")."""
    msg = e.msg.rstrip()
    return msg[:-3].rstrip() if msg.endswith(" at") else msg


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict | None, Problem | None]]:
    # Binary lines + json.loads(bytes): flat memory, BOM handled, bad UTF-8 becomes a Problem.
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.rstrip(b"\r\n"))  # the newline would move an error to "column 1" of the next line
            except json.JSONDecodeError as e:
                yield n, None, Problem(f"line:{n}", f"invalid JSON: {_json_msg(e)} at column {e.colno}", n,
                                       ("invalid_json",))
                continue
            except ValueError as e:  # UnicodeDecodeError
                yield n, None, Problem(f"line:{n}", f"invalid JSON: {e}", n, ("invalid_json",))
                continue
            if not isinstance(obj, dict):
                yield n, None, Problem(f"line:{n}", "not a JSON object", n, ("not_object",))
            else:
                yield n, obj, None


def _iter_array(path: Path) -> Iterator[tuple[int, dict | None, Problem | None]]:
    try:
        data = json.loads(path.read_bytes())
    except json.JSONDecodeError as e:
        reason = f"invalid JSON: {_json_msg(e)} at line {e.lineno} column {e.colno}"
        yield 0, None, Problem("file", reason, e.lineno, ("invalid_json",))
        return
    except ValueError as e:
        yield 0, None, Problem("file", f"invalid JSON: {e}", None, ("invalid_json",))
        return
    if not isinstance(data, list):
        reason = f"top level is a {type(data).__name__}, expected a JSON array (use .jsonl for one object per line)"
        yield 0, None, Problem("file", reason, None, ("not_array",))
        return
    for i, obj in enumerate(data):
        if isinstance(obj, dict):
            yield i, obj, None
        else:
            yield i, None, Problem(f"item:{i}", "not a JSON object", None, ("not_object",))


def iter_raw(path: str | Path) -> Iterator[tuple[int, dict | None, Problem | None]]:
    """Iterate ``(position, record, problem)`` for every entry; exactly one of record/problem is set.

    Position is the 1-based line number for JSONL and the 0-based index for a JSON array.
    JSONL is streamed; a JSON array has to be parsed whole (the stdlib has no streaming parser).
    A missing file raises :class:`DataError` here, at call time, not on first ``next()``.
    """
    path = Path(path)
    _check_path(path)
    try:
        jsonl = is_jsonl(path)
    except OSError as e:
        raise DataError(f"{path}: {e.strerror}") from e
    return _iter_jsonl(path) if jsonl else _iter_array(path)


def normalize_id(record: dict) -> dict:
    """Public files sometimes use int ids; everything downstream keys on strings."""
    rid = record.get("id")
    if isinstance(rid, int) and not isinstance(rid, bool):
        record["id"] = str(rid)
    return record


def read_records(path: str | Path) -> list[dict]:
    """Read every record of a trusted file (ids normalized), without content validation.

    Raises :class:`DataError` on the first unreadable entry rather than dropping it silently;
    use :func:`load_records` to keep going and collect problems.
    """
    records = []
    for _, record, problem in iter_raw(path):
        if problem is not None:
            raise DataError(f"{path}: {problem.record_id}: {problem.reason}")
        records.append(normalize_id(record))
    return records


def load_records(
    path: str | Path,
    image_folder: str | Path | None = None,
    check_images: CheckImages = "exists",
) -> tuple[list[dict], list[Problem]]:
    """Return ``(valid records, problems)`` after full validation (see ``allava.data.validate``).

    ``image_folder`` defaults to the data file's folder. Ids of returned records are strings.
    """
    from allava.data.validate import scan_file  # validate imports this module

    records: list[dict] = []
    problems: list[Problem] = []
    for record, problem in scan_file(path, image_folder, check_images):
        if problem is not None:
            problems.append(problem)
        else:
            records.append(record)
    return records, problems


@lru_cache(maxsize=64)
def _real_folder(folder: str) -> str:
    """Resolved image folder, cached: it is looked up once per record over large files."""
    return os.path.realpath(folder)


def image_path(record: dict, image_folder: str | Path | None, follow_symlinks: bool = True) -> Path | None:
    """Resolve a record's image under ``image_folder``; ``None`` for text-only records.

    Raises :class:`DataError` when the path escapes the folder (absolute path elsewhere, ``..``,
    or a symlink pointing outside): training must never read files it was not given.
    ``follow_symlinks=False`` skips the filesystem (lexical checks only, for quick scans).
    Without a folder only the lexical checks apply and the relative path is returned.
    """
    raw = record.get("image")
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if not isinstance(raw, str):
        raise DataError(f"image must be a string path (got {type(raw).__name__})")
    if image_folder is None:
        norm = os.path.normpath(raw)
        if os.path.isabs(raw) or norm == ".." or norm.startswith(".." + os.sep):
            raise DataError(f"image path escapes image folder: {raw}")
        return Path(raw)
    if follow_symlinks:
        folder = _real_folder(os.path.abspath(image_folder))
        resolved = os.path.realpath(os.path.join(folder, raw))  # follows symlinks, collapses ".."
    else:
        folder = os.path.abspath(image_folder)
        resolved = os.path.normpath(os.path.join(folder, raw))
    if resolved != folder and not resolved.startswith(folder.rstrip(os.sep) + os.sep):
        raise DataError(f"image path escapes image folder: {raw}")
    return Path(resolved)


def append_jsonl(fh: IO[str], record: dict) -> None:
    """Append one record as a single JSON line to an open text file."""
    fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write records atomically (temp file + rename) so readers never see half a file; returns count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    count = 0
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; data files are meant to be shared
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for record in records:
                append_jsonl(fh, record)
                count += 1
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count
