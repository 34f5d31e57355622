"""`allava qc`: stream records, compute every op's stats (cached), then decide from thresholds.

Pass 1 streams the input in chunks, computes per-record stats and dataset-op features in batches
(cache lookups first, identical records computed once) and finalizes dataset ops. Decisions are
then pure arithmetic on the stored numbers, so changing thresholds never touches a model.
Pass 2 streams the input again and writes kept.jsonl / removed.jsonl / stats.jsonl, so memory
holds numbers per record, never the records themselves.
"""
from __future__ import annotations

import gc
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from allava.data.records import Problem
from allava.quality.base import DatasetOp, QCRecord, Stats
from allava.quality.cache import StatsCache
from allava.quality.config import OpSpec, QCConfig
from allava.quality.executor import Executor, LocalExecutor
from allava.quality.reader import iter_qc_records

log = logging.getLogger(__name__)
CHUNK = 256


@dataclass
class Decision:
    """Why a record was removed: the first threshold it failed, in op order."""

    op: str
    stat: str
    value: Any
    threshold: str


@dataclass
class QCRun:
    """Everything the report needs; `computed` counts records whose stats were computed (not cached)."""

    input: str
    out_dir: Path
    specs: list[OpSpec]
    ids: list[str] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    stats: list[dict[str, Stats]] = field(default_factory=list)
    decisions: list[Decision | None] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    computed: Counter = field(default_factory=Counter)
    op_seconds: Counter = field(default_factory=Counter)  # wall time per op (lookups + compute + finalize)
    seconds: float = 0.0
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        return sum(d is None for d in self.decisions)

    @property
    def removed(self) -> int:
        return len(self.decisions) - self.kept


def _chunks(it: Iterator[tuple[QCRecord | None, Problem | None]], problems: list[Problem], size: int,
            seen: set[str] | None = None) -> Iterator[list[QCRecord]]:
    """Valid records in chunks; problems (and repeated ids when `seen` is given) go to `problems`."""
    chunk: list[QCRecord] = []
    for rec, problem in it:
        if problem is not None:
            problems.append(problem)
            continue
        assert rec is not None
        if seen is not None:
            if rec.id in seen:
                problems.append(Problem(rec.id, "duplicate id (first kept)", None, ("duplicate_id",)))
                continue
            seen.add(rec.id)
        chunk.append(rec)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _cached_compute(executor: Executor, op, method: str, batch: list[QCRecord], key: str, cache: StatsCache
                    ) -> tuple[list[Any], int]:
    """`op.method` over the records whose hash is not cached yet (each distinct hash once), run by
    the executor (in the op's batches)."""
    found = cache.get_many(key, [r.hash for r in batch])
    todo: dict[str, QCRecord] = {}
    for r in batch:
        if r.hash not in found and r.hash not in todo:
            todo[r.hash] = r
    recs = list(todo.values())
    new: dict[str, Any] = {r.hash: value for r, value in zip(recs, executor.run(op, method, recs), strict=True)}
    if new:
        cache.put_many(key, new)
    found.update(new)
    return [found[r.hash] for r in batch], len(new)


def _count_lines(path: Path) -> int | None:
    if path.suffix.lower() == ".json":
        return None
    n = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            n += block.count(b"\n")
    return n


def compute_stats(records_path: str | Path, specs: list[OpSpec], cache: StatsCache, image_folder: str | Path | None,
                  progress: bool = True, executor: Executor | None = None) -> QCRun:
    """Pass 1: every op's stats per record, from the cache where possible.

    The cyclic garbage collector is paused meanwhile: pass 1 only adds small acyclic dicts, and the
    collector's full sweeps over them grow with N, which made cost per record climb at 100K records.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _compute_stats(records_path, specs, cache, image_folder, progress, executor or LocalExecutor())
    finally:
        if enabled:
            gc.enable()


def _compute_stats(records_path: str | Path, specs: list[OpSpec], cache: StatsCache, image_folder: str | Path | None,
                   progress: bool, executor: Executor) -> QCRun:
    run = QCRun(str(records_path), Path("."), specs)
    features: dict[str, list[Any]] = {s.label: [] for s in specs if isinstance(s.op, DatasetOp)}
    per_op: dict[str, list[Stats]] = {s.label: [] for s in specs if not isinstance(s.op, DatasetOp)}
    bar = tqdm(total=_count_lines(Path(records_path)), desc="qc stats", unit="rec", disable=not progress,
               dynamic_ncols=True)
    for chunk in _chunks(iter_qc_records(records_path, image_folder), run.problems, executor.chunk_size, set()):
        run.ids += [r.id for r in chunk]
        run.hashes += [r.hash for r in chunk]
        for s in specs:
            t0 = time.perf_counter()
            if isinstance(s.op, DatasetOp):
                vals, n = _cached_compute(executor, s.op, "features", chunk, "feat:" + s.op.key(), cache)
                features[s.label] += vals
            else:
                vals, n = _cached_compute(executor, s.op, "compute", chunk, s.op.key(), cache)
                per_op[s.label] += vals
            run.computed[s.label] += n
            run.op_seconds[s.label] += time.perf_counter() - t0
        bar.update(len(chunk))
    bar.close()
    dataset_hash = hashlib.sha256("".join(run.hashes).encode()).hexdigest()[:32]
    for s in specs:
        if isinstance(s.op, DatasetOp):
            t0 = time.perf_counter()
            key = "final:" + s.op.key()
            hit = cache.get_many(key, [dataset_hash])
            if dataset_hash in hit:
                per_op[s.label] = hit[dataset_hash]
            else:
                per_op[s.label] = s.op.finalize(features[s.label])
                cache.put_many(key, {dataset_hash: per_op[s.label]})
                run.computed[s.label + ":finalize"] += 1
            del features[s.label]  # features can be large (signatures, embeddings); stats are what stays
            run.op_seconds[s.label] += time.perf_counter() - t0
    run.stats = [{s.label: per_op[s.label][i] for s in specs} for i in range(len(run.ids))]
    return run


def check_thresholds(run: QCRun) -> None:
    """A threshold on a stat its op never produced would filter nothing: refuse it, naming the op's
    stats (ops do not declare them, so this is checked on the computed numbers, before any decision)."""
    import difflib

    from allava.config import ConfigError

    for i, s in enumerate(run.specs):
        seen: set[str] = set()
        for st in run.stats:
            seen.update((st.get(s.label) or {}).keys())
        if not seen:
            continue  # the op computed nothing here (e.g. image ops on text-only data)
        # the primary and optional stats are real even where no record got them (a judge that could
        # judge none of this data's records, an image stat flat images lack)
        known = seen | {s.op.primary} | set(s.op.optional_stats)
        for t in s.thresholds:
            if t.stat not in known:
                close = difflib.get_close_matches(t.stat, sorted(seen), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"ops[{i}] ({s.label}): no stat {t.stat!r} to threshold{hint} "
                                  f"its stats: {', '.join(sorted(seen))}")


def decide(run: QCRun) -> None:
    """Thresholds in op order; the first failure is the reason. Ops with `select` (balance) see only survivors."""
    decisions: list[Decision | None] = [None] * len(run.ids)
    for s in run.specs:
        for i, st in enumerate(run.stats):
            if decisions[i] is not None:
                continue
            values = st.get(s.label) or {}
            for t in s.thresholds:
                if t.fails(values.get(t.stat)):
                    decisions[i] = Decision(s.label, t.stat, values.get(t.stat), t.describe())
                    break
        alive = [d is None for d in decisions]
        chosen = s.op.select([st.get(s.label) or {} for st in run.stats], alive)
        if chosen is not None:
            for i, keep in enumerate(chosen):
                if alive[i] and not keep:
                    decisions[i] = Decision(s.label, "selected", 0, "resampled out")
    run.decisions = decisions


def write_outputs(run: QCRun, image_folder: str | Path | None, examples: int) -> None:
    """Pass 2: stream the input again; kept records are written unchanged, removed ones with `qc`."""
    out = run.out_dir
    index = {rid: i for i, rid in enumerate(run.ids)}
    run.examples = {s.label: [] for s in run.specs}
    with open(out / "kept.jsonl.tmp", "w", encoding="utf-8") as kept, \
            open(out / "removed.jsonl.tmp", "w", encoding="utf-8") as removed, \
            open(out / "stats.jsonl.tmp", "w", encoding="utf-8") as stats:
        for chunk in _chunks(iter_qc_records(run.input, image_folder), [], CHUNK):
            for rec in chunk:
                i = index.get(rec.id)
                if i is None or run.hashes[i] != rec.hash:  # repeated id or changed under us: pass 1 skipped it
                    continue
                d = run.decisions[i]
                stats.write(json.dumps({"id": rec.id, "hash": rec.hash, "kept": d is None, "stats": run.stats[i]},
                                       ensure_ascii=False, default=float) + "\n")
                if d is None:
                    kept.write(json.dumps(rec.raw, ensure_ascii=False) + "\n")
                    continue
                qc = {"op": d.op, "stat": d.stat, "value": d.value, "threshold": d.threshold}
                removed.write(json.dumps({**rec.raw, "qc": qc}, ensure_ascii=False, default=float) + "\n")
                if len(run.examples[d.op]) < examples:
                    run.examples[d.op].append({"id": rec.id, "image": rec.image, **qc,
                                               "text": rec.text()[:300]})
    for name in ("kept", "removed", "stats"):
        (out / f"{name}.jsonl.tmp").replace(out / f"{name}.jsonl")
    with open(out / "problems.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"id": p.record_id, "line": p.line, "reason": p.reason, "kinds": list(p.kinds)}) + "\n" for p in run.problems)


def run_qc_pipeline(records_path: str | Path, cfg: QCConfig, out_dir: str | Path, image_folder: str | Path | None = None,
                    cache_path: str | Path | None = "default", progress: bool = True, plots: bool = True,
                    all_stats: bool = False, executor: Executor | None = None) -> QCRun:
    """The whole run: stats (cached), decisions, outputs and report. `cache_path="default"` = OUT/cache.sqlite.

    `plots=False` skips the PNGs (matplotlib is most of a small run's time); `all_stats` also
    computes the ops marked `report_only`; `executor` runs the ops (default: in-process, `LocalExecutor`)."""
    from allava.quality.reader import resolve_image_folder
    from allava.quality.report import write_report

    t0 = time.perf_counter()
    image_folder = resolve_image_folder(records_path, image_folder)  # before any output: nothing half-written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = StatsCache(out / "cache.sqlite" if cache_path == "default" else cache_path)
    try:
        run = compute_stats(records_path, cfg.active(all_stats), cache, image_folder, progress, executor)
    finally:
        cache.close()
        for s in cfg.ops:
            s.op.close()
    run.out_dir = out
    check_thresholds(run)
    decide(run)
    write_outputs(run, image_folder, cfg.examples)
    for p in run.problems[:20]:
        log.warning("bad input: %s (line %s): %s", p.record_id, p.line, p.reason)
    run.seconds = time.perf_counter() - t0
    write_report(run, plots)
    return run
