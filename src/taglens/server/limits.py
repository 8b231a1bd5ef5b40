"""Request body limits, enforced while the body streams in: size (413) and time to send it (408).

A declared ``Content-Length`` over the limit is refused before a byte is read; a chunked body is
counted as it arrives and refused the moment it passes the limit, so a client can never make the
server hold more than ``max_request_bytes`` of one request. A body that trickles in slower than
``body_timeout_s`` in total is refused too (slow-loris uploads would otherwise hold a connection
and a queue place forever).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from taglens.server.metrics import Metrics


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body larger than {limit} bytes")


class BodyTimeout(HTTPException):
    def __init__(self, seconds: float):
        super().__init__(408, f"request body not received within {seconds:g} s")


class BodyLimitMiddleware:
    def __init__(self, app: Any, *, max_bytes: int, timeout: float, metrics: Metrics | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send, BodyTooLarge(self.max_bytes))
            return
        received = 0
        done = False
        deadline = time.monotonic() + self.timeout

        async def limited_receive() -> dict:
            nonlocal received, done
            if done:  # after the body, receive() only waits for a disconnect: no limit applies
                return await receive()
            remaining = deadline - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(remaining, 0.001))
            except TimeoutError:
                raise BodyTimeout(self.timeout) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
                done = not message.get("more_body", False)
            return message

        started = False

        async def tracked_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except (BodyTooLarge, BodyTimeout) as exc:  # raised where no handler turned it into a response
            if started:
                raise
            await self._refuse(scope, receive, send, exc)

    async def _refuse(self, scope: dict, receive: Any, send: Any, exc: HTTPException) -> None:
        if self.metrics is not None:
            self.metrics.rejected.labels("too_large" if exc.status_code == 413 else "body_timeout").inc()
        response = JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers={"Connection": "close"})
        await response(scope, receive, send)


def _content_length(scope: dict) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
