"""An input's way to the models: read, hash and decode once, then each distinct transform once.

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
    """A source after the decode threads: a record (with error, or file facts) and tensors."""

    record: Record
    arrays: dict[Hashable, np.ndarray] | None = None


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
) -> Prepared:
    """Read, hash and decode one source, then apply each transform. Never raises.

    ``skip(sha256)`` is asked once a source's bytes are read and hashed: True files it without
    decoding (the library, for bytes it holds already); its record then has the file facts only
    (``sha256``, ``size``, ``mtime``: no error, no ``width``, no job fields) and no tensors."""
    name = describe_source(source)
    facts: dict[str, Any] = {}
    try:
        if isinstance(source, (Image.Image, np.ndarray)):
            decoded = decode(source, options, name=name)
        else:
            data = _read(source, options, name, facts)
            if hash_files:
                facts["sha256"] = content_hash(data)
                if skip is not None and skip(facts["sha256"]):
                    return Prepared(Record(path=name, **facts))
            if len(data) > options.max_bytes:
                raise ImageDecodeError(name, f"file too large: {len(data)} bytes, limit {options.max_bytes}")
            decoded = decode_bytes(data, options, name=name)
        arrays = {t: t(decoded.image) for t in transforms}
    except ImageDecodeError as exc:
        return Prepared(Record(path=name, error=exc.reason, **facts))
    except Exception as exc:  # a bug or an exotic failure in a transform must not stop the run
        log.exception("preprocessing failed for %s", name)
        return Prepared(Record(path=name, error=f"preprocessing failed ({type(exc).__name__}: {exc})", **facts))
    return Prepared(Record(path=name, width=decoded.width, height=decoded.height, **facts), arrays)


def content_hash(data: bytes) -> str:
    """The sha256 (hex) a record carries for its source's bytes."""
    return hashlib.sha256(data).hexdigest()


def _read(source: ImageSource, options: DecodeOptions, name: str, facts: dict[str, Any]) -> bytes:
    """A source's bytes, read once; ``facts`` gets its size (and a file's mtime)."""
    if isinstance(source, (str, os.PathLike)):
        try:
            st = os.stat(source)
            facts.update(size=st.st_size, mtime=st.st_mtime)
        except OSError:
            pass  # read_source_bytes gives the precise reason
        return read_source_bytes(source, options, name)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        data = read_source_bytes(source, options, name)
    facts["size"] = len(data)
    return data
