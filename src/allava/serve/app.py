"""The HTTP side of `allava serve`: OpenAI's chat-completions API, the model list, a health check
and the chat page, on FastAPI (the stack vLLM and SGLang serve with)."""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from allava.data.tokenize import EncodeError
from allava.serve.batching import Batcher, Engine, Job
from allava.serve.config import ServeConfig
from allava.serve.errors import APIError, bad, install_handlers
from allava.serve.protocol import parse_chat

log = logging.getLogger("allava.serve")
STATIC = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
POLL_S = 0.25  # how often a non-streamed request checks that its client is still there


def static_file(name: str) -> bytes:
    """The page's files ship inside the package (no CDN: the page works offline)."""
    return (resources.files("allava.serve") / "static" / name).read_bytes()


def create_app(cfg: ServeConfig, engine: Engine) -> FastAPI:
    batcher = Batcher(engine, cfg.max_batch_size, cfg.batch_window_ms, cfg.max_queue, cfg.prefill_tokens)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="allava serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.batcher = batcher
    install_handlers(app)
    created = int(time.time())

    def authorize(request: Request) -> None:
        key = cfg.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if not given:
            raise APIError(401, "missing API key: send the header 'Authorization: Bearer <key>'",
                           code="invalid_api_key")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise APIError(401, "incorrect API key", code="invalid_api_key")

    @app.get("/health")
    async def health() -> dict:
        import psutil

        return {"status": "ok", "model": cfg.model_name, "queued": len(batcher.pending),
                "running": len(batcher.running), **batcher.stats.health(),
                "rss_mb": round(psutil.Process().memory_info().rss / 2 ** 20, 1)}

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        authorize(request)
        return {"object": "list", "data": [{"id": cfg.model_name, "object": "model", "created": created,
                                            "owned_by": "allava", "max_model_len": engine.context}]}

    @app.get("/")
    async def page() -> Response:
        return Response(static_file("index.html"), media_type="text/html")

    @app.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in STATIC:
            raise APIError(404, f"no such file: /static/{name}")
        return Response(static_file(name), media_type=STATIC[name])

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        authorize(request)
        body = await _read_json(request, cfg.max_body_bytes)
        chat_request = await parse_chat(body, cfg)
        explicit = body.get("max_completion_tokens") is not None or body.get("max_tokens") is not None
        try:
            prompt = engine.prompt_ids(chat_request)
        except (EncodeError, ValueError) as e:
            if isinstance(e, APIError):
                raise
            raise bad("messages", f"cannot build the prompt: {e}") from None
        max_tokens = engine.budget(chat_request, prompt, explicit)
        # the image processor (resize, crop, normalise: ~0.8 ms an image) runs here, beside the generation thread
        pixels = await asyncio.to_thread(engine.pixels, chat_request.images) if chat_request.images else None
        job = batcher.submit(chat_request, prompt, max_tokens, pixels)
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": cfg.model_name}
        if chat_request.stream:
            return JobStream(_sse(job, meta), job, batcher)
        return await _complete(request, job, batcher, meta)

    return app


async def _read_json(request: Request, limit: int) -> dict:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"request body of {int(declared):,} bytes is over this server's limit of {limit:,} "
                            "(--max-body-bytes)")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise APIError(413, f"request body is over this server's limit of {limit:,} bytes (--max-body-bytes)")
    try:
        return json.loads(data)
    except ValueError as e:
        raise bad("body", f"not valid JSON ({e})") from None


def _usage(job: Job) -> dict:
    return {"prompt_tokens": len(job.prompt), "completion_tokens": len(job.tokens),
            "total_tokens": len(job.prompt) + len(job.tokens)}


async def _complete(request: Request, job: Job, batcher: Batcher, meta: dict) -> Response:
    checked = time.monotonic()
    try:
        while True:
            try:
                kind, value = await asyncio.wait_for(job.events.get(), POLL_S)
            except asyncio.TimeoutError:
                kind = None
            if time.monotonic() - checked >= POLL_S:  # tokens may flow without pause: check by the clock
                checked = time.monotonic()
                if await request.is_disconnected():
                    batcher.cancel(job)
                    log.info("499 client closed the connection before its answer (%s)", meta["id"])
                    return Response(status_code=499)
            if kind is None:
                continue
            if kind == "error":
                raise APIError(500, str(value))
            if kind == "done":
                break
    except asyncio.CancelledError:
        batcher.cancel(job)
        raise
    return JSONResponse({**meta, "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": job.emitted}, "finish_reason": value}],
        "usage": _usage(job)})


def _chunk(meta: dict, delta: dict, finish: str | None = None) -> str:
    body = {**meta, "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


async def _sse(job: Job, meta: dict) -> AsyncIterator[str]:
    """OpenAI's stream: a role chunk, content chunks, a chunk with finish_reason, [optionally the
    usage], then ``data: [DONE]``. An error after the headers went out is an error event."""
    yield _chunk(meta, {"role": "assistant", "content": ""})
    while True:
        kind, value = await job.events.get()
        if kind == "delta":
            yield _chunk(meta, {"content": value})
        elif kind == "error":
            yield f"data: {json.dumps(APIError(500, str(value)).body())}\n\n"
            break
        elif kind == "cancelled":
            return
        else:
            yield _chunk(meta, {}, value)
            if job.request.include_usage:
                yield f"data: {json.dumps({**meta, 'object': 'chat.completion.chunk', 'choices': [], 'usage': _usage(job)})}\n\n"
            break
    yield "data: [DONE]\n\n"


class JobStream(StreamingResponse):
    """Server-sent events for one job. It listens for the client's disconnect itself, so a client
    that leaves mid-answer frees its batch row at the next token (logged as 499), whether or not
    anything was being sent at that moment."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[str], job: Job, batcher: Batcher):
        super().__init__(events, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.job, self.batcher = job, batcher

    def _left(self) -> None:
        if not self.job.done:
            log.info("499 client closed the stream mid-answer")
            self.batcher.cancel(self.job)
            self.job.events.put_nowait(("cancelled", None))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            self._left()

        watcher = asyncio.create_task(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk.encode(), "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client is gone; _left below frees its row
        finally:
            watcher.cancel()
            self._left()
