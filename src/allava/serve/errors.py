"""OpenAI's error JSON, and the one place an exception becomes an HTTP answer.

Every failure a client can see is an `APIError` with a status and a message naming the bad part
(``messages[0].content[1].image_url``); anything else is logged here with its traceback and the
client gets a 500 with no detail, so a traceback never leaves the server.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("allava.serve")

TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
         405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
         500: "server_error", 503: "server_error"}


@dataclass
class APIError(Exception):
    status: int
    message: str
    param: str | None = None
    code: str | None = None
    retry_after: float | None = None  # 429: seconds, sent as Retry-After

    def __str__(self) -> str:
        return self.message

    def body(self) -> dict:
        return error_body(self.status, self.message, self.param, self.code)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    """``{"error": {"message", "type", "param", "code"}}``, the shape the `openai` client parses."""
    return {"error": {"message": message, "type": TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def bad(param: str, message: str) -> APIError:
    """A 400 naming the request part at fault."""
    return APIError(400, f"{param}: {message}", param=param)


def install_handlers(app) -> None:
    """FastAPI/Starlette's own errors (404, 405, body validation) and anything unexpected, all in
    OpenAI's shape."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    def respond(e: APIError) -> JSONResponse:
        headers = {"Retry-After": f"{e.retry_after:g}"} if e.retry_after is not None else None
        if e.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse(e.body(), status_code=e.status, headers=headers)

    @app.exception_handler(APIError)
    async def _api(request, e: APIError):
        return respond(e)

    @app.exception_handler(HTTPException)
    async def _http(request, e: HTTPException):
        return respond(APIError(e.status_code, str(e.detail)))

    @app.exception_handler(RequestValidationError)
    async def _validation(request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "body"
        return respond(bad(where, first.get("msg", "invalid request")))

    @app.exception_handler(Exception)
    async def _unexpected(request, e: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return respond(APIError(500, "internal server error (logged on the server)"))
