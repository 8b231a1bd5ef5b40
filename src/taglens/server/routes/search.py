"""``GET /v1/search`` (text and filters) and ``POST /v1/search`` (also example images)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from taglens.server.catalog import Catalog, SearchQuery
from taglens.server.deps import CatalogDep, ServiceDep, SettingsDep, room_in_queue
from taglens.server.inputs import read_request
from taglens.server.routes.common import RESPONSES, json_response, request_body
from taglens.server.schemas import ErrorOut, SearchJson, SearchOut

router = APIRouter(prefix="/v1", tags=["search"])

SEARCH_RESPONSES = {
    **{k: v for k, v in RESPONSES.items() if k != 200},
    200: {"model": SearchOut, "description": "The best matches, best first; `score` is null for a filter-only search."},
    404: {"model": ErrorOut, "description": "No library, or an image id that is not in it."},
    409: {"model": ErrorOut, "description": "The library cannot answer this (e.g. nothing indexed with embeddings)."},
}
Texts = Annotated[list[Annotated[str, Field(min_length=1, max_length=1000)]], Query(max_length=20)]
Names = Annotated[list[Annotated[str, Field(min_length=1, max_length=200)]], Query(max_length=100)]


@router.get("/search", responses={k: v for k, v in SEARCH_RESPONSES.items() if k in (200, 401, 404, 409, 422)},
            summary="Search the library by text, tag and NSFW score")
async def search_text(
    catalog: CatalogDep,
    q: Texts = [],  # noqa: B006 (FastAPI copies defaults)
    minus: Texts = [],  # noqa: B006
    tag: Names = [],  # noqa: B006
    no_tag: Names = [],  # noqa: B006
    max_nsfw: Annotated[float | None, Query(ge=0, le=1)] = None,
    min_score: Annotated[float | None, Query(ge=-1e6, le=1e6)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> Response:
    """As `taglens search`: each `q` is a query part (weight as `2:beach`), `minus` pushes away,
    `tag`/`no_tag`/`max_nsfw` filter. A single text scores SigLIP's calibrated probability; with
    filters alone, matching images are listed in path order with `score` null."""
    query = SearchQuery(texts=q, minus=minus, tags=tag, no_tags=no_tag, max_nsfw=max_nsfw, min_score=min_score,
                        limit=limit)
    return json_response({"results": await run_in_threadpool(catalog.search, query)})


@router.post("/search", responses=SEARCH_RESPONSES, openapi_extra=request_body("Search"),
             dependencies=[Depends(room_in_queue)], summary="Search the library by text and example images")
async def search_images(request: Request, catalog: CatalogDep, service: ServiceDep, settings: SettingsDep) -> Response:
    """Like `GET /v1/search`, plus example images: uploaded as `files`, sent as base64 or allowed
    paths in `images`, or indexed images by `image_ids` (and `minus_image_ids`). An image part
    scores the cosine between embeddings."""
    options, images = await read_request(request, SearchJson, settings, images_required=False)
    vectors = []
    if images:
        job = await run_in_threadpool(lambda: catalog.embedder().job(embedding=True))
        with service.admit(len(images)):
            records = await service.run(images, [job])
        if not all(r.ok for r in records):
            return json_response({"detail": "a query image could not be embedded",
                                  "results": [r.to_json(embedding=False) for r in records]}, 422)
        vectors = [r.embedding for r in records]
    stored = [await _stored(catalog, i) for i in options.image_ids]
    minus = [await _stored(catalog, i) for i in options.minus_image_ids]
    query = SearchQuery(texts=options.q, minus=options.minus, vectors=vectors + stored, minus_vectors=minus,
                        tags=options.tags, no_tags=options.no_tags, max_nsfw=options.max_nsfw,
                        min_score=options.min_score, limit=options.limit)
    return json_response({"results": await run_in_threadpool(catalog.search, query)})


async def _stored(catalog: Catalog, image_id: int):
    vector = await run_in_threadpool(catalog.stored_vector, image_id)
    if vector is None:
        raise HTTPException(404, f"no embedded image with id {image_id} in the library")
    return vector
