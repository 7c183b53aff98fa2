"""Every answer that is not a success: a JSON body ``{"error": message, "status": code}``
(:func:`error_response`), the app's exception handlers, and the request-body size limit."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

log = logging.getLogger("adah.serve")


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """HTTP errors and invalid parameters as JSON; a client gone before its body arrived as one
    info line in the log; anything unexpected as a JSON 500 naming no internals (the traceback
    goes to the server log)."""

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request, _exc: ClientDisconnect):  # nobody is left to answer: one line, no traceback
        client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
        log.info("%s disconnected before sending the whole request body (%s %s)", client, request.method,
                 request.url.path)
        return error_response(400, "the client disconnected before sending the whole request body")

    @app.exception_handler(HTTPException)
    async def _http_error(_request, exc: HTTPException):
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_request, exc: Exception):  # last resort: never a traceback or a path in the answer
        log.error("unexpected %s in a request", type(exc).__name__, exc_info=exc)
        return error_response(500, "internal error: the request could not be answered")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request, exc: RequestValidationError):
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()]
        return error_response(422, "; ".join(parts) or "invalid request")


def log_config(level: str = "info") -> dict:
    """uvicorn's logging configuration with the service's own logger (``adah``) added at
    ``level``, written by uvicorn's handler: its info lines (a client gone mid-body) show."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["adah"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes``, from Content-Length when
    given and counted while streaming otherwise (chunked uploads)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = HTTPException(413, f"request body over the limit of {self.max_bytes} bytes")
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await error_response(400, "bad Content-Length header")(scope, receive, send)
            if int(length) > self.max_bytes:
                return await error_response(413, too_large.detail)(scope, receive, send)
        received, started = 0, False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise too_large
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except HTTPException as exc:
            if exc is not too_large or started:
                raise
            await error_response(413, too_large.detail)(scope, receive, send)
