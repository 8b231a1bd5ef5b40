"""The runner every door goes through (CLI, Python API, library, HTTP service, Ray actors).

    sources -> read + hash + decode once (decode threads, bounded look-ahead)    engine.prepare
            -> each distinct transform applied once to the decoded image
            -> one item per model: jobs of one model share its forward pass       engine.batcher
            -> batches (size, wait window) -> forward, each job's finish, retry   engine.core
            -> one Record per source, every job's fields or its reason            `assemble`

`Engine` holds the decode pool and the batcher of one door. Two front ends share them:

- `Engine.records` (and the module-level `run`): an iterable of sources in, records out in input
  order, memory bounded whatever the input count; batches run in the caller's thread as soon as
  they are full, so they are the input's consecutive runs of ``batch_size`` good images;
- `Engine.submit`: one source in, a future record out, for the HTTP service's concurrent
  requests; batches then form across requests on the engine's model thread.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from taglens.engine import threads
from taglens.engine.batcher import Batcher, BatchHook
from taglens.engine.core import Outcome, as_split
from taglens.engine.device_preprocess import MODES, prepare_on_device, unavailable
from taglens.engine.prepare import Prepared, Transform, job_transforms, prepare_source
from taglens.io.decode import DecodeOptions, ImageSource
from taglens.records import Record

log = logging.getLogger(__name__)


def default_workers() -> int:
    """Decode threads by `taglens.engine.threads.size_threads`, for a CUDA GPU when torch (already
    imported: the models are loaded) sees one, else for the CPU."""
    torch = sys.modules.get("torch")
    cuda = torch is not None and torch.cuda.is_available()
    return threads.sizing("cuda" if cuda else "cpu").decode_workers


@dataclass(frozen=True)
class EngineOptions:
    """How the pipeline runs. ``workers`` threads read, decode and preprocess up to ``prefetch``
    images ahead of the models, so memory is bounded whatever the number of inputs."""

    batch_size: int = 8
    workers: int = field(default_factory=default_workers)
    prefetch: int | None = None
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    hash_files: bool = True
    preprocess: str = "exact"
    """``exact`` (Pillow on the CPU, the reference numbers) or ``gpu`` (JPEG decode and resize on
    the models' GPU, see `taglens.engine.device_preprocess`; offline runs only)."""

    @property
    def lookahead(self) -> int:
        return self.prefetch or max(2 * self.batch_size, 2 * self.workers)


@dataclass(frozen=True)
class Group:
    """The jobs of one model (one ``forward_key``) and the transform that feeds them."""

    transform: Transform
    jobs: tuple[Any, ...]


def groups_of(jobs: Sequence[Any]) -> list[Group]:
    """Jobs grouped by the model they run, in first-appearance order: one forward pass each."""
    grouped: dict[Hashable, list[Any]] = {}
    for job in jobs:
        grouped.setdefault(as_split(job).forward_key, []).append(job)
    return [Group(members[0].transform, tuple(members)) for members in grouped.values()]


def assemble(record: Record, jobs: Sequence[Any], outcomes: Sequence[Outcome]) -> Record:
    """An image's record from every job's outcome: the fields of each job that succeeded, the
    reason of each that failed (`taglens.records.Record.with_job_results`)."""
    return record.with_job_results(zip((job.name for job in jobs), outcomes))


class Engine:
    """The decode pool and the batcher of one door; see the module docstring.

    ``background=True`` starts the model thread (for `submit`); ``max_wait`` is how long a lone
    item waits there for company (seconds).
    """

    def __init__(self, options: EngineOptions | None = None, *, background: bool = False,
                 max_wait: float | None = None, on_batch: BatchHook | None = None):
        self.options = options or EngineOptions()
        if self.options.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batcher = Batcher(self.options.batch_size, max_wait, background=background, on_batch=on_batch)
        self.pool = ThreadPoolExecutor(max_workers=self.options.workers, thread_name_prefix="taglens-decode")

    def close(self) -> None:
        self.batcher.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- offline: an iterable in, records out in order --------------------------------------------

    def records(self, sources: Iterable[ImageSource], jobs: Sequence[Any] | Callable[[], Sequence[Any]], *,
                skip: Callable[[str], bool] | None = None) -> Iterator[Record]:
        """One `Record` per source, in order, with every job's fields (or an error). ``skip``
        (sha256 -> bool, asked in the decode threads) files a source without decoding it: see
        `taglens.engine.prepare.prepare_source`. ``jobs`` may be a function making them: it is called
        the first time a source needs the models, so a run whose every source is skipped (an index
        of renamed files) loads none."""
        setup = _Setup(jobs, self.options)
        hash_files = self.options.hash_files
        if not callable(jobs):
            setup()

        def prepare(source: ImageSource) -> Prepared:
            if not setup.ready:
                return prepare_source(source, (), self.options.decode, hash_files=hash_files, skip=skip,
                                      then=lambda: setup()[1:3])
            groups, transforms, decode, device = setup()
            if device is not None:
                return prepare_on_device(source, transforms, decode, device, hash_files=hash_files, skip=skip)
            return prepare_source(source, transforms, decode, hash_files=hash_files, skip=skip)

        waiting: deque[tuple[Prepared, list[Future]]] = deque()
        for prepared in _ordered_map(self.pool, prepare, sources, self.options.lookahead):
            groups = setup()[0] if setup.ready else ()  # a prepared image means the jobs are made
            waiting.append((prepared, self._submit_prepared(prepared, groups)))
            self.batcher.run_full()
            if len(waiting) > self.options.lookahead + self.options.batch_size:
                self.batcher.flush()  # a bound on memory, whatever the mix of errors and images
            yield from _done_in_order(waiting, groups)
        self.batcher.flush()
        yield from _done_in_order(waiting, setup()[0] if setup.ready else ())

    def run_prepared(self, prepared: Sequence[Prepared], jobs: Sequence[Any]) -> list[Record]:
        """The models' half of `records` for sources prepared elsewhere (the Ray job's CPU tasks)."""
        groups = groups_of(jobs)
        waiting = deque((p, self._submit_prepared(p, groups)) for p in prepared)
        self.batcher.flush()
        return list(_done_in_order(waiting, groups))

    # ---- the HTTP service: one source in, a future record out ---------------------------------------

    def submit(self, source: ImageSource, jobs: Sequence[Any], *, name: str | None = None) -> Future:
        """Decode ``source`` in the pool, then queue its tensors on the model thread; the future
        resolves to its `Record` (named ``name``). Cancelling it drops the image's queued items."""
        groups = groups_of(jobs)
        transforms, options = job_transforms(jobs, self.options.decode)
        result: Future = Future()

        def decoded(done: Future) -> None:
            prepared: Prepared = done.result()
            if name is not None:
                prepared.record = prepared.record.with_fields(path=name)
            if result.cancelled():
                return
            if prepared.arrays is None:
                _settle(result, prepared.record)
                return
            try:
                items = self._submit_prepared(prepared, groups)
            except RuntimeError as exc:  # the batcher closed while this image was decoding
                _settle(result, prepared.record.with_fields(error=str(exc)))
                return
            result.add_done_callback(lambda f: [i.cancel() for i in items] if f.cancelled() else None)

            def finished() -> None:
                if not result.cancelled():
                    _settle(result, _assemble(prepared, items, groups))

            _when_all(items, finished)

        self.pool.submit(prepare_source, source, transforms, options,
                         hash_files=self.options.hash_files).add_done_callback(decoded)
        return result

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        """Run other model work (the text tower) on the model thread; see `Batcher.call`."""
        return self.batcher.call(fn, *args, **kwargs)

    # ---- shared -------------------------------------------------------------------------------

    def _submit_prepared(self, prepared: Prepared, groups: Sequence[Group]) -> list[Future]:
        if prepared.arrays is None:
            return []
        items = [self.batcher.submit_many(g.jobs, prepared.arrays[g.transform]) for g in groups]
        prepared.arrays = None  # the queued items hold the tensors now
        return items


class _Setup:
    """What `Engine.records` needs from its jobs (groups, transforms, decode options, the fast
    preprocessing device), made once, on first need, by whichever thread needs it first."""

    def __init__(self, jobs: Sequence[Any] | Callable[[], Sequence[Any]], options: EngineOptions):
        self._jobs, self._options = jobs, options
        self._lock = threading.Lock()
        self._value: tuple[list[Group], list[Transform], DecodeOptions, Any] | None = None

    @property
    def ready(self) -> bool:
        return self._value is not None

    def __call__(self) -> tuple[list[Group], list[Transform], DecodeOptions, Any]:
        with self._lock:
            if self._value is None:
                jobs = list(self._jobs() if callable(self._jobs) else self._jobs)
                transforms, decode = job_transforms(jobs, self._options.decode)
                device = _fast_preprocess_device(self._options.preprocess, jobs, transforms)
                self._value = (groups_of(jobs), transforms, decode, device)
            return self._value


def run(sources: Iterable[ImageSource], jobs: Sequence[Any] | Callable[[], Sequence[Any]],
        options: EngineOptions | None = None, *, skip: Callable[[str], bool] | None = None) -> Iterator[Record]:
    """Yield one `Record` per source, in order, with every job's fields (or an error); ``jobs`` (a
    function making them, too) and ``skip``: see `Engine.records`."""
    options = options or EngineOptions()
    if options.batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    engine = Engine(options)
    try:
        yield from engine.records(sources, jobs, skip=skip)
    finally:
        engine.close()


def run_prepared(prepared: Sequence[Prepared], jobs: Sequence[Any]) -> list[Record]:
    """`Engine.run_prepared` with a batch as large as ``prepared``."""
    with Engine(EngineOptions(batch_size=max(1, len(prepared)), workers=1)) as engine:
        return engine.run_prepared(prepared, jobs)


def _fast_preprocess_device(mode: str, jobs: Sequence[Any], transforms: Sequence[Transform]) -> Any:
    """The device for ``--preprocess gpu`` (None: the exact path, with one warning if it was asked for)."""
    if mode not in MODES:
        raise ValueError(f"preprocess must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "exact":
        return None
    devices = {str(p.device): p.device for job in jobs
               if (p := getattr(as_split(job).forward_key, "placement", None)) is not None}
    device = next(iter(devices.values()), None) if len(devices) == 1 else None
    reason = unavailable(device, transforms) if device is not None else "the models are not on one device"
    if reason is not None:
        log.warning("--preprocess gpu: %s; preprocessing the exact way on the CPU", reason)
        return None
    return device


def _done_in_order(waiting: deque[tuple[Prepared, list[Future]]], groups: Sequence[Group]) -> Iterator[Record]:
    while waiting and all(f.done() for f in waiting[0][1]):
        prepared, items = waiting.popleft()
        yield _assemble(prepared, items, groups) if items else prepared.record


def _assemble(prepared: Prepared, items: Sequence[Future], groups: Sequence[Group]) -> Record:
    jobs = [job for group in groups for job in group.jobs]
    outcomes = [outcome for item in items for outcome in item.result()]
    return assemble(prepared.record, jobs, outcomes)


def _when_all(futures: Sequence[Future], then: Callable[[], None]) -> None:
    """Call ``then`` once, in the thread that completes the last of ``futures``."""
    left = [len(futures)]
    lock = threading.Lock()

    def one_done(_: Future) -> None:
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            then()

    for future in futures:
        future.add_done_callback(one_done)


def _settle(future: Future, value: Any) -> None:
    if future.set_running_or_notify_cancel():
        future.set_result(value)


def _ordered_map(pool: ThreadPoolExecutor, fn: Callable[[Any], Prepared], items: Iterable[Any],
                 lookahead: int) -> Iterator[Prepared]:
    """``pool.map`` that keeps at most ``lookahead`` items in flight (``map`` would consume the
    whole input first) and yields results in input order."""
    pending: deque[Future[Prepared]] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= lookahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
