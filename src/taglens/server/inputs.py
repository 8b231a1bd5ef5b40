"""Reading a request's images and options: multipart uploads, or JSON with base64 data or paths.

- ``multipart/form-data``: one or more file fields named ``files``; the options as form fields
  (lists comma-separated like the CLI's flags, or the field repeated; ``thresholds`` as JSON).
- ``application/json``: ``{"images": [{"data": "<base64>"} | {"path": "..."}], ...options}``.

Limits, checked here: the number of images (422, like any list too long for the schema, whose
``maxItems`` is the configured limit), each image's size (413), declared content
types (415: only ``image/*`` and ``application/octet-stream`` uploads), and paths, which must lie
inside a folder given with ``--allow-path`` after every symlink is resolved (403 otherwise).
Option errors are 422 in FastAPI's usual shape.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

import numpy as np
from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from taglens.io.names import printable
from taglens.server.schemas import THRESHOLD_FIELD, ImageData, ImagePath
from taglens.server.service import NamedSource
from taglens.server.settings import Settings

M = TypeVar("M", bound=BaseModel)

FILE_FIELD = "files"
MAX_FIELDS = 25_000  # room for every list option at its schema's maxItems; beyond: 400
UPLOAD_TYPES = ("image/", "application/octet-stream")
# options never split at commas: a prompt template may hold one
NO_SPLIT = frozenset({"templates", "q", "minus"})
MAX_JSON_DEPTH = 32  # the deepest body the schemas allow is 4; room for extensions, none for bombs


class UnsupportedType(HTTPException):
    def __init__(self, detail: str):
        super().__init__(415, detail)


async def read_request(request: Request, json_model: type[M], settings: Settings, *,
                       images_required: bool = True) -> tuple[M, list[NamedSource]]:
    """The options (validated ``json_model``, whose ``images`` field is consumed) and the images."""
    kind = _media_type(request)
    if kind == "multipart/form-data":
        return await _read_multipart(request, json_model, settings, images_required)
    if kind == "application/json" or kind.endswith("+json"):
        return await _read_json(request, json_model, settings)
    raise UnsupportedType(f"send multipart/form-data (files) or application/json, not {kind or 'no content type'}")


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def _read_json(request: Request, model: type[M], settings: Settings) -> tuple[M, list[NamedSource]]:
    body = await request.body()
    if (depth := json_depth(body)) > MAX_JSON_DEPTH:
        raise RequestValidationError([{"type": "json_invalid", "loc": ["body"], "input": None,
                                       "msg": f"JSON nested {depth} deep; the limit is {MAX_JSON_DEPTH}"}])
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestValidationError([{"type": "json_invalid", "loc": ["body"], "msg": f"invalid JSON: {exc}",
                                       "input": None}]) from None
    if not isinstance(data, dict):
        raise RequestValidationError([{"type": "model_type", "loc": ["body"], "msg": "the body must be a JSON object",
                                       "input": None}])
    if errors := list(_non_finite(data, ["body"])):
        raise RequestValidationError(errors)
    items = data.get("images")
    if isinstance(items, list) and len(items) > settings.max_images_per_request:
        raise too_many(len(items), settings, "images")
    names = _take_undecodable_paths(items)
    options = validate(model, data)
    for i, path in names.items():
        options.images[i].path = path  # type: ignore[attr-defined]
    images = [_json_image(i, item, settings) for i, item in enumerate(getattr(options, "images", []))]
    return options, images


def json_depth(body: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest, counted without parsing it (so a body
    nested 100,000 deep is refused before the parser recurses): brackets outside strings."""
    outside = _JSON_STRING.sub(b"", body)
    codes = np.frombuffer(outside, np.uint8)
    steps = np.isin(codes, _OPEN).astype(np.int32) - np.isin(codes, _CLOSE).astype(np.int32)
    return int(np.cumsum(steps).max(initial=0))


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_OPEN, _CLOSE = np.frombuffer(b"[{", np.uint8), np.frombuffer(b"]}", np.uint8)


def _non_finite(value: Any, loc: list[Any]) -> Iterator[dict[str, Any]]:
    """A 422 error, naming the field, for each NaN, Infinity or out-of-range number (``1e400``)
    that Python's JSON parser reads as a float that is not finite."""
    if isinstance(value, float) and not math.isfinite(value):
        yield {"type": "finite_number", "loc": loc, "msg": "Input should be a finite number", "input": None}
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(item, [*loc, key])
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _non_finite(item, [*loc, i])


def _take_undecodable_paths(items: Any) -> dict[int, str]:
    """Each ``images[i].path`` that is not valid UTF-8 (its bytes sent as ``\\udcXX`` escapes, see
    `taglens.io.names`), replaced by its printable form for validation (pydantic holds only UTF-8),
    to be put back after it: {i: the path}."""
    taken = {}
    for i, item in enumerate(items if isinstance(items, list) else []):
        path = item.get("path") if isinstance(item, dict) else None
        if isinstance(path, str) and printable(path) != path:
            taken[i], item["path"] = path, printable(path)
    return taken


def _json_image(index: int, item: ImageData | ImagePath, settings: Settings) -> NamedSource:
    if isinstance(item, ImagePath):
        return NamedSource(item.path, allowed_path(item.path, settings))
    try:
        raw = base64.b64decode(_padded(item.data), validate=True)
    except (binascii.Error, ValueError):
        raise RequestValidationError([{"type": "base64", "loc": ["body", "images", index, "data"],
                                       "msg": "not valid base64", "input": None}]) from None
    if len(raw) > settings.max_image_bytes:
        raise HTTPException(413, f"image {index} is {len(raw)} bytes; the limit is {settings.max_image_bytes}")
    return NamedSource(item.name or f"<image {index}>", raw)


def too_many(n: int, settings: Settings, field: str) -> RequestValidationError:
    limit = settings.max_images_per_request
    return RequestValidationError([{"type": "too_long", "loc": ["body", field], "input": None,
                                    "msg": f"{n} images in one request; the limit is {limit}"}])


def _padded(text: str) -> str:
    return text + "=" * (-len(text) % 4)


def allowed_path(text: str, settings: Settings) -> str:
    """The resolved path, if it lies inside an allowed folder; 403 otherwise (also when none is
    allowed). Symlinks are resolved first, so a link cannot lead outside."""
    if not settings.allow_paths:
        raise HTTPException(403, "this server reads no paths (it allows no folder); upload the image instead")
    if "\x00" in text:
        raise HTTPException(403, "path outside the allowed folders")
    resolved = Path(os.path.realpath(os.path.expanduser(text) if text.startswith("~") else text))
    if not resolved.is_absolute() or not any(resolved.is_relative_to(root) for root in settings.allow_paths):
        raise HTTPException(403, "path outside the allowed folders")
    return str(resolved)


async def _read_multipart(request: Request, model: type[M], settings: Settings,
                          images_required: bool) -> tuple[M, list[NamedSource]]:
    limit = settings.max_images_per_request
    form = await request.form(max_files=limit + 1, max_fields=MAX_FIELDS, max_part_size=1024 * 1024)
    try:
        uploads = [v for v in form.getlist(FILE_FIELD)]
        if len(uploads) > limit:
            raise too_many(len(uploads), settings, FILE_FIELD)
        images = []
        for i, upload in enumerate(uploads):
            if not isinstance(upload, UploadFile):
                raise RequestValidationError([{"type": "missing", "loc": ["body", FILE_FIELD, i],
                                               "msg": "each 'files' field must be a file upload", "input": None}])
            declared = (upload.content_type or "").split(";", 1)[0].strip().lower()
            if declared and not declared.startswith(UPLOAD_TYPES):
                raise UnsupportedType(f"file {upload.filename or i!s} is {declared}; send images "
                                      "(image/* or application/octet-stream)")
            data = await upload.read(settings.max_image_bytes + 1)
            if len(data) > settings.max_image_bytes:
                raise HTTPException(413, f"file {upload.filename or i!s} is larger than {settings.max_image_bytes} bytes")
            images.append(NamedSource(upload.filename or f"<upload {i}>", data))
        fields = _form_fields(form, model)
    finally:
        await form.close()
    if images_required and not images:
        raise RequestValidationError([{"type": "missing", "loc": ["body", FILE_FIELD],
                                       "msg": "send at least one image as a 'files' field", "input": None}])
    return validate(_without_images(model), fields), images  # type: ignore[return-value]


def _form_fields(form: Any, model: type[BaseModel]) -> dict[str, Any]:
    """Form values shaped for ``model``: lists from repeated or comma-separated fields, dicts from JSON."""
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for k in form if k != FILE_FIELD):
        values = [v for v in form.getlist(key) if isinstance(v, str)]
        if len(values) != len(form.getlist(key)):
            raise RequestValidationError([{"type": "string_type", "loc": ["body", key],
                                           "msg": "only 'files' fields may hold files", "input": None}])
        field = model.model_fields.get(key)
        shape = _shape(field.annotation) if field is not None else None
        if shape is list:
            out[key] = [part for v in values for part in (v.split(",") if key not in NO_SPLIT else [v])
                        if part.strip() or key in NO_SPLIT]
        elif shape is dict:
            out[key] = _pairs(key, values)
        else:
            out[key] = values[-1] if len(values) == 1 else values
    return out


def _pairs(key: str, values: list[str]) -> dict[str, str]:
    """``["long_hair=0.3", "=_==0.5"]`` -> ``{"long_hair": "0.3", "=_=": "0.5"}`` (split at the last '=')."""
    out = {}
    for i, value in enumerate(values):
        name, _, number = value.rpartition("=")
        if not re.fullmatch(THRESHOLD_FIELD, value):
            raise RequestValidationError([{"type": "value_error", "loc": ["body", key, i],
                                           "msg": "expected TAG=VALUE", "input": value[:200]}])
        out[name] = number
    return out


def _shape(annotation: Any) -> type | None:
    for candidate in (annotation, *get_args(annotation)):
        origin = get_origin(candidate) or candidate
        if origin in (list, dict):
            return origin
    return None


_FORM_MODELS: dict[type, type] = {}


def _without_images(model: type[M]) -> type[M]:
    """``model`` minus its ``images`` field (the options part of a JSON body model)."""
    if "images" not in model.model_fields:
        return model
    if model not in _FORM_MODELS:
        base = model.__mro__[1]
        _FORM_MODELS[model] = base if "images" not in base.model_fields else model
    return _FORM_MODELS[model]  # type: ignore[return-value]


def validate(model: type[M], data: Any) -> M:
    """``model.model_validate`` with errors in FastAPI's 422 shape (JSON-safe)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        try:
            errors = json.loads(exc.json(include_url=False))
        except ValueError:  # an input JSON cannot hold (text that is not UTF-8): named, not echoed
            errors = [{"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"], "input": None}
                      for e in exc.errors(include_url=False)]
        for error in errors:
            error["loc"] = ["body", *error.get("loc", [])]
            if len(json.dumps(error.get("input"))) > 300:  # never echo a base64 image back
                error["input"] = None
        raise RequestValidationError(errors) from None
