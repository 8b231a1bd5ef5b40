"""The pipeline every door (CLI, Python API, HTTP service, Ray) goes through.

    sources -> read + hash + decode once (worker threads, bounded look-ahead)
            -> each distinct preprocessing transform applied once to the decoded image
            -> batches -> each job's forward pass -> one Record per source, in input order

A job is one loaded model family (JoyTag, SigLIP, a ViT classifier) that turns a batch of its
own input tensors into record fields. Jobs whose transforms compare equal share one tensor.
A bad file becomes an error record; a batch whose forward pass fails is retried image by image
so one poisonous input cannot take its neighbours' results with it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
from PIL import Image

from taglens.errors import ImageDecodeError
from taglens.io.decode import (
    DecodedImage,
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


class Job(Protocol):
    """One loaded model and what it writes into each record.

    ``name`` is the task ("tag", "classify", "embed", "nsfw"; a job may serve several, e.g.
    "classify+embed" from one SigLIP pass); ``model_id`` and ``revision`` identify the checkpoint
    (see `taglens.models.hub.ResolvedModel`) so stored results can be tied to the model that made them.
    """

    name: str
    transform: Transform
    model_id: str
    revision: str

    def __call__(self, pixels: np.ndarray) -> list[dict[str, Any]]:
        """(B, C, H, W) float32 -> one dict of Record fields per image."""
        ...


@dataclass(frozen=True)
class EngineOptions:
    """How the pipeline runs. ``workers`` threads read, decode and preprocess up to ``prefetch``
    images ahead of the models, so memory is bounded whatever the number of inputs."""

    batch_size: int = 8
    workers: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))
    prefetch: int | None = None
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    hash_files: bool = True

    @property
    def lookahead(self) -> int:
        return self.prefetch or max(2 * self.batch_size, 2 * self.workers)


@dataclass
class Prepared:
    """A source after the worker threads: a record (with error, or file facts) and tensors."""

    record: Record
    arrays: dict[Hashable, np.ndarray] | None = None


def run(
    sources: Iterable[ImageSource],
    jobs: Sequence[Job],
    options: EngineOptions | None = None,
    *,
    on_record: Callable[[Record], None] | None = None,
) -> Iterator[Record]:
    """Yield one `Record` per source, in order, with every job's fields (or an error)."""
    options = options or EngineOptions()
    if options.batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    transforms, decode_options = job_transforms(jobs, options)

    def prepare(source: ImageSource) -> Prepared:
        return prepare_source(source, transforms, decode_options, hash_files=options.hash_files)

    window: list[Prepared] = []
    ready = 0
    with ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="taglens-decode") as pool:
        for prepared in _ordered_map(pool, prepare, sources, options.lookahead):
            window.append(prepared)
            if prepared.arrays is not None:
                ready += 1
            if ready >= options.batch_size:
                yield from _flush(window, jobs, on_record)
                window, ready = [], 0
        if window:
            yield from _flush(window, jobs, on_record)


def job_transforms(jobs: Sequence[Job], options: EngineOptions) -> tuple[list[Transform], DecodeOptions]:
    """The distinct transforms of ``jobs`` (in job order) and the decode options they imply (the
    JPEG draft target is the largest input size): what `prepare_source` needs, here or in another
    process (the Ray job's CPU tasks)."""
    transforms = list(dict.fromkeys(job.transform for job in jobs))
    target = max((t.input_size for t in transforms), default=None)
    return transforms, replace(options.decode, target_size=target)


def run_prepared(prepared: Sequence[Prepared], jobs: Sequence[Job]) -> list[Record]:
    """The models' half of `run` for one batch of sources prepared by `prepare_source` elsewhere
    (e.g. in Ray CPU tasks): every job's fields or an error per source, in order, with the same
    per-image retry when a batch fails."""
    return list(_flush(list(prepared), jobs, None))


def prepare_source(
    source: ImageSource,
    transforms: Sequence[Transform],
    options: DecodeOptions,
    *,
    hash_files: bool = True,
) -> Prepared:
    """Read, hash and decode one source, then apply each transform. Never raises."""
    name = describe_source(source)
    facts: dict[str, Any] = {}
    try:
        decoded = _read_and_decode(source, options, name, facts, hash_files)
        arrays = {t: t(decoded.image) for t in transforms}
    except ImageDecodeError as exc:
        return Prepared(Record(path=name, error=exc.reason, **facts))
    except Exception as exc:  # a bug or an exotic failure in a transform must not stop the run
        log.exception("preprocessing failed for %s", name)
        return Prepared(Record(path=name, error=f"preprocessing failed ({type(exc).__name__}: {exc})", **facts))
    return Prepared(Record(path=name, width=decoded.width, height=decoded.height, **facts), arrays)


def _read_and_decode(
    source: ImageSource, options: DecodeOptions, name: str, facts: dict[str, Any], hash_files: bool
) -> DecodedImage:
    if isinstance(source, (Image.Image, np.ndarray)):
        return decode(source, options, name=name)
    if isinstance(source, (str, os.PathLike)):
        try:
            st = os.stat(source)
            facts.update(size=st.st_size, mtime=st.st_mtime)
        except OSError:
            pass  # read_source_bytes gives the precise reason
        data = read_source_bytes(source, options, name)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        facts["size"] = len(data)
    else:
        data = read_source_bytes(source, options, name)
        facts["size"] = len(data)
    if hash_files:
        facts["sha256"] = hashlib.sha256(data).hexdigest()
    if len(data) > options.max_bytes:
        raise ImageDecodeError(name, f"file too large: {len(data)} bytes, limit {options.max_bytes}")
    return decode_bytes(data, options, name=name)


def _ordered_map(
    pool: ThreadPoolExecutor, fn: Callable[[Any], Prepared], items: Iterable[Any], lookahead: int
) -> Iterator[Prepared]:
    """``pool.map`` that keeps at most ``lookahead`` items in flight (``map`` would consume the
    whole input first) and yields results in input order."""
    pending: deque[Future[Prepared]] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= lookahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _flush(window: list[Prepared], jobs: Sequence[Job], on_record: Callable[[Record], None] | None) -> Iterator[Record]:
    """Run every job on the window's decoded images and yield its records in order: each with
    every job's fields that succeeded and the reason of each that failed (`Record.with_job_results`)."""
    good = [p for p in window if p.arrays is not None]
    outcomes: list[list[tuple[str, dict[str, Any] | str]]] = [[] for _ in good]
    if good:
        for job in jobs:
            for i, result in enumerate(_run_job(job, good)):
                outcomes[i].append((job.name, result))
    results = iter(outcomes)
    for prepared in window:
        record = prepared.record
        if prepared.arrays is not None:
            record = record.with_job_results(next(results))
            prepared.arrays = None  # release tensors as soon as the record is made
        if on_record is not None:
            on_record(record)
        yield record


def _run_job(job: Job, batch: list[Prepared]) -> list[dict[str, Any] | str]:
    """Run a job on a batch: its fields per image, or for an image it fails on the reason (a str).
    If the batch fails, each image is retried alone, so only the culprit gets the reason."""
    try:
        pixels = np.stack([p.arrays[job.transform] for p in batch])  # type: ignore[index]
        out = job(pixels)
        if len(out) != len(batch):
            raise RuntimeError(f"job {job.name} returned {len(out)} results for {len(batch)} images")
        return list(out)
    except Exception as exc:
        if len(batch) == 1:
            # the reason goes into the record (and the CLI's one line); the traceback only to debug logs
            log.debug("%s failed on %s", job.name, batch[0].record.path, exc_info=True)
            return [f"{job.name} failed on this image ({type(exc).__name__}: {exc})"[:300]]
        return [r for p in batch for r in _run_job(job, [p])]
