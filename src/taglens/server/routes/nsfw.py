"""``POST /v1/nsfw``: NSFW scores, as `taglens nsfw`: every label's score, the top label, and `flagged` when a `positive_label` scores at or above `threshold`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from taglens.server.deps import ServiceDep, SettingsDep, room_in_queue
from taglens.server.routes.common import RESPONSES, request_body, run_images
from taglens.server.schemas import NsfwJson

router = APIRouter(prefix="/v1", tags=["images"])


@router.post("/nsfw", responses=RESPONSES, openapi_extra=request_body("Nsfw"), dependencies=[Depends(room_in_queue)],
             summary="NSFW scores, as `taglens nsfw`")
async def nsfw(request: Request, service: ServiceDep, settings: SettingsDep) -> Response:
    """NSFW scores, as `taglens nsfw`: every label's score, the top label, and `flagged` when a `positive_label` scores at or above `threshold`.

    Send images as multipart `files` fields (options as form fields), or as JSON
    `{"images": [{"data": "<base64>"} | {"path": "..."}], ...options}`.
    """
    return await run_images(request, NsfwJson, service, settings)
