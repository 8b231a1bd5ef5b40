"""Turning failures into HTTP answers: every refusal has its own status and a ``detail`` message.

| what | status |
| --- | --- |
| options the models reject (an unknown tag or label, a bad template) | 422 (unknown tags also as ``unknown_tags``) |
| the library cannot answer (no embeddings yet, no tags to filter by) | 409 |
| the queue is full | 503 with ``Retry-After`` |
| a request not done in time | 504 |
| anything unforeseen | 500, logged with its traceback (a bug: no input should get here) |
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from taglens.errors import LibraryError, TaglensError, UnknownTagError
from taglens.server.service import QueueFull, RequestTimedOut

log = logging.getLogger("taglens.server")


COUNTED = {408: "body_timeout", 413: "too_large", 415: "unsupported_type"}


def install(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def counted(request: Request, exc: HTTPException) -> Response:
        if exc.status_code in COUNTED:
            request.app.state.metrics.rejected.labels(COUNTED[exc.status_code]).inc()
        return await http_exception_handler(request, exc)

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, exc: QueueFull) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 503, headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(RequestTimedOut)
    async def timed_out(request: Request, exc: RequestTimedOut) -> JSONResponse:
        return JSONResponse({"detail": f"request timed out: {exc}"}, 504)

    @app.exception_handler(UnknownTagError)
    async def unknown_tags(request: Request, exc: UnknownTagError) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "unknown_tags": exc.unknown}, 422)

    @app.exception_handler(LibraryError)
    async def library_error(request: Request, exc: LibraryError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 409)

    @app.exception_handler(TaglensError)
    async def taglens_error(request: Request, exc: TaglensError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__})"}, 500)
