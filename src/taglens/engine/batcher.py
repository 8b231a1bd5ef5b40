"""Batches for every door: items gather per model (``forward_key``) and leave as batches.

A batch leaves when it holds ``max_batch_size`` items or, with ``max_wait`` set, when its oldest
item has waited that long; among ready batches the one whose oldest item came first goes first.
Two ways to drive it, one behaviour:

- **in the caller's thread** (`run_full`, `flush`): the offline engine submits images in input
  order and runs each batch as soon as it is full, then the rest at the end, so batches are
  exactly the input's consecutive runs of ``max_batch_size`` images;
- **on its own model thread** (``background=True``): the HTTP service's requests submit from
  many threads and a lone image waits at most ``max_wait`` for company.

Either way one thread runs every model, so batches never fight over cores. Ready batches leave in
rounds of at most one per model, whose forward passes are all queued before any result is waited
for (`taglens.engine.core.run_batches`: on a GPU, no host synchronisation between the models);
`call` runs any other model work (encoding labels or a search query with the text tower) on that
same thread between batches. After an out-of-memory error a key's batches are capped at the size
that fit (see `taglens.engine.core.run_batch`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from typing import Any

from taglens.engine.core import BatchResult, Item, SplitJob, as_split, run_batches

log = logging.getLogger(__name__)

BatchHook = Callable[[str, int, float], None]
SHUTDOWN = "the server is shutting down"


class Batcher:
    """Per-model queues of items and the batches made from them.

    ``on_batch(job_name, size, seconds)`` is called after each batch (for metrics).
    """

    def __init__(self, max_batch_size: int = 8, max_wait: float | None = None, *, background: bool = False,
                 on_batch: BatchHook | None = None):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if max_wait is not None and max_wait < 0:
            raise ValueError("max_wait must not be negative")
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self._on_batch = on_batch
        self._queues: dict[Hashable, deque[Item]] = {}
        self._calls: deque[tuple[Future, Callable[[], Any]]] = deque()
        self._caps: dict[Hashable, int] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._loop, name="taglens-models", daemon=True)
            self._thread.start()

    # ---- submitting -----------------------------------------------------------------------------

    def submit(self, job: Any, array: Any) -> Future:
        """Queue one input for one job; the future resolves to its fields or an error string."""
        item = self.submit_many([job], array)
        single: Future = Future()

        def unwrap(done: Future) -> None:
            if done.cancelled():
                single.cancel()
            elif single.set_running_or_notify_cancel():
                single.set_result(done.result()[0])

        def cancel_item(outer: Future) -> None:
            if outer.cancelled():
                item.cancel()

        single.add_done_callback(cancel_item)
        item.add_done_callback(unwrap)
        return single

    def submit_many(self, jobs: Sequence[Any], array: Any) -> Future:
        """Queue one input for several jobs of one model (one forward row for all of them); the
        future resolves to one outcome per job, in order. Cancel it to drop the input."""
        split = tuple(as_split(job) for job in jobs)
        keys = {job.forward_key for job in split}
        if len(keys) != 1:
            raise ValueError("jobs submitted together must share one forward_key")
        item = Item(split, array)
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._queues.setdefault(item.key, deque()).append(item)
            self._cond.notify()
        return item.future

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` on the model thread between batches (at once, in this
        thread, when there is no model thread); the future holds its result or exception."""
        future: Future = Future()
        if self._thread is None:
            _resolve(future, lambda: fn(*args, **kwargs))
            return future
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._calls.append((future, lambda: fn(*args, **kwargs)))
            self._cond.notify()
        return future

    @property
    def pending(self) -> int:
        """Items waiting for a batch (not yet in a model)."""
        with self._cond:
            return sum(len(q) for q in self._queues.values())

    # ---- driving it from the caller's thread ------------------------------------------------------

    def run_full(self) -> int:
        """Run every batch that is full now, in this thread; returns how many ran."""
        self._check_no_thread()
        ran = 0
        while batches := self._take_round(time.monotonic(), full_only=True):
            self._run_round(batches)
            ran += len(batches)
        return ran

    def flush(self) -> None:
        """Run everything queued, in this thread, oldest batch first."""
        self._check_no_thread()
        while batches := self._take_round(None, full_only=False):
            self._run_round(batches)

    def _check_no_thread(self) -> None:
        if self._thread is not None:
            raise RuntimeError("this batcher runs its batches on its own model thread")

    # ---- closing --------------------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """Stop after the batch in progress; items still waiting fail with an error string."""
        with self._cond:
            self._closed = True
            left = [item for q in self._queues.values() for item in q]
            calls = list(self._calls)
            self._queues.clear()
            self._calls.clear()
            self._cond.notify_all()
        for item in left:
            if item.future.set_running_or_notify_cancel():
                item.future.set_result(tuple(SHUTDOWN for _ in item.jobs))
        for future, _ in calls:
            if future.set_running_or_notify_cancel():
                future.set_exception(RuntimeError(SHUTDOWN))
        if self._thread is not None:
            self._thread.join(timeout)

    # ---- the model thread -----------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                work = self._next_work()
            if work is None:
                return
            if isinstance(work, tuple):
                _resolve(*work)
            elif work:
                with self._cond:
                    more = self._take_round(time.monotonic(), full_only=False, locked=True,
                                            taken={work[0].key})
                self._run_round([work, *more])

    def _next_work(self) -> list[Item] | tuple[Future, Callable[[], Any]] | None:
        """Block (holding the lock) until a call or a batch is due; None once closed."""
        while True:
            if self._closed:
                return None
            if self._calls:
                return self._calls.popleft()
            now = time.monotonic()
            batch = self._take_ready(now, full_only=False, locked=True)
            if batch is not None:
                return batch
            self._cond.wait(self._wait_time(now))

    def _wait_time(self, now: float) -> float | None:
        if self.max_wait is None or not self._queues:
            return None
        due = min(q[0].enqueued for q in self._queues.values()) + self.max_wait
        return max(due - now, 0.0)

    # ---- batches --------------------------------------------------------------------------------

    def _take_round(self, now: float | None, *, full_only: bool, locked: bool = False,
                    taken: set[Hashable] | None = None) -> list[list[Item]]:
        """One ready batch per model (oldest first): a round, whose forward passes are queued
        together (`taglens.engine.core.run_batches`)."""
        if not locked:
            with self._cond:
                return self._take_round(now, full_only=full_only, locked=True, taken=taken)
        taken = set(taken or ())
        batches = []
        while (batch := self._take_ready(now, full_only=full_only, locked=True, exclude=taken)) is not None:
            if batch:
                taken.add(batch[0].key)
                batches.append(batch)
        return batches

    def _take_ready(self, now: float | None, *, full_only: bool, locked: bool = False,
                    exclude: set[Hashable] = frozenset()) -> list[Item] | None:  # type: ignore[assignment]
        """The live items of the ready batch whose oldest item came first, taken off its queue.
        ``now=None`` (flush) makes every non-empty queue ready."""
        if not locked:
            with self._cond:
                return self._take_ready(now, full_only=full_only, locked=True, exclude=exclude)
        ready = None
        for key, queue in self._queues.items():
            if not queue or key in exclude:
                continue
            full = len(queue) >= self._size(key)
            due = (now is None or (not full_only and self.max_wait is not None
                                   and queue[0].enqueued + self.max_wait <= now))
            if (full or due) and (ready is None or queue[0].enqueued < self._queues[ready][0].enqueued):
                ready = key
        if ready is None:
            return None
        queue = self._queues[ready]
        items = []
        while queue and len(items) < self._size(ready):
            item = queue.popleft()
            if item.future.set_running_or_notify_cancel():  # False: its request gave up
                items.append(item)
        if not queue:
            del self._queues[ready]
        return items

    def _size(self, key: Hashable) -> int:
        return min(self.max_batch_size, self._caps.get(key, self.max_batch_size))

    def _run_round(self, batches: list[list[Item]]) -> None:
        batches = [items for items in batches if items]
        if not batches:
            return
        started = time.perf_counter()
        results = run_batches(batches)
        seconds = (time.perf_counter() - started) / len(batches)  # the round's time, shared out
        for items, result in zip(batches, results):
            self._settle(items, result, seconds)

    def _settle(self, items: list[Item], result: BatchResult, seconds: float) -> None:
        if result.fits is not None:
            key = items[0].key
            self._caps[key] = min(self._size(key), result.fits)
            log.warning("out of memory at a batch of %d; batches of this model now hold at most %d",
                        len(items), self._caps[key])
        for item, outcomes in zip(items, result.outcomes):
            item.future.set_result(outcomes)
        if self._on_batch is not None:
            try:
                self._on_batch(items[0].jobs[0].name, len(items), seconds)
            except Exception:  # metrics must never break a run
                log.exception("batch hook failed")


def _resolve(future: Future, fn: Callable[[], Any]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(fn())
    except BaseException as exc:  # the caller gets it from the future
        future.set_exception(exc)


__all__ = ["Batcher", "SplitJob", "SHUTDOWN"]
