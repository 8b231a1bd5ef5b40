"""``GET /healthz`` (up, models, queue) and ``GET /metrics`` (Prometheus text)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from taglens.server.deps import ServiceDep
from taglens.server.metrics import CONTENT_TYPE
from taglens.server.routes.common import json_response
from taglens.server.schemas import ErrorOut, HealthOut

router = APIRouter(tags=["service"])
UNAUTHORISED = {401: {"model": ErrorOut, "description": "An API key is required and was missing or wrong."}}


@router.get("/healthz", responses={200: {"model": HealthOut}, **UNAUTHORISED}, summary="Is the service up")
async def healthz(request: Request, service: ServiceDep) -> Response:
    """200 once the models are loaded: which checkpoints serve each task, and the queue."""
    models = request.app.state.model_identities
    return json_response({
        "status": "ok",
        "models": models,
        "library": request.app.state.catalog is not None,
        "queue": {"admitted": service.admitted, "capacity": service.settings.queue_size,
                  "waiting_for_batch": service.waiting_for_batch},
    })


@router.get("/metrics", summary="Prometheus metrics",
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}, **UNAUTHORISED})
async def metrics(request: Request) -> Response:
    """Requests, latency, images, refusals, batch sizes and the queue, in Prometheus text format."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)
