"""Stream QC records from LLaVA JSON/JSONL files or synthesis `records.jsonl` runs.

A synthesis line (`{"id", "task", "output", ...}`) is converted by the task that wrote it
(`allava.synth.export`'s rule), so QC sees exactly the LLaVA records training would see; each
gets `meta.split` and `meta.source_id`. Structurally broken entries become `Problem`s (counted,
reported with id and reason) and the stream goes on.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from allava.data.records import DataError, Problem, image_path, iter_raw, normalize_id
from allava.data.validate import check_record
from allava.quality.base import QCRecord


def is_synthesis_line(obj: dict[str, Any]) -> bool:
    return "conversations" not in obj and "task" in obj and "output" in obj


def default_image_folder(path: str | Path) -> Path:
    """The data file's folder, or its `images/` subfolder when there is one (the quickstart world layout)."""
    parent = Path(path).resolve().parent
    return parent / "images" if (parent / "images").is_dir() else parent


SAMPLE = 200  # image records looked at to choose (or check) the image folder


def resolve_image_folder(path: str | Path, given: str | Path | None) -> Path:
    """The folder image paths are relative to, checked against the data before anything is computed.

    Without `--image-folder`, the file's folder and its `images/` are both tried on the first image
    records and the one where they exist wins: a synthesis `records.jsonl` writes `images/x.png`
    relative to its run folder, the quickstart world `x.png` relative to `images/`. When none of
    them is found, QC would remove every record as undecodable: that is refused here instead.
    """
    from allava.config import ConfigError

    if given is not None:
        folder = Path(given)
        if not folder.is_dir():
            raise ConfigError(f"--image-folder {given}: folder does not exist" if not folder.exists()
                              else f"--image-folder {given}: not a folder")
        candidates = [folder]
    else:
        parent = Path(path).resolve().parent
        candidates = [parent] + ([parent / "images"] if (parent / "images").is_dir() else [])
    images: list[str] = []
    for rec, _ in iter_qc_records(path, candidates[0], check_images="none"):
        if rec is not None and isinstance(rec.image, str) and rec.image.strip():
            images.append(rec.image)
            if len(images) >= SAMPLE:
                break
    if not images:
        return candidates[-1] if given is None and len(candidates) > 1 and not images else candidates[0]
    found = [sum((c / p).is_file() for p in images) for c in candidates]
    best = max(range(len(candidates)), key=lambda i: found[i])
    if found[best] == 0:
        where = " or ".join(str(c) for c in candidates)
        fix = "check --image-folder" if given is not None else "pass --image-folder DIR"
        raise ConfigError(f"{path}: none of the first {len(images)} images found under {where} "
                          f"(e.g. {images[0]}); {fix}")
    return candidates[best]


def content_hash(obj: dict[str, Any], image_file: Path | None) -> str:
    """What the stats depend on: the record's content and its image file's identity (size, mtime)."""
    h = hashlib.sha256(json.dumps({"image": obj.get("image"), "conversations": obj.get("conversations"),
                                   "meta": obj.get("meta")}, sort_keys=True, ensure_ascii=False,
                                  default=str).encode())
    if image_file is not None:
        try:
            st = os.stat(image_file)
            h.update(f"|{st.st_size}|{st.st_mtime_ns}".encode())
        except OSError:
            h.update(b"|missing")
    return h.hexdigest()[:32]


def _to_qc(obj: dict[str, Any], image_folder: Path) -> QCRecord:
    img = image_path(obj, image_folder)
    return QCRecord(id=str(obj["id"]), conversations=obj["conversations"], image=obj.get("image"),
                    image_file=img, meta=obj.get("meta") or {}, raw=obj, hash=content_hash(obj, img))


def _synthesis_records(obj: dict[str, Any], tasks: dict[str, Any]) -> list[dict[str, Any]]:
    import allava.synth.tasks  # noqa: F401 - registers the built-in tasks
    from allava.synth.base import TASKS

    name = obj["task"]
    if name not in TASKS:
        raise ValueError(f"written by unknown task {name!r}")
    task = tasks.setdefault(name, TASKS[name]())
    out = []
    for split, recs in task.to_llava(obj).items():
        for rec in recs:
            rec = dict(rec)
            rec["meta"] = {**(rec.get("meta") or {}), "split": split, "source_id": str(obj["id"])}
            out.append(rec)
    return out


def iter_qc_records(path: str | Path, image_folder: str | Path | None = None, check_images: str = "exists"
                    ) -> Iterator[tuple[QCRecord | None, Problem | None]]:
    """Yield `(record, None)` or `(None, problem)` for every entry, in file order. A record whose
    image is missing is a problem of its own kind (`image_not_found`), not an undecodable image."""
    folder = Path(image_folder) if image_folder is not None else default_image_folder(path)
    tasks: dict[str, Any] = {}
    for pos, obj, problem in iter_raw(path):
        if problem is not None:
            yield None, problem
            continue
        assert obj is not None
        line = pos if isinstance(pos, int) else None
        rid = str(obj.get("id", f"line:{pos}"))
        if is_synthesis_line(obj):
            try:
                objs = _synthesis_records(obj, tasks)
            except Exception as e:  # noqa: BLE001 - a broken line must not stop the run: report it and go on
                yield None, Problem(rid, f"cannot convert synthesis line: {e}", line, ("bad_synthesis",))
                continue
        else:
            objs = [obj]
        for rec in objs:
            normalize_id(rec)
            reasons = check_record(rec, folder, check_images)
            if reasons:
                yield None, Problem(str(rec.get("id", rid)), "; ".join(m for _, m in reasons), line,
                                    tuple(k for k, _ in reasons))
                continue
            try:
                yield _to_qc(rec, folder), None
            except DataError as e:
                yield None, Problem(str(rec["id"]), str(e), line, ("bad_image_path",))
