"""uvicorn's HTTP/1.1 protocol (h11) with two guards against slow or greedy clients, which uvicorn
itself lacks: a request's headers must arrive within ``header_timeout_s`` of the connection opening
(or of the previous response on a kept-alive one), else the connection is closed (50 sockets
trickling header lines were never cut off); and one client address holds at most
``max_connections_per_client`` connections at once (more are closed as they open).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from taglens.server.settings import Settings


def guarded_protocol(header_timeout_s: float, max_connections_per_client: int) -> type[asyncio.Protocol]:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    open_by_client: Counter[str] = Counter()

    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None
        _peer: str | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._peer = self.client[0] if self.client else "?"
            open_by_client[self._peer] += 1
            if open_by_client[self._peer] > max_connections_per_client:
                transport.close()
                return
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._peer is not None:
                open_by_client[self._peer] -= 1
                if open_by_client[self._peer] <= 0:
                    del open_by_client[self._peer]
                self._peer = None
            super().connection_lost(exc)

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state in (h11.SEND_BODY, h11.DONE, h11.MUST_CLOSE, h11.CLOSED):
                self._disarm()  # the headers are in: the body has its own timeout

        def on_response_complete(self) -> None:
            self._arm()  # the next request's headers get the same time (disarmed at once if pipelined)
            super().on_response_complete()

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments every taglens server gives uvicorn (`uvicorn.run` / `uvicorn.Config`)."""
    return dict(http=guarded_protocol(settings.header_timeout_s, settings.max_connections_per_client),
                server_header=False, proxy_headers=False, timeout_keep_alive=5,
                # a backstop against connection floods; the queue's own 503 (with Retry-After) comes first
                limit_concurrency=1024 + 4 * settings.queue_size)
