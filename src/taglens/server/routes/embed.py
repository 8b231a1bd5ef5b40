"""``POST /v1/embed``: Image embeddings, as `taglens embed`: the L2-normalised SigLIP/CLIP image vector of each image."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from taglens.server.deps import ServiceDep, SettingsDep, room_in_queue
from taglens.server.routes.common import RESPONSES, request_body, run_images
from taglens.server.schemas import EmbedJson

router = APIRouter(prefix="/v1", tags=["images"])


@router.post("/embed", responses=RESPONSES, openapi_extra=request_body("Embed"), dependencies=[Depends(room_in_queue)],
             summary="Image embeddings, as `taglens embed`")
async def embed(request: Request, service: ServiceDep, settings: SettingsDep) -> Response:
    """Image embeddings, as `taglens embed`: the L2-normalised SigLIP/CLIP image vector of each image.

    Send images as multipart `files` fields (options as form fields), or as JSON
    `{"images": [{"data": "<base64>"} | {"path": "..."}], ...options}`.
    """
    return await run_images(request, EmbedJson, service, settings)
