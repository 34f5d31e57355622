"""Concurrent chat requests grouped into batched ``generate`` calls.

While requests arrive close together (under `QUIET_S` apart) the first one waits for the rest of the
burst, until one `QUIET_S` passes without an arrival, at most the collection window
(``--batch-window-ms``); a lone client's request starts at once. Then up to
``--max-batch-size`` compatible requests (same sampling settings; a seeded sampled request runs
alone so its seed reproduces) go to one ``generate`` call on the generation thread. Prompts are
left-padded (`Answerer.batch_inputs`), so a greedy answer is the same batched or alone. Every row
stops on its own: its EOS, its ``stop`` strings, its ``max_tokens``, or its client leaving; the call
ends when all rows have. New tokens reach each request as they are made, through a batched
streamer, which is what ``stream: true`` sends on.
"""
from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from allava.data.templates import Template
from allava.evaluate.generate import Answerer
from allava.serve.errors import APIError, bad
from allava.serve.protocol import ChatRequest

log = logging.getLogger("allava.serve")
QUIET_S = 0.005  # no new request for this long: the burst is over


@dataclass
class Job:
    """One request on its way through the batcher; events go to `events` on the server's loop."""

    request: ChatRequest
    prompt: list[int]
    max_tokens: int
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    arrived: float = field(default_factory=time.monotonic)
    tokens: list[int] = field(default_factory=list)
    emitted: str = ""
    finish_reason: str | None = None
    cancelled: bool = False
    company: bool = False  # another request arrived shortly before this one

    @property
    def group(self) -> tuple:
        r = self.request
        if not r.sampling:
            return ("greedy",)
        return ("sample", r.temperature, r.top_p, id(self) if r.seed is not None else None)

    @property
    def done(self) -> bool:
        return self.finish_reason is not None or self.cancelled

    def send(self, kind: str, value: object = None) -> None:
        """From the generation thread: hand an event to the request's coroutine."""
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))


class Engine:
    """The model side: prompts as in training, one batched ``generate`` per call."""

    def __init__(self, answerer: Answerer):
        self.answerer = answerer
        self.tokenizer = answerer.tokenizer
        text_config = getattr(answerer.model.config, "text_config", answerer.model.config)
        self.context = int(getattr(text_config, "max_position_embeddings", 4096))
        eos = answerer.tokenizer.eos_token_id
        self.eos = {eos} if eos is not None else set()

    def prompt_ids(self, request: ChatRequest) -> list[int]:
        encoder = self.answerer.encoder
        if request.system is not None:
            if not isinstance(encoder.template, Template):
                raise bad("messages[0]", f"this checkpoint's template ({self.answerer.template}) takes its system "
                                         "prompt from the tokenizer; a system message cannot replace it")
            encoder = copy.copy(encoder)
            encoder.template = dataclasses.replace(encoder.template, system=request.system.rstrip() + "\n")
        return encoder.prompt_ids(request.conversations)

    def budget(self, request: ChatRequest, prompt: list[int], explicit: bool) -> int:
        """max_tokens within the context: an explicit value that cannot fit is a 400, the default shrinks."""
        room = self.context - len(prompt)
        if room < 1:
            raise bad("messages", f"the prompt is {len(prompt)} tokens (images included); this model's context "
                                  f"is {self.context}")
        if request.max_tokens > room:
            if explicit:
                raise bad("max_tokens", f"{request.max_tokens} + the prompt's {len(prompt)} tokens exceed this "
                                        f"model's context of {self.context}")
            return room
        return request.max_tokens

    def run(self, jobs: list[Job]) -> None:
        """On the generation thread: one ``generate`` for `jobs`, events sent as tokens arrive."""
        first = jobs[0].request
        inputs = self.answerer.batch_inputs([j.prompt for j in jobs], [im for j in jobs for im in j.request.images])
        if first.sampling and first.seed is not None:
            torch.manual_seed(first.seed)
        sampling = ({"do_sample": True, "temperature": first.temperature, "top_p": first.top_p}
                    if first.sampling else {"do_sample": False})
        streamer = _RowStreamer(self, jobs)
        with torch.inference_mode():
            self.answerer.model.generate(
                **inputs, max_new_tokens=max(j.max_tokens for j in jobs), **sampling, streamer=streamer,
                stopping_criteria=StoppingCriteriaList([_RowsDone(jobs)]),
                pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id)
        for j in jobs:
            if j.finish_reason is None and not j.cancelled:
                self.finish(j, "length")

    def step(self, job: Job, token: int) -> None:
        if token in self.eos:
            self.finish(job, "stop")
            return
        job.tokens.append(token)
        text = self.tokenizer.decode(job.tokens, skip_special_tokens=True)
        for s in job.request.stop:
            at = text.find(s)
            if at >= 0:
                self.finish(job, "stop", text[:at])
                return
        if len(job.tokens) >= job.max_tokens:
            self.finish(job, "length", text)
            return
        self._emit(job, _visible(text, job.request.stop))

    def finish(self, job: Job, reason: str, text: str | None = None) -> None:
        if text is None:
            text = self.tokenizer.decode(job.tokens, skip_special_tokens=True)
        self._emit(job, text.strip())
        job.finish_reason = reason
        job.send("done", reason)

    @staticmethod
    def _emit(job: Job, visible: str) -> None:
        if len(visible) > len(job.emitted) and visible.startswith(job.emitted):
            job.send("delta", visible[len(job.emitted):])
            job.emitted = visible


def _visible(text: str, stops: list[str]) -> str:
    """What can be sent now: no leading or trailing whitespace (the final answer is stripped), no
    half-decoded character, and no tail that may still become a stop string."""
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    text = text[:len(text) - hold] if hold else text
    return text.rstrip("\ufffd").strip()


class _RowStreamer(BaseStreamer):
    """`generate` calls ``put`` with the prompt, then with each step's token per row."""

    def __init__(self, engine: Engine, jobs: list[Job]):
        self.engine, self.jobs, self.prompt_seen = engine, jobs, False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for job, token in zip(self.jobs, value.reshape(len(self.jobs), -1)[:, -1].tolist()):
            if not job.done:
                self.engine.step(job, int(token))

    def end(self) -> None:
        pass


class _RowsDone(StoppingCriteria):
    def __init__(self, jobs: list[Job]):
        self.jobs = jobs

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.tensor([j.done for j in self.jobs], dtype=torch.bool, device=input_ids.device)


@dataclass
class Stats:
    served: int = 0
    cancelled: int = 0
    batches: int = 0
    batched_requests: int = 0
    refused_queue_full: int = 0


class Batcher:
    """The queue: admission (429 beyond ``max_queue``), grouping, and the one generation thread."""

    def __init__(self, engine: Engine, max_batch_size: int = 8, window_ms: float = 50.0, max_queue: int = 64):
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.window_s = window_ms / 1000
        self.quiet_s = min(QUIET_S, self.window_s)
        self.max_queue = max_queue
        self.pending: list[Job] = []
        self.running: list[Job] = []
        self.stats = Stats()
        self._wake = asyncio.Event()
        self._last_arrival = float("-inf")
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="allava-generate")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for j in self.pending + self.running:
            j.cancelled = True
        self._executor.shutdown(wait=True)

    def submit(self, request: ChatRequest, prompt: list[int], max_tokens: int) -> Job:
        if len(self.pending) + len(self.running) >= self.max_queue:
            self.stats.refused_queue_full += 1
            raise APIError(429, f"the server is busy: {self.max_queue} requests are queued or running "
                                "(--max-queue); retry shortly", code="queue_full", retry_after=1)
        job = Job(request, prompt, max_tokens, asyncio.get_running_loop())
        job.company = job.arrived - self._last_arrival < self.quiet_s  # concurrent traffic: worth a wait
        self._last_arrival = job.arrived
        self.pending.append(job)
        self._wake.set()
        return job

    def cancel(self, job: Job) -> None:
        """The client left: drop a queued job; a running one stops at its next token."""
        if job.done:
            return
        job.cancelled = True
        self.stats.cancelled += 1
        if job in self.pending:
            self.pending.remove(job)

    def _take(self) -> list[Job]:
        group = self.pending[0].group
        batch = [j for j in self.pending if j.group == group][: self.max_batch_size]
        for j in batch:
            self.pending.remove(j)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            first = self.pending[0]
            same = sum(1 for j in self.pending if j.group == first.group)
            now = time.monotonic()
            wait = min(first.arrived + self.window_s - now, self._last_arrival + self.quiet_s - now)
            if self.max_batch_size > 1 and same < self.max_batch_size and wait > 0 and (first.company or same > 1):
                await asyncio.sleep(wait)  # the rest of a burst is still arriving
                continue
            batch = self._take()
            self.running = batch
            self.stats.batches += 1
            self.stats.batched_requests += len(batch)
            try:
                await loop.run_in_executor(self._executor, self.engine.run, batch)
            except Exception:
                log.exception("generation failed for a batch of %d", len(batch))
                for j in batch:
                    if not j.done:
                        j.finish_reason = "error"
                        j.send("error", "generation failed (logged on the server)")
            finally:
                self.running = []
            self.stats.served += sum(1 for j in batch if not j.cancelled)
