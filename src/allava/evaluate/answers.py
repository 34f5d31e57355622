"""Answer files from other tools, recognised by content (never by file name).

- LLaVA ``model_vqa*``: JSONL lines with ``question_id`` and ``text`` (ours too; ``round_id`` for MMBench);
- lmms-eval ``--log_samples``: JSONL lines with ``doc_id``, ``doc`` and ``filtered_resps``;
- VLMEvalKit predictions: ``.xlsx`` (a zip) or tab-separated text whose header has ``prediction``;
- MMMU's official ``{id: response}`` JSON.

Each reader yields `Answer`s; the benchmark (`Benchmark.match`) maps them onto its own question ids,
since every tool numbers questions its own way.
"""
from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from allava.evaluate.benchmarks.base import BenchmarkError

ID_FIELDS = ("question_id", "id", "index", "questionId", "pid")


@dataclass
class Answer:
    text: str
    qid: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # the rest of the row (lmms-eval: its doc)


def _first_text(v: Any) -> str:
    """lmms-eval's ``filtered_resps`` is a string, or a (nested) one-element list of them."""
    while isinstance(v, list) and v:
        v = v[0]
    return "" if v is None or v == [] else str(v)


def _row_id(row: dict[str, Any]) -> str | None:
    for k in ID_FIELDS:
        v = row.get(k)
        if isinstance(v, float) and v.is_integer():  # spreadsheet cells
            v = int(v)
        if v is not None and str(v) != "":
            return str(v)
    return None


def read_answers(path: str | Path) -> tuple[list[Answer], str]:
    """(answers, format name) for any supported answer file."""
    path = Path(path)
    if path.is_dir():
        raise BenchmarkError(f"{path}: is a folder; --predictions takes the answer file (e.g. its answers.jsonl)")
    if not path.is_file():
        raise BenchmarkError(f"{path}: no such predictions file")
    raw = path.read_bytes()
    if raw[:4] == b"PK\x03\x04":
        return _vlmevalkit(_xlsx_rows(path), path), "vlmevalkit"
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BenchmarkError(f"{path}: not UTF-8 text, nor an .xlsx workbook") from None
    head = text.lstrip()[:1]
    if head in ("[", "{"):
        try:
            whole = json.loads(text)
        except ValueError:
            whole = None  # JSONL: one object per line
        one_line = isinstance(whole, dict) and ({"question_id", "text"} <= set(whole) or "doc_id" in whole)
        if isinstance(whole, dict) and not one_line and all(isinstance(v, str) for v in whole.values()):
            return [Answer(v, str(k)) for k, v in whole.items()], "mmmu"
        if isinstance(whole, list):
            return _jsonl_rows(whole, path)
        return _jsonl_rows(_parse_jsonl(text, path), path)
    first = text.splitlines()[0] if text.strip() else ""
    sep = "\t" if "\t" in first else ","
    if "prediction" in [c.strip() for c in first.split(sep)]:
        csv.field_size_limit(sys.maxsize)
        return _vlmevalkit(list(csv.DictReader(io.StringIO(text), delimiter=sep)), path), "vlmevalkit"
    raise BenchmarkError(f"{path}: not an answer file (expected LLaVA JSONL with question_id and text, lmms-eval "
                         "--log_samples JSONL, or a VLMEvalKit .xlsx/.tsv with a prediction column)")


def _parse_jsonl(text: str, path: Path) -> list[Any]:
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise BenchmarkError(f"{path}:{n}: not valid JSON") from None
    return rows


def _jsonl_rows(rows: list[Any], path: Path) -> tuple[list[Answer], str]:
    out: list[Answer] = []
    kind = ""
    for n, row in enumerate(rows, 1):
        if isinstance(row, dict) and "doc_id" in row and ("filtered_resps" in row or "resps" in row):
            doc = row.get("doc") if isinstance(row.get("doc"), dict) else {}
            text = _first_text(row["filtered_resps"] if "filtered_resps" in row else row["resps"])
            out.append(Answer(text, _row_id(doc), {**doc, "doc_id": row["doc_id"], "input": row.get("input")}))
            kind = "lmms-eval"
        elif isinstance(row, dict) and "question_id" in row and "text" in row:
            qid = str(row["question_id"])
            if "round_id" in row:  # LLaVA model_vqa_mmbench --all-rounds: one line per rotation
                from allava.evaluate.benchmarks.mmbench import OFFSET

                q, r = int(row["question_id"]), int(row["round_id"])
                qid = str(q if r == 0 else q % OFFSET + r * OFFSET)  # a legacy TSV's copy (index >= 1e6) is round 0
            out.append(Answer(str(row["text"]), qid, row))
            kind = kind or "llava"
        else:
            raise BenchmarkError(f"{path}:{n}: expected a JSON line with question_id and text (LLaVA) or doc_id "
                                 "and filtered_resps (lmms-eval --log_samples)")
    return out, kind or "llava"


def _vlmevalkit(rows: list[dict[str, Any]], path: Path) -> list[Answer]:
    if not rows or "prediction" not in rows[0]:
        raise BenchmarkError(f"{path}: a VLMEvalKit prediction file needs a 'prediction' column")
    return [Answer("" if r.get("prediction") is None else str(r["prediction"]), _row_id(r), r) for r in rows]


def _xlsx_rows(path: Path) -> list[dict[str, Any]]:
    try:
        import openpyxl
    except ImportError:
        raise BenchmarkError(f"{path}: reading VLMEvalKit .xlsx files needs openpyxl "
                             "(pip install 'allava[eval]')") from None
    try:
        ws = openpyxl.load_workbook(path, read_only=True, data_only=True).worksheets[0]
    except Exception as e:  # openpyxl raises several unrelated types for a broken workbook
        raise BenchmarkError(f"{path}: not a readable .xlsx workbook ({type(e).__name__})") from None
    it = ws.iter_rows(values_only=True)
    header = [str(h) if h is not None else "" for h in next(it, [])]
    return [dict(zip(header, r)) for r in it if any(v is not None for v in r)]


def read_predictions(path: str | Path) -> dict[str, str]:
    """question_id -> text, ids as the file has them (no benchmark mapping)."""
    return {a.qid: a.text for a in read_answers(path)[0] if a.qid is not None}
