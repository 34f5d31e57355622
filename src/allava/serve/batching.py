"""Concurrent chat requests in one running batch that they join and leave at every decode step.

Continuous (iteration-level) batching, as vLLM and TGI schedule: one generation thread loops; before
a decode step it admits waiting requests (up to ``--max-batch-size`` rows in all, and at most
``--prefill-tokens`` prompt tokens at a time, so a flood of arrivals does not stall the rows already
answering), prefills them together, joins them to the running batch and advances every row by one
token (`Engine`). A prefill costs about a decode step whatever its size on CPU, so arrivals join once
they are a quarter of the running rows, fill the free rows, or the oldest has waited
``--batch-window-ms`` (`Batcher._join_now`). A row leaves the moment it is done: its EOS, a ``stop`` string, its
``max_tokens``, or its client leaving. Each request samples with its own settings and generator, so
greedy and sampled requests, seeded or not, share the batch. When nothing is running, requests
arriving close together (under `QUIET_S` apart) wait for the rest of their burst, at most
``--batch-window-ms``, so a burst shares one prefill; a lone request starts at once.

New tokens reach a streamed request as they are made; a plain request gets its whole answer at the end.
"""
from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from dataclasses import dataclass, field

import torch

from allava.serve.engine import Engine, Rows
from allava.serve.errors import APIError
from allava.serve.protocol import ChatRequest

__all__ = ["Batcher", "Engine", "Job", "Stats"]
log = logging.getLogger("allava.serve")
QUIET_S = 0.005  # no new request for this long: the burst is over
JOIN_FRACTION = 0.25  # arrivals join a decoding batch once they are this share of its rows (or waited the window)


@dataclass
class Job:
    """One request on its way through the batcher; events go to `events` on the server's loop."""

    request: ChatRequest
    prompt: list[int]
    max_tokens: int
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    arrived: float = field(default_factory=time.monotonic)
    started: float = 0.0  # when its prefill began
    tokens: list[int] = field(default_factory=list)
    emitted: str = ""  # the answer so far (all of it once done)
    finish_reason: str | None = None
    cancelled: bool = False
    company: bool = False  # another request arrived shortly before this one
    generator: torch.Generator | None = None
    pixels: torch.Tensor | None = None  # the request's images preprocessed (`Engine.pixels`), if done already

    def __post_init__(self) -> None:
        if self.request.sampling:
            self.generator = torch.Generator()
            if self.request.seed is not None:
                self.generator.manual_seed(self.request.seed)
            else:
                self.generator.seed()

    @property
    def done(self) -> bool:
        return self.finish_reason is not None or self.cancelled

    def send(self, kind: str, value: object = None) -> None:
        """From the generation thread: hand an event to the request's coroutine."""
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))

    def emit(self, visible: str) -> None:
        """The answer grew to `visible`: a streamed request is sent the new part."""
        if len(visible) > len(self.emitted) and visible.startswith(self.emitted):
            if self.request.stream:
                self.send("delta", visible[len(self.emitted):])
            self.emitted = visible


@dataclass
class Stats:
    served: int = 0
    cancelled: int = 0
    prefills: int = 0  # prefill forwards (each admits one or more requests)
    admitted: int = 0
    joined_running: int = 0  # requests that joined a batch already decoding
    steps: int = 0  # decode forwards
    row_steps: int = 0  # rows advanced, summed over the decode forwards
    refused_queue_full: int = 0
    prefill_s: float = 0.0  # generation-thread seconds in prefill (images, prompts, forward, first tokens)
    decode_s: float = 0.0  # ... in decode steps (forward, choice, detokenising, stop checks)
    queued_s: float = 0.0  # request-seconds waiting to be prefilled, summed
    answering_s: float = 0.0  # request-seconds from prefill to leaving the batch, summed

    def health(self) -> dict:
        return {"served": self.served, "cancelled": self.cancelled, "batches": self.prefills, "steps": self.steps,
                "row_steps": self.row_steps,
                "mean_batch_size": round(self.row_steps / self.steps, 2) if self.steps else 0,
                "mean_prefill_size": round(self.admitted / self.prefills, 2) if self.prefills else 0,
                "joined_running": self.joined_running,
                "refused_queue_full": self.refused_queue_full, "prefill_s": round(self.prefill_s, 3),
                "decode_s": round(self.decode_s, 3), "queued_s": round(self.queued_s, 3),
                "answering_s": round(self.answering_s, 3)}


class Batcher:
    """The queue (429 beyond ``max_queue``) and the one generation thread that schedules it."""

    def __init__(self, engine: Engine, max_batch_size: int = 8, window_ms: float = 50.0, max_queue: int = 64,
                 prefill_tokens: int = 4096):
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.window_s = window_ms / 1000
        self.quiet_s = min(QUIET_S, self.window_s)
        self.max_queue = max_queue
        self.prefill_tokens = prefill_tokens
        self.pending: list[Job] = []  # guarded by _cond
        self.running: list[Job] = []  # being prefilled or in the running batch (replaced, never mutated)
        self.stats = Stats()
        self._cond = threading.Condition()
        self._stopping = False
        self._last_arrival = float("-inf")
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="allava-generate", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        with self._cond:
            self._stopping = True
            for j in self.pending + self.running:
                j.cancelled = True
            self._cond.notify_all()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)

    def submit(self, request: ChatRequest, prompt: list[int], max_tokens: int,
               pixels: torch.Tensor | None = None) -> Job:
        with self._cond:
            if len(self.pending) + len(self.running) >= self.max_queue:
                self.stats.refused_queue_full += 1
                raise APIError(429, f"the server is busy: {self.max_queue} requests are queued or running "
                                    "(--max-queue); retry shortly", code="queue_full", retry_after=1)
            job = Job(request, prompt, max_tokens, asyncio.get_running_loop(), pixels=pixels)
            job.company = job.arrived - self._last_arrival < self.quiet_s  # concurrent traffic: worth a wait
            self._last_arrival = job.arrived
            self.pending.append(job)
            self._cond.notify_all()
        return job

    def cancel(self, job: Job) -> None:
        """The client left: drop a queued job; a running one leaves the batch before the next step."""
        with self._cond:
            if job.done:
                return
            job.cancelled = True
            self.stats.cancelled += 1
            if job in self.pending:
                self.pending.remove(job)

    # --- the generation thread ---

    def _burst_wait(self) -> float:
        """Seconds the first waiting request should still wait for the rest of its burst (idle batch only)."""
        if self.max_batch_size == 1 or len(self.pending) >= self.max_batch_size:
            return 0.0
        first = self.pending[0]
        if not (first.company or len(self.pending) > 1):
            return 0.0
        now = time.monotonic()
        return min(first.arrived + self.window_s - now, self._last_arrival + self.quiet_s - now)

    def _join_now(self, rows: Rows) -> bool:
        """Whether the waiting requests should be prefilled before the next decode step. A prefill
        has a fixed cost (vision tower, a forward through every layer) near a whole decode step's,
        so arrivals gather until they are a quarter of the running rows, fill the free rows, or the
        oldest has waited ``--batch-window-ms``."""
        if not self.pending:
            return False
        free = self.max_batch_size - len(rows)
        return (len(self.pending) >= min(free, max(1, math.ceil(JOIN_FRACTION * len(rows))))
                or time.monotonic() - self.pending[0].arrived >= self.window_s)

    def _admit(self, rows: Rows | None) -> list[Job]:
        """Under the lock: the waiting requests that join now (free rows, the prefill token budget)."""
        free = self.max_batch_size - (len(rows) if rows else 0)
        take, tokens = [], 0
        while self.pending and len(take) < free:
            n = len(self.pending[0].prompt)
            if take and tokens + n > self.prefill_tokens:
                break
            take.append(self.pending.pop(0))
            tokens += n
        return take

    def _run(self) -> None:
        rows: Rows | None = None
        while True:
            with self._cond:
                while not self._stopping and not self.pending and rows is None:
                    self._cond.wait()
                if self._stopping:
                    return
                if rows is None:
                    while (wait := self._burst_wait()) > 0 and not self._stopping:
                        self._cond.wait(wait)  # the rest of a burst is still arriving
                take = self._admit(rows) if rows is None or self._join_now(rows) else []
                self.running = (rows.jobs if rows else []) + take
            try:
                rows = self._iterate(rows, take)
            except Exception:  # a bug in the scheduler itself: fail everyone, keep the thread alive
                log.exception("the generation loop failed")
                self._fail((rows.jobs if rows else []) + take)
                rows = None
            with self._cond:
                self.running = rows.jobs if rows else []

    def _iterate(self, rows: Rows | None, take: list[Job]) -> Rows | None:
        """Prefill `take` and join it to `rows`, then one decode step; returns the running batch."""
        if take:
            self.stats.prefills += 1
            self.stats.admitted += len(take)
            t0 = time.perf_counter()
            for j in take:
                j.started = time.monotonic()
                self.stats.queued_s += j.started - j.arrived
            try:
                new = self.engine.prefill(take)
            except Exception:  # only the new requests fail; the running rows are untouched
                log.exception("prefill failed for %d requests", len(take))
                self._fail(take)
                new = None
            self.stats.prefill_s += time.perf_counter() - t0
            if new is not None and rows is None:
                rows = new
            elif new is not None:
                self.stats.joined_running += len(take)
                rows.extend(new)
        if rows is not None:
            self._retire(rows)
            if rows.jobs:
                self.stats.steps += 1
                self.stats.row_steps += len(rows)
                t0 = time.perf_counter()
                try:
                    self.engine.decode(rows)
                except Exception:  # the batch's cache is in an unknown state: every row fails
                    log.exception("decode failed for %d requests", len(rows))
                    self._fail(rows.jobs)
                self.stats.decode_s += time.perf_counter() - t0
                self._retire(rows)
            if not rows.jobs:
                rows = None
        return rows

    @staticmethod
    def _fail(jobs: list[Job]) -> None:
        for j in jobs:
            if not j.done:
                j.finish_reason = "error"
                j.send("error", "generation failed (logged on the server)")

    def _retire(self, rows: Rows) -> None:
        for j in rows.retire():
            self.stats.answering_s += time.monotonic() - j.started
            if not j.cancelled and j.finish_reason != "error":
                self.stats.served += 1
