"""A loopback-only OpenAI-compatible `/v1/chat/completions` server with fault injection.

For tests, benchmarks and users' dry runs (`python -m allava.synth.fake_server --latency 0.5`):
it answers after a fixed latency with text from a pluggable responder (default: a valid ALLaVA
A.1 tagged answer) and reports usage. Faults are deterministic per request: the fault of a request
is chosen from the SHA-256 of its body, and *transient* faults (429, 500, hang) hit only the first
`transient_attempts` sends of that body, so the client's retry is what makes it through. Content
faults (truncated with finish_reason "length", malformed, missing section, empty) are permanent for
that body, like a teacher that always answers a prompt the same way. Stdlib asyncio only.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

Responder = Callable[[dict[str, Any]], str]

TRANSIENT = ("429", "500", "503", "hang")
PERMANENT = ("500_always", "401", "truncate", "malformed", "missing", "empty")
FAULTS = TRANSIENT + PERMANENT


def allava_answer(request: dict[str, Any]) -> str:
    """A valid answer to the A.1 prompt, varied by the request so records differ."""
    from allava.scenes.teacher import format_raw

    tag = hashlib.sha256(json.dumps(request.get("messages"), sort_keys=True).encode()).hexdigest()[:8]
    candidates = [f"What could explain detail {k} of the scene ({tag})?" for k in range(1, 6)]
    return format_raw(f"A detailed description of the image {tag}: several objects in a clear layout.",
                      candidates, candidates[2], f"Looking closely at the image ({tag}), the answer follows from "
                      "the position and colour of the objects.")


def _user_text(request: dict[str, Any]) -> str:
    msgs = [m for m in request.get("messages") or [] if m.get("role") == "user"]
    content = msgs[-1].get("content") if msgs else ""
    parts = [content] if isinstance(content, str) else [p.get("text", "") for p in content or []
                                                          if isinstance(p, dict) and p.get("type") == "text"]
    return "\n".join(str(p) for p in parts)


def qc_answer(request: dict[str, Any]) -> str:
    """Canned, deterministic replies to the `allava qc` prompts (judge, task tag, difficulty), for
    dry runs of the teacher-backed QC ops: every answer "Correct.", the first listed task whose name
    occurs in the instruction (else the last listed), difficulty 1 + words / 5 (at most 10)."""
    text = _user_text(request)
    if "Now judge:" in text:
        return "Correct."
    instruction = text.split("Instruction:", 1)[-1]
    m = re.search(r"^Tasks: (.+)$", text, flags=re.MULTILINE)
    if m:
        tasks = [t.strip() for t in m.group(1).split(",")]
        body = instruction.rsplit("Task:", 1)[0].lower()
        return next((t for t in tasks if t.lower() in body), tasks[-1])
    if "Difficulty" in text:
        words = len(instruction.rsplit("Difficulty", 1)[0].split())
        return f"Difficulty: {min(10, 1 + words // 5)}/10"
    return allava_answer(request)


RESPONDERS: dict[str, Responder] = {"allava": allava_answer, "qc": qc_answer}


def _prompt_chars(messages: list[dict[str, Any]]) -> tuple[int, int]:
    chars = images = 0
    for m in messages:
        content = m.get("content")
        for part in [content] if isinstance(content, str) else (content or []):
            if isinstance(part, str):
                chars += len(part)
            elif isinstance(part, dict) and part.get("type") == "text":
                chars += len(part.get("text", ""))
            elif isinstance(part, dict) and part.get("type") == "image_url":
                images += 1
    return chars, images


@dataclass
class FakeConfig:
    latency: float = 0.0
    faults: dict[str, float] = field(default_factory=dict)  # fault kind -> fraction of requests
    transient_attempts: int = 1
    retry_after: float | None = 1.0  # seconds, sent as Retry-After on 429/503
    retry_after_ms: float | None = None  # sent as retry-after-ms when set
    hang_s: float = 60.0
    responder: Responder = allava_answer

    def fault_for(self, digest: bytes) -> str | None:
        u = int.from_bytes(digest[:8], "big") / 2**64
        acc = 0.0
        for kind in FAULTS:
            acc += self.faults.get(kind, 0.0)
            if u < acc:
                return kind
        return None


class FakeOpenAI:
    """The server; `stats` counts requests and keeps (time, body digest, status) per request."""

    def __init__(self, cfg: FakeConfig | None = None):
        self.cfg = cfg or FakeConfig()
        self.attempts: Counter[str] = Counter()
        self.status: Counter[int] = Counter()
        self.log: list[tuple[float, str, int]] = []
        self.requests = 0
        self.max_in_flight = 0
        self._in_flight = 0
        self.port: int | None = None
        self._server: asyncio.base_events.Server | None = None

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    # ------------------------------------------------------------------ HTTP plumbing
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = (lines[0].split(" ") + ["", ""])[:3]
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                status, extra, payload = await self._handle(method, path, body)
                data = json.dumps(payload).encode()
                hdrs = "".join(f"{k}: {v}\r\n" for k, v in extra.items())
                reason = "OK" if status == 200 else "Error"
                writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {len(data)}\r\n{hdrs}\r\n".encode() + data)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return  # client gone, or the server is shutting down (a hung request)
        finally:
            writer.close()

    async def _handle(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, str], dict]:
        if method == "GET" and path.rstrip("/").endswith("/stats"):
            return 200, {}, self.stats()
        if method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
            return 404, {}, {"error": {"message": f"no route {method} {path}", "type": "invalid_request_error"}}
        try:
            req = json.loads(body)
        except ValueError:
            return 400, {}, {"error": {"message": "invalid JSON body", "type": "invalid_request_error"}}
        digest = hashlib.sha256(body).digest()
        key = digest.hex()
        self.requests += 1
        self.attempts[key] += 1
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            status, extra, payload = await self._answer(req, digest, self.attempts[key])
        finally:
            self._in_flight -= 1
        self.status[status] += 1
        self.log.append((time.monotonic(), key, status))
        return status, extra, payload

    async def _answer(self, req: dict, digest: bytes, attempt: int) -> tuple[int, dict[str, str], dict]:
        cfg = self.cfg
        fault = cfg.fault_for(digest)
        if fault in TRANSIENT and attempt > cfg.transient_attempts:
            fault = None
        if fault == "hang":
            await asyncio.sleep(cfg.hang_s)
        if cfg.latency:
            await asyncio.sleep(cfg.latency)
        if fault in ("429", "503"):
            extra = {}
            if cfg.retry_after is not None:
                extra["Retry-After"] = f"{cfg.retry_after:g}"
            if cfg.retry_after_ms is not None:
                extra["retry-after-ms"] = f"{cfg.retry_after_ms:g}"
            kind = "rate_limit_exceeded" if fault == "429" else "server_overloaded"
            return int(fault), extra, {"error": {"message": f"injected {fault}", "type": kind, "code": kind}}
        if fault == "401":
            return 401, {}, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                       "code": "invalid_api_key"}}
        if fault in ("500", "500_always"):
            return 500, {}, {"error": {"message": "injected 500", "type": "server_error"}}
        text = cfg.responder(req)
        finish = "stop"
        if fault == "truncate":
            text, finish = text[: len(text) // 2], "length"
        elif fault == "malformed":
            text = "Sure! " + re.sub(r"<(start|end) of [a-z ]+>", "", text)
        elif fault == "missing":
            text = re.sub(r"<start of answer>.*?<end of answer>", "", text, flags=re.DOTALL)
        elif fault == "empty":
            text = ""
        chars, images = _prompt_chars(req.get("messages", []))
        usage = {"prompt_tokens": chars // 4 + 85 * images + 7, "completion_tokens": max(1, len(text) // 4)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return 200, {}, {
            "id": "chatcmpl-" + digest.hex()[:24], "object": "chat.completion", "created": int(time.time()),
            "model": req.get("model", "fake"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": usage,
        }

    def stats(self) -> dict[str, Any]:
        return {"requests": self.requests, "status": {str(k): v for k, v in self.status.items()},
                "max_in_flight": self.max_in_flight}


class RunningServer:
    """Handle on a server running in a background thread: `url` is the OpenAI base_url."""

    def __init__(self, server: FakeOpenAI, loop: asyncio.AbstractEventLoop, thread: threading.Thread):
        self.server, self.loop, self.thread = server, loop, thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/v1"

    def stop(self) -> None:
        async def shutdown() -> None:
            await self.server.stop()
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()
        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


@contextmanager
def serve(cfg: FakeConfig | None = None, **kw: Any) -> Iterator[RunningServer]:
    """Run the fake server on a free loopback port in a daemon thread for the `with` block."""
    server = FakeOpenAI(cfg or FakeConfig(**kw))
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=main, name="fake-openai", daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("fake server did not start")
    running = RunningServer(server, loop, thread)
    try:
        yield running
    finally:
        running.stop()


@contextmanager
def serve_subprocess(latency: float = 0.0, faults: dict[str, float] | None = None) -> Iterator[str]:
    """Run the server in its own process (so it does not share the client's GIL); yields base_url."""
    import subprocess

    cmd = [sys.executable, "-m", "allava.synth.fake_server", "--port", "0", "--latency", str(latency)]
    for kind, rate in (faults or {}).items():
        cmd += ["--fault", f"{kind}={rate}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/v1", line)
        if not m:
            raise RuntimeError(f"fake server did not start: {line!r}")
        yield m.group(0)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="loopback OpenAI-compatible fake server (dry runs, tests)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    p.add_argument("--fault", action="append", default=[], help=f"KIND=FRACTION, KIND in {', '.join(FAULTS)}")
    p.add_argument("--retry-after", type=float, default=1.0)
    p.add_argument("--responder", choices=sorted(RESPONDERS), default="allava",
                   help="what it answers: an ALLaVA A.1 answer, or canned replies to the `allava qc` prompts")
    args = p.parse_args(argv)
    faults = {k: float(v) for k, _, v in (f.partition("=") for f in args.fault)}
    unknown = set(faults) - set(FAULTS)
    if unknown:
        p.error(f"unknown faults {sorted(unknown)}")
    server = FakeOpenAI(FakeConfig(latency=args.latency, faults=faults, retry_after=args.retry_after,
                                   responder=RESPONDERS[args.responder]))

    async def run() -> None:
        port = await server.start(args.port)
        print(f"fake OpenAI server on http://127.0.0.1:{port}/v1", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
