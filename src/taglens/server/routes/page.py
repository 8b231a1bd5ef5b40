"""``GET /``: the web page (plain HTML, JS and CSS from ``server/static``; nothing from outside),
and ``GET /docs``: Swagger UI from the locally installed swagger-ui-bundle."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response

from taglens.server.security import DOCS_CSP, PAGE_CSP

STATIC = Path(__file__).resolve().parent.parent / "static"
router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"})


def swagger_assets() -> Path | None:
    """The folder of the swagger-ui-bundle package's files, if it is installed."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    return Path(str(swagger_ui_path))


@router.get("/docs")
async def docs() -> Response:
    if swagger_assets() is None:
        return HTMLResponse("<!doctype html><title>taglens API</title><p>Swagger UI is not installed "
                            "(pip install swagger-ui-bundle-v2); the schema is at <a href='/openapi.json'>"
                            "/openapi.json</a>.", headers={"Content-Security-Policy": DOCS_CSP})
    page = get_swagger_ui_html(openapi_url="/openapi.json", title="taglens API",
                               swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                               swagger_css_url="/docs-assets/swagger-ui.css",
                               swagger_favicon_url="/docs-assets/favicon-32x32.png")
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page
