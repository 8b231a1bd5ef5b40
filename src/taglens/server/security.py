"""Who may call the service: the API key, the Host and Origin checks, and the response headers.

- **API key**: when one is set, every API route needs ``Authorization: Bearer KEY`` or
  ``X-API-Key: KEY`` (compared in constant time); the web page asks for it once and sends it.
- **Host**: on a loopback bind only loopback names are accepted in the Host header, so a web page
  on another site cannot reach the service by pointing its own domain at 127.0.0.1 (DNS
  rebinding) and read your images.
- **Origin**: a browser request from another origin is refused (403) unless that origin was
  allowed with ``--cors-origin``; CORS is closed by default, and this also stops cross-site form
  posts, which browsers send without asking.
- **Headers**: no MIME sniffing, no framing, no referrer; the page's own Content-Security-Policy
  allows nothing from outside the service.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import JSONResponse

from taglens.server.settings import Settings

bearer = HTTPBearer(auto_error=False, description="The server's --api-key, as a bearer token.")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The server's --api-key.")

PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
            "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
DOCS_CSP = ("default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'")
IMAGE_CSP = "default-src 'none'; sandbox"


def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    header_key: Annotated[str | None, Depends(api_key_header)],
) -> None:
    """A dependency of every API route: passes when no key is set or the right key is sent."""
    settings: Settings = request.app.state.settings
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    offered = [c.encode() for c in (credentials.credentials if credentials else None, header_key) if c]
    if not any(hmac.compare_digest(expected, key) for key in offered):
        raise HTTPException(401, "missing or wrong API key (send 'Authorization: Bearer KEY' or 'X-API-Key: KEY')",
                            headers={"WWW-Authenticate": "Bearer"})


class GuardMiddleware:
    """Host and Origin checks, and security headers on every response."""

    def __init__(self, app: Any, *, hosts: tuple[str, ...], origins: tuple[str, ...]):
        self.app = app
        self.any_host = "*" in hosts
        self.hosts = {h.lower().strip("[]") for h in hosts}
        self.origins = {o.rstrip("/").lower() for o in origins}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        host = headers.get("host", "")
        if not self.any_host and _host_name(host) not in self.hosts:
            await JSONResponse({"detail": f"host {host!r} is not served here"}, 400)(scope, receive, send)
            return
        origin = headers.get("origin")
        if origin is not None and not self._origin_allowed(origin, host, scope):
            await JSONResponse({"detail": f"cross-origin requests from {origin} are not allowed"}, 403)(
                scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                         (b"referrer-policy", b"no-referrer"), (b"cross-origin-resource-policy", b"same-origin")]
                message["headers"] = list(message.get("headers", [])) + [(k, v) for k, v in extra if k not in present]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _origin_allowed(self, origin: str, host: str, scope: dict) -> bool:
        origin = origin.rstrip("/").lower()
        if origin in self.origins or "*" in self.origins:
            return True
        parts = urlsplit(origin)
        scheme = scope.get("scheme", "http")
        return parts.scheme == scheme and parts.netloc == host.lower()


def _host_name(host: str) -> str:
    """``127.0.0.1:8000`` -> ``127.0.0.1``; ``[::1]:8000`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
