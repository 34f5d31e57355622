"""What every benchmark provides: samples read from its released files, and its anchor's metric.

A benchmark never generates: the runner turns each `Sample` into a question for the model, caches
the answers, and hands `score` a plain ``{question_id: text}`` map, so the same scoring code runs
on a fresh run and on a predictions file made by any other tool (LLaVA's ``model_vqa*`` scripts).
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from allava.data.records import DataError

if TYPE_CHECKING:
    from allava.evaluate.answers import Answer
    from allava.evaluate.judge import Judge

SHORT_ANSWER = "Answer the question using a single word or phrase."  # LLaVA-1.5's answer-format suffixes
LETTER_ANSWER = "Answer with the option's letter from the given choices directly."
LETTER_ANSWER_CN = "请直接回答选项字母。"  # model_vqa_mmbench.py --lang cn (scripts/v1_5/eval/mmbench_cn.sh)
LETTERS = "ABCDEFGHIJ"


class BenchmarkError(DataError):
    """A benchmark's files are missing or not in the released format: one line for the user."""


@dataclass
class Sample:
    """One question as the model sees it. `prompt` is the human turn without the ``<image>`` marker
    (the runner adds it); `target` is what the metric compares against; `meta` carries the fields
    the metric groups by (category, split, rotation, ...)."""

    question_id: str
    prompt: str
    image: Any = None  # path, encoded bytes, or a PIL image; None for text-only questions
    target: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


class Benchmark(ABC):
    name: ClassVar[str]
    convention: ClassVar[str]  # what the score means where anchors differ; copied into metrics.json
    max_new_tokens: ClassVar[int] = 128  # LLaVA's model_vqa default; open-ended benchmarks raise it
    needs_judge: ClassVar[bool] = False
    data_help: ClassVar[str] = ""  # what --data must point at, for error messages

    @abstractmethod
    def load(self, path: Path) -> list[Sample]:
        """Read the released files under `path`; raise BenchmarkError when they are not there."""

    @abstractmethod
    def score(self, samples: list[Sample], answers: dict[str, str], judge: Judge | None = None) -> dict[str, Any]:
        """Metrics over the samples that have an answer. Must contain ``headline`` ({label: value},
        the number a paper table shows) and ``convention``."""

    def match(self, samples: list[Sample], answers: list[Answer]) -> dict[str, str]:
        """Map another tool's answers onto our question ids. The default matches the answer's id (or
        any id-like field of its row) exactly, then a LLaVA answer's id through LLaVA's question file
        when that was --data; benchmarks whose tools number questions differently (POPE, MME,
        TextVQA) override it."""
        by_id = {s.question_id: s for s in samples}
        llava = getattr(self, "llava_ids", {})  # set when --data is LLaVA's question file
        out: dict[str, str] = {}
        for a in answers:
            for cand in [a.qid, *(a.fields.get(k) for k in ("question_id", "id", "index", "questionId", "pid"))]:
                if cand is not None and str(cand) in by_id and _same_question(a.fields, by_id[str(cand)]):
                    out[str(cand)] = a.text
                    break
            else:
                if a.qid in llava and not {"doc_id", "prediction"} & set(a.fields):  # a LLaVA answer line
                    out[llava[a.qid]] = a.text
        return out

    def submission(self, samples: list[Sample], answers: dict[str, str]) -> tuple[str, Any] | None:
        """(file name, JSON content) of the upload an evaluation server scores, for benchmarks whose
        answers are not public (VizWiz test); None when there is none to write."""
        return None

    strata_keys: ClassVar[tuple[str, ...]] = ("ability", "category", "l2-category", "subtask", "split", "subject",
                                              "question_type", "type")

    def stratum(self, samples: list[Sample]) -> str | None:
        """The meta field a `--limit` subset interleaves over: the first of `strata_keys` that splits
        the samples into more than one group (None: the benchmark has no such field)."""
        for key in self.strata_keys:
            values = {str(s.meta.get(key)) for s in samples[:5000] if key in s.meta}
            if 1 < len(values) <= 200:
                return key
        return None

    def limit(self, samples: list[Sample], n: int) -> list[Sample]:
        """`n` questions interleaved over the benchmark's groups (ability, category, ...), round-robin
        in file order, so a subset covers every group instead of the first one; file order without
        groups. A benchmark whose questions span several samples overrides it to keep them whole."""
        key = self.stratum(samples)
        if key is None or n >= len(samples):
            return samples[:n]
        groups: dict[str, list[Sample]] = {}
        for s in samples:
            groups.setdefault(str(s.meta.get(key)), []).append(s)
        picked: list[Sample] = []
        queues = [list(reversed(g)) for g in groups.values()]
        while len(picked) < n:
            for q in queues:
                if q and len(picked) < n:
                    picked.append(q.pop())
        chosen = {id(s) for s in picked}
        return [s for s in samples if id(s) in chosen]  # file order, so caches and predictions line up

    def missing(self, what: str | Path) -> BenchmarkError:
        return BenchmarkError(f"{self.name}: {what} not found; --data must be {self.data_help}")


def _same_question(fields: dict[str, Any], sample: Sample) -> bool:
    """False only for a VLMEvalKit row (it has ``prediction``) whose question differs from the sample's:
    its ``index`` is often a row counter, which would otherwise score the answer against another question."""
    if "prediction" not in fields or blank(fields.get("question")) or sample.meta.get("question") is None:
        return True
    return question_key(fields["question"]) == question_key(sample.meta["question"])


def pct(x: float) -> float:
    """Papers report percentages with one or two decimals. For display only: totals and means are
    computed from unrounded values and rounded once (a sum of rounded parts drifts, MME 1249.99)."""
    return round(100.0 * x, 2)


def question_key(text: Any) -> str:
    """A question as every tool can be matched on: no image marker, answer-format suffix, or
    MME's 'Please answer yes or no.' (lmms-eval drops it); lowercased."""
    t = str(text or "").replace("<image>", "")
    for suffix in (SHORT_ANSWER, LETTER_ANSWER, LETTER_ANSWER_CN, "Please answer yes or no."):
        t = t.replace(suffix, "")
    return " ".join(t.split()).lower()


def blank(v: Any) -> bool:
    """An empty cell as spreadsheets and pandas write it (None, NaN, 'nan', '')."""
    return v is None or (isinstance(v, float) and v != v) or str(v).strip() in ("", "nan", "NaN", "None")


def choice_key(question: Any, hint: Any, options: list[Any]) -> tuple:
    """A multiple-choice question as tools that keep no id of ours still show it: question, hint and
    option texts, normalised (a blank hint is no hint)."""
    return (question_key(question), "" if blank(hint) else question_key(hint),
            tuple(" ".join(str(o).split()).lower() for o in options))


def answer_choice_key(fields: dict[str, Any]) -> tuple | None:
    """`choice_key` of a foreign answer row: lmms-eval's doc (``choices``/``options`` as a list or a
    list literal) or a VLMEvalKit row (option columns A, B, ...); None without a question."""
    if blank(fields.get("question")):
        return None
    opts = fields.get("choices", fields.get("options"))
    if isinstance(opts, str):
        import ast

        try:
            opts = ast.literal_eval(opts)
        except (ValueError, SyntaxError):
            opts = None
    if not isinstance(opts, (list, tuple)):
        opts = [fields[c] for c in LETTERS if c in fields and not blank(fields[c])]
    return choice_key(fields["question"], fields.get("hint"), list(opts))


def match_by_choice_key(samples: list[Sample], answers: list[Answer], out: dict[str, str],
                        sample_key: Callable[[Sample], tuple]) -> dict[str, str]:
    """Add the answers whose `answer_choice_key` equals a not yet answered sample's key; questions
    that read alike pair in file order (every tool keeps the benchmark's order)."""
    free: dict[tuple, list[str]] = {}
    for s in samples:
        if s.question_id not in out:
            free.setdefault(sample_key(s), []).append(s.question_id)
    for a in answers:
        key = answer_choice_key(a.fields)
        if key is not None and free.get(key):
            out[free[key].pop(0)] = a.text
    return out


def read_json(path: Path, bench: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchmarkError(f"{bench}: {path}: no such file") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise BenchmarkError(f"{bench}: {path}: not valid JSON ({e})") from None


def read_jsonl(path: Path, bench: str) -> list[dict[str, Any]]:
    """Accepts JSONL and, since several releases ship ``.json`` files that are really JSONL (POPE),
    also a JSON array."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchmarkError(f"{bench}: {path}: no such file") from None
    if text.lstrip().startswith("["):
        return read_json(path, bench)
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                raise BenchmarkError(f"{bench}: {path}:{n}: not valid JSON ({e})") from None
    return rows


def need(row: dict[str, Any], keys: tuple[str, ...], where: str, bench: str) -> None:
    absent = [k for k in keys if k not in row]
    if absent:
        raise BenchmarkError(f"{bench}: {where}: missing field(s) {', '.join(absent)} (is this the right file?)")


def first_existing(*paths: Path) -> Path | None:
    return next((p for p in paths if p.exists()), None)


def only_answered(samples: list[Sample], answers: dict[str, str]) -> tuple[list[Sample], int]:
    kept = [s for s in samples if s.question_id in answers]
    return kept, len(samples) - len(kept)


def choices_block(options: list[str], style: str = "dot") -> str:
    """LLaVA lists options as ``A. text`` lines; MMMU's official prompt uses ``(A) text``."""
    fmt = "{}. {}" if style == "dot" else "({}) {}"
    return "\n".join(fmt.format(LETTERS[i], o) for i, o in enumerate(options))
