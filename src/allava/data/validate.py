"""Record validation and the ``allava data validate`` command.

Lenient where the public ALLaVA / LLaVA files are (int ids, ``<image>`` at the start or end of
the first human turn, text-only records mixed in), strict about what breaks training: bad role
order, empty turns, missing or stray ``<image>`` markers, missing/corrupt/escaping images.
Each reason has a short stable *kind* (e.g. ``"corrupt_image"``) used for the summary counts.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from allava.data.records import DataError, Problem, image_path, is_jsonl, iter_raw, normalize_id

ROLES = ("human", "gpt")
MARKER = "<image>"
CHECK_MODES = ("exists", "decode", "none")
Reason = tuple[str, str]  # (kind, message)


def _type(value: Any) -> str:
    return type(value).__name__


def _has_image(record: dict) -> bool:
    raw = record.get("image")
    return not (raw is None or (isinstance(raw, str) and not raw.strip()))


def _check_id(record: dict) -> list[Reason]:
    if "id" not in record:
        return [("bad_id", "missing id")]
    rid = record["id"]
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        return [("bad_id", f"id must be a string or int (got {_type(rid)})")]
    if isinstance(rid, str) and not rid.strip():
        return [("bad_id", "empty id")]
    return []


def _check_turn(i: int, turn: Any) -> list[Reason]:
    if not isinstance(turn, dict):
        return [("bad_turn", f"turn {i} is not an object (got {_type(turn)})")]
    out: list[Reason] = []
    if "from" not in turn:
        out.append(("bad_turn", f"turn {i} has no 'from'"))
    elif turn["from"] not in ROLES:
        out.append(("unknown_role", f"turn {i} has unknown role {turn['from']!r}"))
    value = turn.get("value")
    if "value" not in turn:
        out.append(("bad_turn", f"turn {i} has no 'value'"))
    elif not isinstance(value, str):
        out.append(("bad_turn", f"turn {i} has no string 'value' (got {_type(value)})"))
    elif not value.strip():
        out.append(("empty_turn", f"turn {i} ({turn.get('from')}) is empty"))
    return out


def _check_order(roles: list[Any]) -> list[Reason]:
    """Roles must alternate human/gpt from the start and end on gpt (the answer we train on)."""
    out: list[Reason] = []
    for i, role in enumerate(roles):
        expected = ROLES[i % 2]
        if role in ROLES and role != expected:
            out.append(("role_order", f"wrong role order at turn {i}: expected {expected}, found {role}"))
            break
    if roles[-1] == "human":
        out.append(("no_answer", "ends with a human turn (no answer to train on)"))
    return out


def _check_markers(convs: list[Any], has_image: bool) -> list[Reason]:
    """Image records need exactly one ``<image>``, anywhere in the first human turn."""
    hits = [
        i
        for i, t in enumerate(convs)
        if isinstance(t, dict) and isinstance(t.get("value"), str)
        for _ in range(t["value"].count(MARKER))
    ]
    if not has_image:
        return [("marker_in_text_only", f"{MARKER} marker in a text-only record")] if hits else []
    if not hits:
        return [("missing_marker", f"missing {MARKER} marker in the first human turn")]
    first_human = next((i for i, t in enumerate(convs) if isinstance(t, dict) and t.get("from") == "human"), None)
    out: list[Reason] = []
    if len(hits) > 1:
        out.append(("extra_marker", f"{MARKER} marker appears {len(hits)} times (expected once)"))
    outside = [i for i in hits if i != first_human]
    if outside:
        out.append(("misplaced_marker", f"{MARKER} marker outside the first human turn (turn {outside[0]})"))
    return out


def _check_conversations(record: dict) -> list[Reason]:
    if "conversations" not in record:
        return [("bad_conversations", "missing conversations")]
    convs = record["conversations"]
    if not isinstance(convs, list):
        return [("bad_conversations", f"conversations is not a list (got {_type(convs)})")]
    if not convs:
        return [("bad_conversations", "empty conversations")]
    out = [r for i, turn in enumerate(convs) for r in _check_turn(i, turn)]
    out += _check_order([t.get("from") if isinstance(t, dict) else None for t in convs])
    return out + _check_markers(convs, _has_image(record))


def decode_error(path: Path) -> str | None:
    """Short reason why PIL cannot fully decode ``path``, or None when it can.

    ``verify()`` catches structural damage cheaply but leaves the image unusable, so a reopened
    file is ``load()``-ed as well to catch truncated pixel data.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            im.load()
    except Exception as e:  # any decoder failure means the training loader would crash
        text = str(e).replace(f"'{path}'", "").strip().splitlines()  # PIL repeats the full path
        return (text[0] if text else _type(e))[:100]
    return None


def _check_image(record: dict, image_folder: str | Path | None, check_images: str) -> list[Reason]:
    raw = record.get("image")
    if raw is not None and not isinstance(raw, str):
        return [("bad_image_field", f"image must be a string path (got {_type(raw)})")]
    try:
        path = image_path(record, image_folder, follow_symlinks=check_images != "none")
    except DataError as e:
        return [("unsafe_image_path", str(e))]
    if path is None or image_folder is None or check_images == "none":
        return []
    if not path.exists():
        return [("image_not_found", f"image not found: {raw}")]
    if not path.is_file():
        return [("image_not_found", f"image is not a file: {raw}")]
    if check_images == "decode":
        err = decode_error(path)
        if err is not None:
            return [("corrupt_image", f"corrupt image: {raw} ({err})")]
    return []


def check_record(record: Any, image_folder: str | Path | None, check_images: str = "decode") -> list[Reason]:
    """Like :func:`validate_record` but returns ``(kind, message)`` pairs."""
    if check_images not in CHECK_MODES:
        raise ValueError(f"check_images must be one of {CHECK_MODES}, got {check_images!r}")
    if not isinstance(record, dict):
        return [("not_object", "not a JSON object")]
    return _check_id(record) + _check_conversations(record) + _check_image(record, image_folder, check_images)


def validate_record(record: Any, image_folder: str | Path | None, check_images: str = "decode") -> list[str]:
    """Reasons why ``record`` cannot be trained on; empty when valid.

    ``check_images``: ``"decode"`` (open and fully decode), ``"exists"``, or ``"none"`` (lexical
    path safety only, no filesystem access). ``image_folder=None`` also means lexical checks only.
    Duplicate ids need the whole file: see :func:`validate_file`.
    """
    return [message for _, message in check_record(record, image_folder, check_images)]


def scan_file(
    path: str | Path, image_folder: str | Path | None = None, check_images: str = "decode"
) -> Iterator[tuple[dict | None, Problem | None]]:
    """Stream ``(record, None)`` for valid records (id normalized) and ``(None, problem)`` otherwise.

    ``image_folder`` defaults to the data file's folder. The first record with an id wins;
    later ones with the same id are flagged as duplicates.
    """
    path = Path(path)
    rows = iter_raw(path)  # DataError for a missing file (on first iteration: this is a generator)
    folder = Path(image_folder) if image_folder is not None else path.parent
    jsonl = is_jsonl(path)
    seen: dict[str, str] = {}
    for pos, record, problem in rows:
        if problem is not None:
            yield None, problem
            continue
        where = f"line:{pos}" if jsonl else f"item:{pos}"
        reasons = check_record(record, folder, check_images)
        rid = None if any(kind == "bad_id" for kind, _ in reasons) else str(record["id"])
        if rid is not None:
            if rid in seen:
                reasons.append(("duplicate_id", f"duplicate id (first at {seen[rid]})"))
            else:
                seen[rid] = where
        if reasons:
            kinds = tuple(dict.fromkeys(kind for kind, _ in reasons))
            message = "; ".join(message for _, message in reasons)
            yield None, Problem(rid or where, message, pos if jsonl else None, kinds)
        else:
            yield normalize_id(record), None


@dataclass
class ValidationReport:
    """Outcome of :func:`validate_file`; ``reason_counts`` counts invalid records per reason kind."""

    total: int = 0
    valid: int = 0
    invalid: int = 0
    problems: list[Problem] = field(default_factory=list)
    reason_counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        return f"checked {self.total} records: {self.valid} valid, {self.invalid} invalid"

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "valid": self.valid,
            "invalid": self.invalid,
            "reason_counts": self.reason_counts,
            "problems": [asdict(p) for p in self.problems],
        }


def validate_file(
    path: str | Path, image_folder: str | Path | None = None, check_images: str = "decode"
) -> ValidationReport:
    """Validate a whole file, keeping only problems in memory (images are decoded one at a time)."""
    report = ValidationReport()
    counts: Counter[str] = Counter()
    for _, problem in scan_file(path, image_folder, check_images):
        report.total += 1
        if problem is None:
            report.valid += 1
            continue
        report.invalid += 1
        report.problems.append(problem)
        counts.update(problem.kinds)
    report.reason_counts = dict(counts.most_common())
    return report


def add_validate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``validate FILE [--image-folder DIR] [--no-image-check] [--json OUT]``."""
    p = subparsers.add_parser(
        "validate",
        help="check a LLaVA conversation file (JSON array or JSONL) before training",
        description="Report every record that would break training. Exit 0: all valid, 1: invalid records, 2: error.",
    )
    p.add_argument("file", metavar="FILE", help="data file (.json array or .jsonl)")
    p.add_argument(
        "--image-folder", metavar="DIR", default=None, help="folder image paths are relative to (default: FILE's folder)"
    )
    p.add_argument(
        "--no-image-check",
        action="store_true",
        help="skip image existence/decoding/symlink checks (absolute and .. paths are still refused)",
    )
    p.add_argument("--json", metavar="OUT", default=None, help="also write the summary and problems as JSON")
    p.set_defaults(func=run_validate)
    return p


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def run_validate(args: argparse.Namespace) -> int:
    """Run the command; returns the exit code (0 all valid, 1 invalid records, 2 error)."""
    image_folder = getattr(args, "image_folder", None)
    check = "none" if getattr(args, "no_image_check", False) else "decode"
    if image_folder is not None and check != "none" and not Path(image_folder).is_dir():
        return _error(f"{image_folder}: image folder not found")
    try:
        report = validate_file(args.file, image_folder, check)
    except DataError as e:
        return _error(str(e))
    if report.total == 0:  # "checked 0 records ... 0 invalid" with exit 0 read as a pass
        return _error(f"{args.file}: holds no records (an empty array or file): nothing to train on")
    for problem in report.problems:
        print(f"{problem.record_id}: {problem.reason}")
    print(report.summary())
    for kind, n in report.reason_counts.items():
        print(f"  {kind}: {n}")
    if image_folder is None and report.reason_counts.get("image_not_found"):
        print(f"hint: images were looked up under {Path(args.file).parent}; pass --image-folder DIR")
    out = getattr(args, "json", None)
    if out:
        try:
            summary = {"file": str(args.file), **report.to_dict()}
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            Path(out).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        except OSError as e:
            return _error(f"{out}: {e.strerror}")
    return 0 if report.invalid == 0 else 1
