"""An input's way to the models: read, hash and decode once, then each distinct transform once
(up to its uint8 resized image where it has a lookup table: `taglens.engine.transfer`).

`prepare_source` never raises: a bad file comes back as a `Prepared` whose record carries the
reason, so the run goes on. It runs in the engine's decode threads, in the Ray job's CPU tasks
and in the HTTP service's decode pool alike.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
from PIL import Image

from taglens.errors import ImageDecodeError
from taglens.io.decode import (
    DecodeOptions,
    ImageSource,
    decode,
    decode_bytes,
    describe_source,
    read_source_bytes,
)
from taglens.records import Record

log = logging.getLogger(__name__)


class Transform(Protocol):
    """Pure preprocessing for one model: RGB image -> CHW float32 array. Must be hashable; equal
    transforms are computed once per image and shared."""

    input_size: int

    def __call__(self, image: Image.Image) -> np.ndarray: ...

    def __hash__(self) -> int: ...


@dataclass
class Prepared:
    """A source after the decode threads: a record (with error, or file facts) and each
    transform's input (`ImageBytes`, or a float32 array for a transform without a table)."""

    record: Record
    arrays: dict[Hashable, Any] | None = None


def apply_transform(transform: Transform, image: Image.Image) -> Any:
    """A lookup-table transform stops at its uint8 image (`ImageBytes`: normalised later, on the
    model's device, bit for bit as here); any other transform (transformers' processors with
    steps of their own) gives its float32 tensor."""
    to_bytes = getattr(transform, "to_bytes", None)
    return to_bytes(image) if to_bytes is not None else transform(image)


def job_transforms(jobs: Sequence[Any], decode: DecodeOptions) -> tuple[list[Transform], DecodeOptions]:
    """The distinct transforms of ``jobs`` (in job order) and the decode options they imply (the
    JPEG draft target is the largest input size): what `prepare_source` needs, here or in another
    process (the Ray job's CPU tasks)."""
    transforms = list(dict.fromkeys(job.transform for job in jobs))
    target = max((t.input_size for t in transforms), default=None)
    return transforms, replace(decode, target_size=target)


def prepare_source(
    source: ImageSource,
    transforms: Sequence[Transform],
    options: DecodeOptions,
    *,
    hash_files: bool = True,
    skip: Callable[[str], bool] | None = None,
    then: Callable[[], tuple[Sequence[Transform], DecodeOptions]] | None = None,
) -> Prepared:
    """Read, hash and decode one source, then apply each transform. Never raises, but for ``then``.

    ``skip(sha256)`` is asked once a source's bytes are read and hashed: True files it without
    decoding (the library, for bytes it holds already); its record then has the file facts only
    (``sha256``, ``size``, ``mtime``: no error, no ``width``, no job fields) and no tensors.
    ``then()``, when given, is called after that to get the transforms and decode options (the
    engine's lazily made jobs: loading the models only for a source that needs them); what it
    raises is the caller's."""
    name = describe_source(source)
    facts: dict[str, Any] = {}
    data: bytes | None = None
    try:
        if not isinstance(source, (Image.Image, np.ndarray)):
            data = read_bytes(source, options, name, facts, hash_files)
            if skip is not None and "sha256" in facts and skip(facts["sha256"]):
                return Prepared(Record(path=name, **facts))
    except Exception as exc:
        return _failed(name, exc, facts)
    if then is not None:
        transforms, options = then()
    try:
        decoded = decode(source, options, name=name) if data is None else decode_bytes(data, options, name=name)
        arrays = {t: apply_transform(t, decoded.image) for t in transforms}
    except Exception as exc:
        return _failed(name, exc, facts)
    return Prepared(Record(path=name, width=decoded.width, height=decoded.height, **facts), arrays)


def _failed(name: str, exc: Exception, facts: dict[str, Any]) -> Prepared:
    """The error record of a source: its decode error, or a bug or an exotic failure in a
    transform, which must not stop the run."""
    if isinstance(exc, ImageDecodeError):
        return Prepared(Record(path=name, error=exc.reason, **facts))
    log.error("preprocessing failed for %s", name, exc_info=exc)
    return Prepared(Record(path=name, error=f"preprocessing failed ({type(exc).__name__}: {exc})", **facts))


def content_hash(data: bytes) -> str:
    """The sha256 (hex) a record carries for its source's bytes."""
    return hashlib.sha256(data).hexdigest()


def read_bytes(source: ImageSource, options: DecodeOptions, name: str, facts: dict[str, Any],
               hash_files: bool) -> bytes:
    """A source's bytes (a path, bytes or a file object), read once; its size, a file's mtime and,
    with ``hash_files``, its sha256 go into ``facts``. Over ``options.max_bytes`` raises."""
    if isinstance(source, (str, os.PathLike)):
        try:
            st = os.stat(source)
            facts.update(size=st.st_size, mtime=st.st_mtime)  # what the library's walk compares
        except OSError:
            pass  # read_source_bytes gives the precise reason
        data = read_source_bytes(source, options, name)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        data = read_source_bytes(source, options, name)
    facts.setdefault("size", len(data))
    if hash_files:
        facts["sha256"] = content_hash(data)
    if len(data) > options.max_bytes:
        raise ImageDecodeError(name, f"file too large: {len(data)} bytes, limit {options.max_bytes}")
    return data
