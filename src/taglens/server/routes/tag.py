"""``POST /v1/tag``: JoyTag tags, as `taglens tag`: each tag scoring above `threshold` (per-tag `thresholds` win), best first, at most `top_k`, never the `exclude`d ones."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from taglens.server.deps import ServiceDep, SettingsDep, room_in_queue
from taglens.server.routes.common import RESPONSES, request_body, run_images
from taglens.server.schemas import TagJson

router = APIRouter(prefix="/v1", tags=["images"])


@router.post("/tag", responses=RESPONSES, openapi_extra=request_body("Tag"), dependencies=[Depends(room_in_queue)],
             summary="JoyTag tags, as `taglens tag`")
async def tag(request: Request, service: ServiceDep, settings: SettingsDep) -> Response:
    """JoyTag tags, as `taglens tag`: each tag scoring above `threshold` (per-tag `thresholds` win), best first, at most `top_k`, never the `exclude`d ones.

    Send images as multipart `files` fields (options as form fields), or as JSON
    `{"images": [{"data": "<base64>"} | {"path": "..."}], ...options}`.
    """
    return await run_images(request, TagJson, service, settings)
