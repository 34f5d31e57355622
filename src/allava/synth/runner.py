"""Run one task over one source: resume, bounded concurrency, budget, progress, summary.

Items stream from the source through a bounded queue to `concurrency` workers, so memory does
not grow with the source (only the set of finished ids does, ~100 bytes per id). Each item ends
in exactly one of records.jsonl / rejects.jsonl, or stays pending when the run stops first
(budget reached, interrupted). Exit codes: 0 complete, 3 budget exhausted, 130 interrupted.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import re
import logging
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

from allava.synth.base import (
    TASKS,
    TEACHERS,
    BudgetExhausted,
    Item,
    SynthError,
    Task,
    Teacher,
)
from allava.synth.budget import resolve_price
from allava.synth.cache import AnswerCache
from allava.synth.config import SynthConfig, SynthConfigError, TeacherFatal
from allava.synth.meter import CURRENT_ITEM, ItemAccount, Meter
from allava.synth.outputs import RunFiles
from allava.synth.sources import (
    RecordsSource,
    Rejected,
    Source,
    open_source,
    selected_entries,
    selected_ids,
)

log = logging.getLogger(__name__)
EXIT = {"complete": 0, "budget_exhausted": 3, "interrupted": 130}


def load_registries(teachers: bool = True) -> None:
    """Import the task and teacher modules so they register themselves. The CLI parser needs only
    the tasks (the teachers pull in the openai SDK, half a second every `allava` start)."""
    if teachers:
        import allava.synth.teachers

    try:
        import allava.synth.tasks  # noqa: F401
    except ImportError as e:  # pragma: no cover - before the task package exists
        log.debug("no synthesis tasks package: %s", e)


def namespace(cfg: SynthConfig, args: argparse.Namespace | None) -> argparse.Namespace:
    if args is not None:
        return args
    ns = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "extra"}
    return argparse.Namespace(**ns, **cfg.extra)


def make_task(cfg: SynthConfig, args: argparse.Namespace) -> Task:
    if cfg.task not in TASKS:
        raise SynthConfigError(f"unknown task {cfg.task!r}; known: {', '.join(sorted(TASKS)) or 'none'}")
    task = TASKS[cfg.task]()
    task.bind(cfg.out, args)
    return task


def make_teacher(cfg: SynthConfig, args: argparse.Namespace, meter: Meter, cache: AnswerCache | None) -> Teacher:
    """`openai` gets the run's meter and cache; other teachers `cls.from_args(args)` or `cls()`."""
    if cfg.teacher not in TEACHERS:
        raise SynthConfigError(f"unknown teacher {cfg.teacher!r}; known: {', '.join(sorted(TEACHERS))}")
    cls = TEACHERS[cfg.teacher]
    if cfg.teacher == "openai":
        return cls(cfg, meter, cache)
    return cls.from_args(args) if hasattr(cls, "from_args") else cls()


class Runner:
    def __init__(self, cfg: SynthConfig, task: Task, teacher: Teacher, source: Source, meter: Meter,
                 files: RunFiles, cache: AnswerCache | None = None):
        self.cfg, self.task, self.teacher, self.source = cfg, task, teacher, source
        self.meter, self.files, self.cache = meter, files, cache
        self.status = "complete"
        self.fatal: BaseException | None = None
        self.stop = asyncio.Event()
        self.this_run: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.pbar: Any = None
        self.queued: set[str] = set()  # ids between the queue and their output line

    async def run(self) -> None:
        queue: asyncio.Queue[Item | None] = asyncio.Queue(maxsize=2 * self.cfg.concurrency)
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(self.cfg.concurrency)]
        producer = asyncio.create_task(self._produce(queue, len(workers)))
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._interrupt, [producer, *workers])
                installed.append(sig)
        try:
            await asyncio.gather(producer, *workers, return_exceptions=True)
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _interrupt(self, tasks: list[asyncio.Task]) -> None:
        if self.status == "complete":
            self.status = "interrupted"
        self.stop.set()
        for t in tasks:
            t.cancel()  # cancellation lands only at awaits: a line is never half-written

    async def _produce(self, queue: asyncio.Queue, n_workers: int) -> None:
        seen = self.files.done
        try:
            for n, entry in enumerate(selected_entries(self.source, self.cfg.shard, self.cfg.limit)):
                if n % 1024 == 0:
                    await asyncio.sleep(0)  # skipping 700K finished ids must not starve signals
                if self.stop.is_set():
                    break
                if entry.id in seen or entry.id in self.queued:
                    continue  # finished earlier, or a duplicate id of an item in flight
                if isinstance(entry, Rejected):
                    self._reject({"id": entry.id, "reason": entry.reason, "raw": None})
                    continue
                self.queued.add(entry.id)
                await queue.put(entry)
        except Exception as e:  # the source broke (unreadable file...): stop, report after the summary
            self.fatal, self.status = e, "failed"
            self.stop.set()
        # Not in a `finally`: when cancelled, the workers are cancelled too and nobody would take these.
        for _ in range(n_workers):
            await queue.put(None)

    async def _worker(self, queue: asyncio.Queue) -> None:
        while True:
            item = await queue.get()
            if item is None:
                return
            try:
                if not self.stop.is_set():
                    await self._process(item)  # else it stays pending
            finally:
                self.queued.discard(item.id)

    async def _process(self, item: Item) -> None:
        acct = ItemAccount(item.id, bypass_cache=item.id in self.files.retry_ids)
        token = CURRENT_ITEM.set(acct)
        try:
            if getattr(self.task, "needs_image", False) and item.image is None:
                raise SynthError(f"task {self.task.name} needs an image and the record has none")
            await self.source.prepare(item)
            line = await self.task.run(item, self.teacher)
            line["id"] = item.id
            if self.files.add_record(line):
                self.this_run["done"] += 1
                if getattr(self.teacher, "meter", None) is None:  # teachers without a meter (scene): count tokens
                    usage = line.get("usage") or {}
                    self.meter.prompt_tokens += int(usage.get("prompt_tokens") or 0)
                    self.meter.completion_tokens += int(usage.get("completion_tokens") or 0)
                self._tick()
        except BudgetExhausted:
            if self.status == "complete":
                self.status = "budget_exhausted"
            self.stop.set()
        except TeacherFatal as e:
            self.fatal = e
            self.status = "failed"
            self.stop.set()
        except SynthError as e:
            self._reject({"id": item.id, "reason": e.reason, "raw": e.raw,
                          "usage": {"prompt_tokens": acct.prompt_tokens, "completion_tokens": acct.completion_tokens},
                          "cost_usd": acct.cost_usd})
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a task bug must not stop the other 699,999 items
            log.exception("item %s failed", item.id)
            self._reject({"id": item.id, "reason": f"internal error: {type(e).__name__}: {e}", "raw": None})
        finally:
            CURRENT_ITEM.reset(token)

    def _reject(self, line: dict[str, Any]) -> None:
        if self.files.add_reject(line):
            self.this_run["rejected"] += 1
            self.reasons[_reason_kind(line["reason"])] += 1
            self._tick()

    def _tick(self) -> None:
        if self.pbar is not None:
            self.pbar.update(1)
            self.pbar.set_postfix_str(f"${self.meter.budget.spent:.4f} rej={self.this_run['rejected']}", refresh=False)


def _reason_kind(reason: str) -> str:
    return reason.split(":")[0][:60] if reason else "unknown"


def count_pending(source: Source, cfg: SynthConfig, done: set[str]) -> tuple[int, int]:
    """(unique selected ids, of which not finished): one cheap pass over ids. Only unfinished ids
    are held (to dedupe them), so a finished 700K-item run does not build a second id set."""
    pending: set[str] = set()
    for _id in selected_ids(source, cfg.shard, cfg.limit):
        if _id not in done:
            pending.add(_id)
    return len(done) + len(pending), len(pending)


# Files that mark a folder as another verb's output: synthesis into it would mix the two.
FOREIGN_OUTPUTS = {"kept.jsonl": "a qc run", "stats.jsonl": "a qc run", "allava_recipe.json": "a model folder",
                   "trainer_state.json": "a training checkpoint", "metrics.json": "an eval run",
                   "report.json": "a report folder", "config.json": "a model folder"}


def _source_identity(spec: str | None) -> tuple[str, str]:
    """(kind, what identifies it): scenes:N@SEED is identified by its seed (N may grow on a rerun),
    a folder or file by its resolved path."""
    text = str(spec)
    m = re.match(r"^(scenes|abilities):(\d+)(?:@(\d+))?$", text)
    if m:
        return m.group(1), f"seed {m.group(3) or 0}"
    for prefix in ("t2i:",):
        if text.startswith(prefix):
            return "t2i", str(Path(text[len(prefix):]).resolve())
    return "path", str(Path(text).resolve())


def check_out_folder(out: Path, cfg: SynthConfig) -> None:
    """Refuse an --out that holds another run (task, source, seed, teacher, model, shard) or another
    verb's output, before anything is written: resuming into it would mix two runs' records."""
    if not out.exists():
        return
    if not out.is_dir():
        raise SynthConfigError(f"--out {out}: is a file, not a folder")
    for name, what in FOREIGN_OUTPUTS.items():
        if (out / name).exists() and not (out / "summary.json").exists():
            raise SynthConfigError(f"--out {out} holds {what} ({name}); synthesize into a new folder")
    if any(out.glob("stage*/summary.json")) or any(out.glob("checkpoint-*")):
        raise SynthConfigError(f"--out {out} holds a training run; synthesize into a new folder")
    path = out / "summary.json"
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text())
    except ValueError:
        return
    if "task" not in old:
        raise SynthConfigError(f"--out {out}: its summary.json is not a synthesis summary; use a new folder")
    new = {"task": cfg.task, "teacher": cfg.teacher, "model": cfg.model if cfg.teacher == "openai" else cfg.teacher,
           "shard": f"{cfg.shard[0]}/{cfg.shard[1]}", "source": _source_identity(cfg.images),
           "image_folder": str(Path(cfg.image_folder).resolve()) if cfg.image_folder else None}
    folder = (old.get("source_options") or {}).get("image_folder")
    was = {"task": old.get("task"), "teacher": old.get("teacher"), "model": old.get("model"), "shard": old.get("shard"),
           "source": _source_identity(old.get("source")), "image_folder": str(Path(folder).resolve()) if folder else None}
    diffs = [f"{k} {_show(was[k])} -> {_show(new[k])}" for k in new if was[k] != new[k]]
    if diffs:
        raise SynthConfigError(f"--out {out} holds another synthesis run ({'; '.join(diffs)}); rerun with its "
                               "settings to resume it, or use a new --out")


def _show(value: Any) -> str:
    return ":".join(value) if isinstance(value, tuple) else str(value)


def check_source_fits(task: Any, source: Any, cfg: SynthConfig) -> None:
    """The task's needs against the source's first item: a source the task cannot use at all is one
    usage error up front, not every item rejected with the same reason."""
    if next(iter(source.ids()), None) is None:  # was "complete. 0 of 0 items done", exit 0
        raise SynthConfigError(f"--images {cfg.images}: gives no items (an empty folder, file or scenes:0)")
    check_record_images(source, cfg)
    requires = getattr(type(task), "requires", ())
    needs_image = getattr(type(task), "needs_image", False)
    if not requires and not needs_image:
        return
    first = next((e for e in source.entries(lambda _id: True) if isinstance(e, Item)), None)
    if first is None:
        return
    fields = first.fields or {}
    for group in requires:
        if not any(k in fields for k in group):
            need = " or ".join(repr(k) for k in group)
            have = ", ".join(sorted(fields)) or "none"
            raise SynthConfigError(f"task {task.name} cannot use --images {cfg.images}: its items need a {need} "
                                   f"field (a JSON/JSONL records source with it); the first item {first.id!r} "
                                   f"has fields: {have}")
    if needs_image and first.image is None:
        raise SynthConfigError(f"task {task.name} needs images and --images {cfg.images} gives items without one "
                               f"(the first: {first.id!r})")


PROBE_IMAGES = 20


def check_record_images(source: Any, cfg: SynthConfig) -> None:
    """A records source none of whose first images exist is a wrong --image-folder (or none given), not
    a run in which every item is rejected as 'image not found' with exit 0."""
    if not isinstance(source, RecordsSource):
        return
    files = []
    for e in source.entries(lambda _id: True):
        if isinstance(e, Item) and e.image is not None:
            files.append(e.image_file())
            if len(files) >= PROBE_IMAGES:
                break
    if files and not any(f.is_file() for f in files):
        raise SynthConfigError(f"--images {cfg.images}: none of the first {len(files)} images exists (e.g. {files[0]}); "
                               f"they were looked up under {source.image_root}: pass --image-folder DIR")


def synth(cfg: SynthConfig, args: argparse.Namespace | None = None) -> dict[str, Any]:
    """Run (or resume) a synthesis job; returns the summary (also written to OUT/summary.json)."""
    load_registries()
    if cfg.concurrency < 1:
        raise SynthConfigError("--concurrency must be >= 1")
    ns = namespace(cfg, args)
    out = Path(cfg.out)
    task = make_task(cfg, ns)
    if cfg.images is None:
        default = getattr(type(task), "default_source", None)
        if default is None:
            raise SynthConfigError(f"task {cfg.task} needs --images (a folder, a JSONL file or scenes:N)")
        cfg.images = default
    imagegen = {"name": getattr(ns, "imagegen", None), "model": getattr(ns, "imagegen_model", None),
                "image_size": getattr(ns, "image_size", None), "steps": getattr(ns, "imagegen_steps", None),
                "guidance": getattr(ns, "imagegen_guidance", None)}
    source = open_source(cfg.images, out, cfg.image_folder, cfg.min_short_edge, imagegen)
    check_out_folder(out, cfg)  # after the source's own checks: a missing source is named first
    check_source_fits(task, source, cfg)
    price = None
    if cfg.teacher == "openai":
        price = resolve_price(cfg.model, cfg.price_in, cfg.price_out, cfg.prices, need=cfg.budget_usd is not None)
    files = RunFiles(out, cfg.retry_rejects)
    meter = Meter(out, price, cfg.budget_usd)
    cache = AnswerCache(cfg.cache_path) if cfg.cache_path and cfg.teacher == "openai" else None
    start = time.time()
    runner = None
    try:
        teacher = make_teacher(cfg, ns, meter, cache)
        runner = Runner(cfg, task, teacher, source, meter, files, cache)
        total = None
        if cfg.progress:
            from tqdm import tqdm

            total, todo = count_pending(source, cfg, files.done)
            runner.pbar = tqdm(total=todo, desc=f"synth {cfg.task}", unit="item", dynamic_ncols=True)

        async def main() -> None:
            try:
                await runner.run()
            finally:
                await teacher.aclose()

        asyncio.run(main())
    finally:
        if runner is not None and runner.pbar is not None:
            runner.pbar.close()
        files.close()
        meter.close()
        if cache is not None:
            cache.close()
    status = runner.status
    total, pending = count_pending(source, cfg, files.done)
    if status == "complete" and pending:
        status = "interrupted"
    summary = {
        "status": status, "task": cfg.task, "teacher": cfg.teacher,
        "model": cfg.model if cfg.teacher == "openai" else cfg.teacher,
        "source": cfg.images, "source_options": {"image_folder": str(cfg.image_folder) if cfg.image_folder else None,
                                                 "min_short_edge": cfg.min_short_edge, "limit": cfg.limit},
        "shard": f"{cfg.shard[0]}/{cfg.shard[1]}",
        "total": total, "done": files.n_records, "rejected": files.n_rejects, "pending": pending,
        "cached": meter.cache_hits,
        "tokens_in": meter.prev_prompt_tokens + meter.prompt_tokens,
        "tokens_out": meter.prev_completion_tokens + meter.completion_tokens,
        "cost_usd": round(meter.budget.spent, 8), "budget_usd": cfg.budget_usd,
        "price_usd_per_1m": {"input": price.input, "output": price.output} if price else None,
        "this_run": {"done": runner.this_run["done"], "rejected": runner.this_run["rejected"],
                     "requests": meter.requests, "paid": meter.paid, "retries": meter.retries,
                     "cache_hits": meter.cache_hits, "cost_usd": round(meter.cost_usd, 8),
                     "reject_reasons": dict(runner.reasons.most_common(10))},
        "wall_s": round(time.time() - start, 3),
    }
    done_now = runner.this_run["done"] + runner.this_run["rejected"]
    summary["items_per_s"] = round(done_now / max(summary["wall_s"], 1e-9), 3)
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(out / "summary.json")
    if runner.fatal is not None:
        raise runner.fatal
    return summary


def describe(s: dict[str, Any]) -> str:
    """The one-paragraph human summary printed after a run."""
    run = s["this_run"]
    text = (f"{s['task']} with {s['model']} on {s['source']} (shard {s['shard']}): {s['status']}. "
            f"{s['done']} of {s['total']} items done, {s['rejected']} rejected, {s['pending']} pending; "
            f"this run finished {run['done']} and rejected {run['rejected']} in {s['wall_s']:.1f}s "
            f"({s['items_per_s']:.2f} items/s) with {run['paid']} paid calls, {run['cache_hits']} cache hits "
            f"and {run['retries']} retries. Tokens so far: {s['tokens_in']} in, {s['tokens_out']} out; "
            f"cost so far ${s['cost_usd']:.4f}" + (f" of a ${s['budget_usd']:.4f} budget" if s["budget_usd"] else "") + ".")
    if run["reject_reasons"]:
        text += " Reject reasons: " + ", ".join(f"{k} ({v})" for k, v in run["reject_reasons"].items()) + "."
    return text
