"""Run one benchmark against one checkpoint: generate what is not cached, then score.

Answers go to an append-only JSONL cache, one flushed line per answer, keyed by (benchmark,
question id, model fingerprint, generation settings, prompt): an interrupted run resumes where it
stopped, a changed checkpoint or prompt never reuses stale answers, and a torn last line after a
kill is skipped.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from allava.evaluate.benchmarks import Benchmark, BenchmarkError, Sample
from allava.evaluate.generate import Question
from allava.synth.outputs import AppendFile, repair

AnswerFn = Callable[[list[Question], int], list[str]]
CACHE_FILE = "answers_cache.jsonl"
_SMALL = 64 << 20


def model_fingerprint(model_dir: str | Path) -> str:
    """Hash of a checkpoint folder: config/tokenizer/recipe files in full, weight files by name, size
    and their first and last MiB (hashing 14 GB of weights per run would cost more than it saves)."""
    root = Path(model_dir)
    if not root.is_dir():
        raise BenchmarkError(f"{root}: no such model folder")
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue
        size = f.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        with open(f, "rb") as fh:
            if size <= _SMALL:
                h.update(fh.read())
            else:
                h.update(fh.read(1 << 20))
                fh.seek(-(1 << 20), 2)
                h.update(fh.read())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int
    do_sample: bool = False  # greedy, like every anchor's evaluation
    dtype: str | None = None


def answer_key(benchmark: str, sample: Sample, model_fp: str, settings: GenerationSettings) -> str:
    blob = json.dumps([benchmark, sample.question_id, model_fp, asdict(settings), sample.prompt],
                      ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class AnswerStore:
    """Append-only JSONL of {key, question_id, text}; every answer is flushed as it is written."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.answers: dict[str, str] = {}
        if self.path.exists():
            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        row = json.loads(line)
                        self.answers[row["key"]] = row["text"]
                    except (ValueError, KeyError, TypeError):
                        continue  # torn last line after a kill
        self._fh: AppendFile | None = None

    def __contains__(self, key: str) -> bool:
        return key in self.answers

    def put(self, key: str, question_id: str, text: str) -> None:
        if self._fh is None:  # opened on the first new answer: a fully cached rerun never writes
            self.path.parent.mkdir(parents=True, exist_ok=True)
            repair(self.path)  # cut a torn last line so the next answer starts on its own
            self._fh = AppendFile(self.path)
        self._fh.write({"key": key, "question_id": question_id, "text": text})
        self.answers[key] = text

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def to_question(s: Sample) -> Question:
    """The LLaVA convention: the image marker opens the first human turn."""
    value = f"<image>\n{s.prompt}" if s.image is not None else s.prompt
    return Question([{"from": "human", "value": value}], s.image)


def check_images(samples: list[Sample], bench: str) -> None:
    missing = [s.image for s in samples if isinstance(s.image, (str, Path)) and not Path(s.image).is_file()]
    if missing:
        raise BenchmarkError(f"{bench}: {len(missing)} image(s) not found, e.g. {missing[0]}")


@dataclass
class GenerationReport:
    generated: int
    cached: int
    seconds: float

    @property
    def answers_per_s(self) -> float:
        return self.generated / self.seconds if self.seconds > 0 else 0.0


def generate(bench: Benchmark, samples: list[Sample], answer_fn: Callable[[], AnswerFn], store: AnswerStore,
             model_fp: str, settings: GenerationSettings, batch_size: int = 8,
             progress: bool = True) -> tuple[dict[str, str], GenerationReport]:
    """Answers for every sample; `answer_fn` is called (and the model loaded) only if something
    is not cached."""
    keys = {s.question_id: answer_key(bench.name, s, model_fp, settings) for s in samples}
    todo = [s for s in samples if keys[s.question_id] not in store]
    t0 = time.perf_counter()
    if todo:
        check_images(todo, bench.name)
        fn = answer_fn()
        bar = tqdm(total=len(todo), desc=bench.name, unit="q", disable=not progress)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            for s, text in zip(chunk, fn([to_question(s) for s in chunk], settings.max_new_tokens)):
                if text is not None:  # an endpoint that gave up on one question: it stays unanswered
                    store.put(keys[s.question_id], s.question_id, text)
            bar.update(len(chunk))
        bar.close()
    report = GenerationReport(len(todo), len(samples) - len(todo), time.perf_counter() - t0)
    return {s.question_id: store.answers[keys[s.question_id]] for s in samples if keys[s.question_id] in store}, report


def write_predictions(path: Path, samples: list[Sample], answers: dict[str, str], model_id: str) -> None:
    """LLaVA's answer-file format (question_id, prompt, text, model_id), in benchmark order."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for s in samples:
            if s.question_id in answers:
                fh.write(json.dumps({"question_id": s.question_id, "prompt": s.prompt, "text": answers[s.question_id],
                                     "model_id": model_id}, ensure_ascii=False) + "\n")
    tmp.replace(path)


def read_predictions(path: str | Path) -> dict[str, str]:
    """question_id -> text from an answer file (LLaVA, lmms-eval or VLMEvalKit; see `answers`)."""
    from allava.evaluate.answers import read_predictions as read

    return read(path)
