"""``POST /v1/classify``: Zero-shot labels, as `taglens classify`: SigLIP's independent probability per label (CLIP: a softmax over the labels), best first."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from taglens.server.deps import ServiceDep, SettingsDep, room_in_queue
from taglens.server.routes.common import RESPONSES, request_body, run_images
from taglens.server.schemas import ClassifyJson

router = APIRouter(prefix="/v1", tags=["images"])


@router.post("/classify", responses=RESPONSES, openapi_extra=request_body("Classify"), dependencies=[Depends(room_in_queue)],
             summary="Zero-shot labels, as `taglens classify`")
async def classify(request: Request, service: ServiceDep, settings: SettingsDep) -> Response:
    """Zero-shot labels, as `taglens classify`: SigLIP's independent probability per label (CLIP: a softmax over the labels), best first.

    Send images as multipart `files` fields (options as form fields), or as JSON
    `{"images": [{"data": "<base64>"} | {"path": "..."}], ...options}`.
    """
    return await run_images(request, ClassifyJson, service, settings)
