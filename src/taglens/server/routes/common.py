"""What the five image routes share: read the request, make the jobs, admit, run, answer.

The answer is ``{"results": [...], "models": [...]}`` with one record per image in request order,
each exactly a line of the CLI's JSONL output. As the CLI's exit status is 0 when at least one
image has results, the status is 200 when at least one image has results (all of them, or some
jobs' with a ``<task>_error`` for each job that failed on it: see `taglens.records`); when no
image has any (each could not be decoded, or every job failed on it), it is 422 and ``results``
holds each image's reasons.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel

from taglens.io.names import dumps
from taglens.server.inputs import read_request
from taglens.server.schemas import ErrorOut, ImageErrorsOut, ResultsOut, UnknownTagsOut
from taglens.server.service import Service
from taglens.server.settings import Settings

RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": ResultsOut, "description": "One record per image, in request order."},
    400: {"model": ErrorOut, "description": "A malformed multipart body (or one with too many fields)."},
    401: {"model": ErrorOut, "description": "An API key is required and was missing or wrong."},
    403: {"model": ErrorOut, "description": "A path outside the allowed folders, or a cross-origin request."},
    408: {"model": ErrorOut, "description": "The request body did not arrive in time."},
    413: {"model": ErrorOut, "description": "An image or the whole body too large."},
    415: {"model": ErrorOut, "description": "Neither multipart/form-data nor JSON, or an upload that is not an image."},
    422: {"model": ImageErrorsOut | UnknownTagsOut | ErrorOut,
          "description": "Invalid options (unknown tag names are listed in `unknown_tags`), too many images, or no "
                         "image has any result (each image's reasons in `results`)."},
    503: {"model": ErrorOut, "description": "The image queue is full; retry after `Retry-After` seconds.",
          "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}}},
    504: {"model": ErrorOut, "description": "Not done within the request timeout."},
}


def request_body(name: str) -> dict[str, Any]:
    """OpenAPI for a body that is either a multipart form (``{name}Form``) or JSON (``{name}Json``)."""
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"$ref": f"#/components/schemas/{name}Form"}},
        "application/json": {"schema": {"$ref": f"#/components/schemas/{name}Json"}},
    }}}


async def run_images(request: Request, json_model: type[BaseModel], service: Service, settings: Settings) -> Response:
    options, images = await read_request(request, json_model, settings)
    task = options.task_request()  # type: ignore[attr-defined]
    jobs = await service.jobs(task)
    with service.admit(len(images)):
        records = await service.run(images, jobs)
    results = [record.to_json() for record in records]
    if not any(record.ok for record in records):
        what = "the image could not" if len(records) == 1 else f"none of the {len(records)} images could"
        return json_response({"detail": f"{what} be processed", "results": results}, 422)
    models = [{"task": job.name, "model_id": job.model_id, "revision": job.revision} for job in jobs]
    return json_response({"results": results, "models": models})


def json_response(content: Any, status_code: int = 200) -> Response:
    """JSON, with any non-finite score written as null (NaN is not JSON) and a file name that is
    not UTF-8 in its ``\\udcXX`` form (`taglens.io.names.dumps`)."""
    try:
        body = dumps(content, allow_nan=False, separators=(",", ":"))
    except ValueError:
        body = dumps(_finite(content), separators=(",", ":"))
    return Response(body.encode("utf-8"), status_code, media_type="application/json")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
