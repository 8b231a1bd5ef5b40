"""The HTTP service's side of the engine: admission, timeouts and metrics around one `Engine`.

    service = Service(settings, models, metrics)     # models: a taglens.models.modelset.ModelSet
    with service.admit(len(images)):                 # or QueueFull (-> 503 + Retry-After)
        records = await service.run(images, jobs)    # one Record per image, in order

Everything that touches a model is the engine's (`taglens.engine.Engine` in its background mode):
its decode pool reads and decodes each image once, its batcher forms batches across concurrent
requests on its one model thread (a lone image waits at most ``max_wait_ms`` for company), and it
assembles each record. Making a request's jobs (which may encode new labels with the text tower)
runs on that same thread. What stays here is what a server adds: admission (at most
``queue_size`` images between decoding and their result; a request that does not fit is refused at
once with a hint of when to retry), the request timeout and the metrics.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from taglens.engine import Engine, EngineOptions, Job
from taglens.io.decode import DecodeOptions, ImageSource
from taglens.records import Record
from taglens.server.metrics import Metrics
from taglens.server.settings import Settings
from taglens.models.modelset import ModelSet, TaskRequest

JOB_CACHE = 256  # distinct option sets whose jobs are kept
DRAIN_WINDOW_S = 30.0  # Retry-After: the drain rate over this many recent seconds


class QueueFull(Exception):
    """The bounded queue cannot take this request now; ``retry_after`` is a hint in seconds."""

    def __init__(self, retry_after: int, message: str = "the server is busy: its image queue is full"):
        super().__init__(message)
        self.retry_after = retry_after


class RequestTimedOut(Exception):
    """A request's images were not all done within the request timeout (its work is dropped)."""


@dataclass(frozen=True)
class NamedSource:
    """One image of a request and the name its record carries (upload file name, or path)."""

    name: str
    source: ImageSource


class Service:
    """The models, the engine and the admission of one server process."""

    def __init__(self, settings: Settings, models: ModelSet, metrics: Metrics):
        self.settings = settings
        self.models = models
        self.metrics = metrics
        decode = DecodeOptions(max_pixels=settings.max_pixels, max_bytes=settings.max_image_bytes,
                               draft=settings.draft)
        workers = {"workers": settings.decode_workers} if settings.decode_workers else {}
        options = EngineOptions(batch_size=settings.max_batch_size, decode=decode, hash_files=False, **workers)
        self.engine = Engine(options, background=True, max_wait=settings.max_wait_ms / 1000.0,
                             on_batch=self._on_batch)
        self._lock = threading.Lock()
        self._admitted = 0
        self._jobs: dict[TaskRequest, tuple[Job, ...]] = {}
        self._cost: dict[str, float] = {}  # model -> running estimate of seconds per image in a batch
        self._finished: deque[tuple[float, int]] = deque(maxlen=4096)  # (when, images) per finished request
        self.decode_options = decode
        # Thumbnails decode outside the engine (no model sees them), on threads of their own, as many
        # as it has decoders (the same few threads, so their malloc arenas are reused: Starlette's 40
        # threads each kept a decode's worth), and together no more pixels than the largest image allowed.
        self._thumbnail_pool = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="taglens-thumbnail")
        self.thumbnail_budget = PixelBudget(settings.max_pixels)
        metrics.queue_depth.set_function(lambda: self._admitted)
        metrics.batcher_pending.set_function(lambda: self.engine.batcher.pending)

    @property
    def waiting_for_batch(self) -> int:
        """Images decoded and queued for a model, not yet in a batch."""
        return self.engine.batcher.pending

    def close(self) -> None:
        self.engine.close()
        self._thumbnail_pool.shutdown(wait=False, cancel_futures=True)

    # ---- models ---------------------------------------------------------------------------------

    def load(self) -> None:
        """Load every model family now (at start), so the first request does not pay for it."""
        self.models.load_tagger()
        self.models.load_embedder()
        self.models.load_nsfw()

    async def jobs(self, request: TaskRequest) -> tuple[Job, ...]:
        """The jobs for a request, made once per distinct set of options (tag selections are bound
        to the tag list, labels embedded through the shared label cache) on the engine's model
        thread, since embedding new labels runs the text tower; later requests with the same
        options reuse them."""
        found = self._jobs.get(request)
        if found is None:
            found = tuple(await asyncio.wrap_future(self.engine.call(self.models.jobs, request)))
            with self._lock:
                self._jobs[request] = found
                while len(self._jobs) > JOB_CACHE:
                    self._jobs.pop(next(iter(self._jobs)))
        return found

    # ---- admission ------------------------------------------------------------------------------

    @property
    def admitted(self) -> int:
        return self._admitted

    def check_room(self) -> None:
        """Refuse early (before reading a body) when the queue is already full."""
        with self._lock:
            if self._admitted >= self.settings.queue_size:
                self.metrics.rejected.labels("queue_full").inc()
                raise QueueFull(self._retry_after())

    @contextmanager
    def admit(self, n: int) -> Iterator[None]:
        """Hold ``n`` places in the queue for the duration of the block, or raise `QueueFull`."""
        with self._lock:
            if self._admitted + n > self.settings.queue_size:
                self.metrics.rejected.labels("queue_full").inc()
                raise QueueFull(self._retry_after())
            self._admitted += n
        try:
            yield
        finally:
            with self._lock:
                self._admitted -= n

    def _retry_after(self) -> int:
        """Seconds until the images now queued should be done (1..60): at the rate images were
        finished over the last `DRAIN_WINDOW_S` seconds, or, before any finished, from recent
        batch times."""
        now = time.monotonic()
        while self._finished and now - self._finished[0][0] > DRAIN_WINDOW_S:
            self._finished.popleft()
        if len(self._finished) >= 2 and now > self._finished[0][0]:
            rate = sum(n for _, n in self._finished) / (now - self._finished[0][0])
            seconds = self._admitted / rate
        else:
            seconds = self._admitted * (sum(self._cost.values()) or 0.05)
        return int(min(60, max(1, math.ceil(seconds))))

    def _on_batch(self, model: str, size: int, seconds: float) -> None:
        previous = self._cost.get(model)
        now = seconds / size
        self._cost[model] = now if previous is None else 0.8 * previous + 0.2 * now
        self.metrics.observe_batch(model, size, seconds)

    # ---- thumbnails -----------------------------------------------------------------------------

    async def thumbnail(self, make: Callable[..., Any], *args: Any, pixels: Callable[[], int] | None = None) -> Any:
        """``make(*args, limits)`` (a thumbnail decode) as one admitted image (or `QueueFull`), on
        one of the ``decode_workers`` thumbnail threads and within `thumbnail_budget` (``pixels()``:
        the image's pixel count), with the server's decode limits: a burst of thumbnails waits its
        turn instead of decoding all at once in Starlette's thread pool."""

        def bounded() -> Any:
            with self.thumbnail_budget.hold(pixels() if pixels else 0):
                return make(*args, self.decode_options)

        with self.admit(1):
            return await asyncio.wrap_future(self._thumbnail_pool.submit(bounded))

    # ---- running --------------------------------------------------------------------------------

    async def run(self, images: Sequence[NamedSource], jobs: Sequence[Job]) -> list[Record]:
        """One record per image, in order: the jobs' fields, or the reason it failed. Raises
        `RequestTimedOut` when not done within ``request_timeout_s`` (nothing is left running)."""
        tasks = [asyncio.wrap_future(self.engine.submit(image.source, jobs, name=image.name)) for image in images]
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                records = await asyncio.gather(*tasks)
        except TimeoutError:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.metrics.rejected.labels("timeout").inc()
            raise RequestTimedOut(f"not done within {self.settings.request_timeout_s:g} s") from None
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        for record in records:
            self.metrics.images.labels({"done": "ok"}.get(record.status, record.status)).inc()
        self._finished.append((time.monotonic(), len(records)))
        return list(records)


class PixelBudget:
    """At most ``limit`` pixels being decoded at once (one image larger than that runs alone)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self.most = 0  # the high-water mark, for tests and metrics
        self._room = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        with self._room:
            self._room.wait_for(lambda: self.used == 0 or self.used + pixels <= self.limit)
            self.used += pixels
            self.most = max(self.most, self.used)
        try:
            yield
        finally:
            with self._room:
                self.used -= pixels
                self._room.notify_all()


class TextTowerOnModelThread:
    """An embedder whose text tower runs on the engine's model thread, so that search queries
    take their turn between image batches instead of competing with them for the cores."""

    def __init__(self, embedder: Any, engine: Engine):
        self._embedder = embedder
        self._engine = engine

    def embed_texts(self, texts: Sequence[str]) -> Any:
        return self._engine.call(self._embedder.embed_texts, texts).result()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._embedder, name)
