"""The HTTP service (``taglens serve``): FastAPI on uvicorn, an optional extra (``taglens[server]``).

Nothing in taglens's core imports this package; it imports FastAPI, so importing it needs the
extra installed. `create_app` builds the app from `Settings`; see docs/server.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taglens.server.app import create_app
    from taglens.server.settings import Settings

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from taglens.server.app import create_app

        return create_app
    if name == "Settings":
        from taglens.server.settings import Settings

        return Settings
    raise AttributeError(name)
