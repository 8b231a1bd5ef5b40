"""``create_app(settings)``: the FastAPI application of ``taglens serve``.

    from taglens.server import Settings, create_app
    app = create_app(Settings(library="~/.local/share/taglens"))   # run with uvicorn

The lifespan opens the library (read-only use), picks the checkpoints (a flag, else the one the
library was indexed with, else the default), loads every model once into a shared
`taglens.models.modelset.ModelSet`, and starts the `taglens.server.service.Service` (decode pool, batcher).
All of it lives in ``app.state``; routes reach it through `taglens.server.deps`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.concurrency import run_in_threadpool

from taglens import __version__
from taglens.server import errors, schemas
from taglens.server.catalog import Catalog
from taglens.server.limits import BodyLimitMiddleware
from taglens.server.metrics import Metrics, MetricsMiddleware
from taglens.server.routes import analyze, classify, embed, health, images, nsfw, page, search, tag
from taglens.server.security import GuardMiddleware, require_api_key
from taglens.server.service import Service, TextTowerOnModelThread
from taglens.server.settings import Settings
from taglens.models import registry
from taglens.models.modelset import ModelSet

log = logging.getLogger("taglens.server")

# (route name, JSON body model, options model) of the routes whose body is JSON or a form
BODIES: tuple[tuple[str, type[BaseModel], type[BaseModel]], ...] = (
    ("Tag", schemas.TagJson, schemas.TagOptions),
    ("Classify", schemas.ClassifyJson, schemas.ClassifyOptions),
    ("Nsfw", schemas.NsfwJson, schemas.NsfwOptions),
    ("Embed", schemas.EmbedJson, schemas.EmbedOptions),
    ("Analyze", schemas.AnalyzeJson, schemas.AnalyzeOptions),
    ("Search", schemas.SearchJson, schemas.SearchOptions),
)


def choose_checkpoints(settings: Settings, current: dict[str, str]) -> dict[str, str]:
    """tagger / siglip / nsfw_model: the flag, else the library's current checkpoint (``current``:
    task -> model id), else the default."""

    def pick(flag: str | None, task: str) -> str:
        return flag or current.get(task) or registry.for_task(task).hub_id

    return {"tagger": pick(settings.tagger, "tag"), "siglip": pick(settings.siglip, "embed"),
            "nsfw_model": pick(settings.nsfw_model, "nsfw")}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    models: ModelSet | None = None

    def library_embedder(model_id: str, revision: str) -> Any:
        """Search's embedder: the shared one when it is the library's checkpoint, else that exact one;
        either way its text tower runs on the engine's model thread."""
        shared = models.load_embedder() if models is not None else None
        if shared is not None and (shared.model_id, shared.revision) == (model_id, revision):
            embedder = shared
        else:
            from taglens.models.siglip import Embedder

            embedder = Embedder.from_pretrained(model_id, revision=revision, device=settings.device,
                                                dtype=settings.dtype, tf32=settings.tf32)
        return TextTowerOnModelThread(embedder, service.engine) if service is not None else embedder

    catalog = Catalog.open(settings.library, library_embedder) if settings.library is not None else None
    service = None
    try:
        current = {task: row["model_id"] for task, row in (catalog.current_models() if catalog else {}).items()}
        models = ModelSet(**choose_checkpoints(settings, current), device=settings.device, dtype=settings.dtype,
                          tf32=settings.tf32)
        service = Service(settings, models, app.state.metrics)
        await run_in_threadpool(service.load)
        app.state.model_identities = [
            {"task": task, "model_id": family.model_id, "revision": family.revision}
            for task, family in (("tag", models.load_tagger()), ("classify+embed", models.load_embedder()),
                                 ("nsfw", models.load_nsfw()))]
        app.state.service = service
        app.state.catalog = catalog
        log.info("taglens serve: models loaded: %s", app.state.model_identities)
        yield
    finally:
        if service is not None:
            service.close()
        if catalog is not None:
            catalog.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The application for ``settings`` (validated already: an unsafe or inconsistent combination
    cannot be constructed). Models load when the app starts (its lifespan), not here."""
    settings = settings or Settings()
    app = FastAPI(
        title="taglens",
        version=__version__,
        summary="Tag, classify, detect NSFW and search images with open models.",
        description="Every image endpoint returns the same records as the command line's JSON lines. "
                    "See docs/server.md.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics = Metrics()
    app.state.catalog = None
    app.state.model_identities = []

    auth = [Depends(require_api_key)] if settings.auth_required else []  # the schema shows it only when on
    for module in (tag, classify, nsfw, embed, analyze, search, images):
        app.include_router(module.router, dependencies=auth)
    app.include_router(health.router, dependencies=auth)
    app.include_router(page.router)
    app.mount("/static", StaticFiles(directory=page.STATIC), name="static")
    assets = page.swagger_assets()
    if assets is not None:
        app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")
    errors.install(app)

    # outermost last: metrics see every answer, including the guards' refusals
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes, timeout=settings.body_timeout_s,
                       metrics=metrics)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"], max_age=600)
    app.add_middleware(GuardMiddleware, hosts=settings.hosts, origins=settings.cors_origins)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.openapi = lambda: openapi(app)  # type: ignore[method-assign]
    return app


def openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the two body forms (JSON and multipart) of the image routes."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, description=app.description,
                             routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        _, defs = models_json_schema([(model, "validation") for _, model, _ in BODIES],
                                     ref_template="#/components/schemas/{model}")
        components.update(defs.get("$defs", {}))
        limit = app.state.settings.max_images_per_request
        for name, json_model, options in BODIES:
            components[f"{name}Json"] = components.pop(json_model.__name__)
            components[f"{name}Form"] = form_schema(options, files_required=name != "Search")
            if name != "Search":  # the configured limit, so that the schema says what is accepted
                components[f"{name}Json"]["properties"]["images"]["maxItems"] = limit
                components[f"{name}Form"]["properties"]["files"]["maxItems"] = limit
        app.openapi_schema = schema
    return app.openapi_schema


def form_schema(options: type[BaseModel], *, files_required: bool) -> dict[str, Any]:
    """A multipart form's schema: ``files`` (binary) plus the options, lists as repeated fields and
    objects (``thresholds``) as JSON text."""
    base = options.model_json_schema(ref_template="#/components/schemas/{model}")
    properties: dict[str, Any] = {"files": {"type": "array", "items": {"type": "string", "format": "binary"},
                                            "minItems": 1 if files_required else 0,
                                            "description": "The images, one file field each."}}
    for name, prop in base.get("properties", {}).items():
        choices = [p for p in prop.get("anyOf", []) if p.get("type") != "null"]
        if len(choices) == 1:  # a form field is absent or has a value: never null
            prop = {**{k: v for k, v in prop.items() if k not in ("anyOf", "default")}, **choices[0]}
        if prop.get("type") == "object":  # per-tag thresholds: repeated TAG=VALUE fields
            prop = {"type": "array", "title": prop.get("title", name), "description": prop.get("description", ""),
                    "items": {"type": "string", "pattern": schemas.THRESHOLD_FIELD, "maxLength": 300},
                    "maxItems": prop.get("maxProperties", 10_000)}
        properties[name] = prop
    out: dict[str, Any] = {"type": "object", "title": f"{options.__name__} form", "properties": properties,
                           "additionalProperties": False}
    required = (["files"] if files_required else []) + list(base.get("required", []))
    if required:
        out["required"] = required
    return out
