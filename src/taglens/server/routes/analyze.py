"""``POST /v1/analyze``: Several jobs in one pass, as `taglens analyze`: each image decoded once, one record with every job's fields."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from taglens.server.deps import ServiceDep, SettingsDep, room_in_queue
from taglens.server.routes.common import RESPONSES, request_body, run_images
from taglens.server.schemas import AnalyzeJson

router = APIRouter(prefix="/v1", tags=["images"])


@router.post("/analyze", responses=RESPONSES, openapi_extra=request_body("Analyze"), dependencies=[Depends(room_in_queue)],
             summary="Several jobs in one pass, as `taglens analyze`")
async def analyze(request: Request, service: ServiceDep, settings: SettingsDep) -> Response:
    """Several jobs in one pass, as `taglens analyze`: each image decoded once, one record with every job's fields.

    Send images as multipart `files` fields (options as form fields), or as JSON
    `{"images": [{"data": "<base64>"} | {"path": "..."}], ...options}`.
    """
    return await run_images(request, AnalyzeJson, service, settings)
