"""Cross-request dynamic batching: images from concurrent requests share model batches.

An item is one image's tensor for one job. Jobs that run the same loaded model share a
``forward_key`` (JoyTag jobs with different tag selections, SigLIP jobs with different labels,
NSFW jobs with different positive labels), so their items go into one batch: the model runs once
on the stacked tensors, then each job turns its own rows into record fields (``finish``).

A batch leaves when it holds ``max_batch_size`` items, or when its oldest item has waited
``max_wait`` seconds; among ready batches the one whose oldest item came first goes first. One
thread runs every model, one batch at a time, as the offline engine does, so batches never fight
over cores. A batch that fails is retried image by image, so one poisonous input cannot take its
neighbours' results with it (as in `taglens.engine`).

Each `submit` returns a `concurrent.futures.Future` resolving to a dict of record fields, or to
an error string for that image. Cancelling a future before its batch starts drops the item.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from taglens.engine import Job

log = logging.getLogger(__name__)

Fields = dict[str, Any]
Outcome = Fields | str  # record fields, or why this image failed


@runtime_checkable
class SplitJob(Protocol):
    """A job whose forward pass is separate from its per-job finishing step.

    ``forward_key`` is equal for jobs that run the same model (same transform, same weights);
    ``forward(pixels)`` returns one row per image; ``finish(rows)`` turns rows into record fields.
    ``job(pixels) == job.finish(job.forward(pixels))``.
    """

    name: str
    forward_key: Hashable

    def forward(self, pixels: np.ndarray) -> Any: ...

    def finish(self, outputs: Any) -> list[Fields]: ...


@dataclass(frozen=True, eq=False)
class WholeJob:
    """Any other `taglens.engine.Job`: batched only with items of the same job object."""

    job: Job

    @property
    def name(self) -> str:
        return self.job.name

    @property
    def forward_key(self) -> Hashable:
        return ("job", id(self.job))

    def forward(self, pixels: np.ndarray) -> list[Fields]:
        return self.job(pixels)

    def finish(self, outputs: list[Fields]) -> list[Fields]:
        return list(outputs)


def as_split(job: Job) -> SplitJob:
    return job if isinstance(job, SplitJob) else WholeJob(job)  # type: ignore[return-value]


@dataclass(eq=False)
class _Item:
    job: SplitJob
    array: np.ndarray
    future: Future
    enqueued: float = field(default_factory=time.monotonic)


BatchHook = Callable[[str, int, float], None]


class Batcher:
    """Gathers items into per-model batches and runs them on one worker thread.

    ``on_batch(model_name, size, seconds)`` is called after each batch (for metrics).
    """

    def __init__(self, max_batch_size: int = 32, max_wait: float = 0.005, *, on_batch: BatchHook | None = None):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if max_wait < 0:
            raise ValueError("max_wait must not be negative")
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self._on_batch = on_batch
        self._queues: dict[Hashable, deque[_Item]] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="taglens-batcher", daemon=True)
        self._thread.start()

    # ---- the requests' side ---------------------------------------------------------------------

    def submit(self, job: Job, array: np.ndarray) -> Future:
        """Queue one image's tensor for ``job``; the future resolves to its fields or an error."""
        item = _Item(as_split(job), array, Future())
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._queues.setdefault(item.job.forward_key, deque()).append(item)
            self._cond.notify()
        return item.future

    @property
    def pending(self) -> int:
        """Items waiting for a batch (not yet in a model)."""
        with self._cond:
            return sum(len(q) for q in self._queues.values())

    def close(self, timeout: float = 10.0) -> None:
        """Stop after the batch in progress; items still waiting fail with an error string."""
        with self._cond:
            self._closed = True
            left = [item for q in self._queues.values() for item in q]
            self._queues.clear()
            self._cond.notify_all()
        for item in left:
            if item.future.set_running_or_notify_cancel():
                item.future.set_result("the server is shutting down")
        self._thread.join(timeout)

    # ---- the worker's side ----------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._run(batch)

    def _next_batch(self) -> list[_Item] | None:
        """Block until some batch is ready; return its live items (None once closed)."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                now = time.monotonic()
                ready, wake = None, None
                for key, queue in self._queues.items():
                    oldest = queue[0].enqueued
                    due = oldest + self.max_wait
                    if len(queue) >= self.max_batch_size or due <= now:
                        if ready is None or oldest < self._queues[ready][0].enqueued:
                            ready = key
                    elif wake is None or due < wake:
                        wake = due
                if ready is not None:
                    return self._take(ready)
                self._cond.wait(None if wake is None else max(wake - now, 0.0))

    def _take(self, key: Hashable) -> list[_Item]:
        queue = self._queues[key]
        items = []
        while queue and len(items) < self.max_batch_size:
            item = queue.popleft()
            if item.future.set_running_or_notify_cancel():  # False: its request gave up
                items.append(item)
        if not queue:
            del self._queues[key]
        return items

    def _run(self, items: list[_Item]) -> None:
        started = time.perf_counter()
        outcomes = _forward_and_finish(items)
        seconds = time.perf_counter() - started
        for item, outcome in zip(items, outcomes):
            item.future.set_result(outcome)
        if self._on_batch is not None:
            try:
                self._on_batch(items[0].job.name, len(items), seconds)
            except Exception:  # metrics must never break serving
                log.exception("batch hook failed")


def _forward_and_finish(items: Sequence[_Item]) -> list[Outcome]:
    """One forward pass for the batch, then each job's finish on its own rows. If anything fails,
    each image is retried alone and only the failing ones get an error."""
    try:
        outputs = items[0].job.forward(np.stack([item.array for item in items]))
        if len(outputs) != len(items):
            raise RuntimeError(f"model returned {len(outputs)} rows for {len(items)} images")
        results: list[Outcome] = [""] * len(items)
        groups: dict[int, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(id(item.job), []).append(i)
        for indices in groups.values():
            job = items[indices[0]].job
            finished = job.finish(_rows(outputs, indices))
            if len(finished) != len(indices):
                raise RuntimeError(f"job {job.name} finished {len(finished)} of {len(indices)} images")
            for i, fields in zip(indices, finished):
                results[i] = fields
        return results
    except Exception as exc:
        if len(items) == 1:
            log.exception("%s failed on one image", items[0].job.name)
            return [f"{items[0].job.name} failed on this image ({type(exc).__name__}: {exc})"[:300]]
        return [outcome for item in items for outcome in _forward_and_finish([item])]


def _rows(outputs: Any, indices: list[int]) -> Any:
    if isinstance(outputs, np.ndarray):
        return outputs[np.asarray(indices)]
    return [outputs[i] for i in indices]
