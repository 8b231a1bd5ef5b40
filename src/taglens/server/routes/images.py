"""``GET /v1/images/{id}`` and its ``/thumbnail``, ``/info`` and ``/similar``: indexed images by id.

The id is the only thing taken from the URL, an integer; the file is found from it in the
library's database, and served only while unchanged since indexing (see `taglens.server.catalog`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from taglens.errors import ImageDecodeError
from taglens.server.catalog import SearchQuery, media_type
from taglens.server.deps import CatalogDep, ServiceDep, SettingsDep
from taglens.server.routes.common import json_response
from taglens.server.schemas import ErrorOut, ImageInfoOut, SearchOut
from taglens.server.security import IMAGE_CSP

router = APIRouter(prefix="/v1/images", tags=["images"])

ImageId = Annotated[int, Path(ge=1, le=2**62, description="The image's id in the library (from a search result).")]
NOT_FOUND = {404: {"model": ErrorOut, "description": "No such image, no library, or its file changed or is gone."},
             401: {"model": ErrorOut, "description": "An API key is required and was missing or wrong."}}
CACHE = "private, max-age=3600"


@router.get("/{image_id}", response_class=FileResponse, summary="The image file",
            responses={200: {"content": {"image/*": {}}, "description": "The original file."}, **NOT_FOUND})
async def image(image_id: ImageId, catalog: CatalogDep) -> Response:
    """The indexed file itself, with its type read from its header."""
    path = await run_in_threadpool(catalog.file, image_id)
    if path is None:
        raise HTTPException(404, f"no image {image_id}, or its file changed or is gone since it was indexed")
    kind = await run_in_threadpool(media_type, path)
    return FileResponse(path, media_type=kind, headers={"Content-Security-Policy": IMAGE_CSP, "Cache-Control": CACHE,
                                                        "Content-Disposition": "inline"})


@router.get("/{image_id}/thumbnail", summary="A JPEG thumbnail",
            responses={200: {"content": {"image/jpeg": {}}, "description": "JPEG, at most `size` pixels a side."},
                       **NOT_FOUND})
async def thumbnail(image_id: ImageId, catalog: CatalogDep, settings: SettingsDep, service: ServiceDep,
                    size: Annotated[int | None, Query(ge=16, le=1024)] = None) -> Response:
    """The image scaled down to fit `size` x `size` (default: the server's --thumbnail-size)."""
    try:
        data = await service.thumbnail(catalog.thumbnail, image_id, size or settings.thumbnail_size,
                                       pixels=lambda: catalog.pixels(image_id))
    except ImageDecodeError as exc:
        raise HTTPException(404, f"image {image_id} cannot be read now: {exc.reason}") from None
    if data is None:
        raise HTTPException(404, f"no image {image_id}, or its file changed or is gone since it was indexed")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": CACHE})


@router.get("/{image_id}/info", responses={200: {"model": ImageInfoOut}, **NOT_FOUND}, summary="What the library knows")
async def info(image_id: ImageId, catalog: CatalogDep) -> Response:
    """The image's sha256, size, every path holding it, its tags and NSFW scores."""
    found = await run_in_threadpool(catalog.info, image_id)
    if found is None:
        raise HTTPException(404, f"no image {image_id} in the library")
    return json_response(found)


@router.get("/{image_id}/similar", summary="Images like this one",
            responses={200: {"model": SearchOut}, **NOT_FOUND,
                       409: {"model": ErrorOut, "description": "The library has no embeddings."}})
async def similar(image_id: ImageId, catalog: CatalogDep,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 12) -> Response:
    """The closest other images by embedding cosine, best first (the image itself left out)."""
    vector = await run_in_threadpool(catalog.stored_vector, image_id)
    if vector is None:
        raise HTTPException(404, f"no embedded image {image_id} in the library")
    query = SearchQuery(vectors=[vector], limit=limit, exclude=frozenset({image_id}))
    return json_response({"results": await run_in_threadpool(catalog.search, query)})
