"""The one core every door runs its models through: a shared forward pass, each job's own
finishing step, and the retry that keeps one bad input from taking its batch with it.

An `Item` is one input (an image's tensor for one model) wanted by one or more jobs that run the
same loaded model: their ``forward_key`` is equal (JoyTag jobs with different tag selections,
SigLIP jobs with different labels, NSFW jobs with different thresholds). A batch is a list of
items of one key: the model runs once on them (`run_batch`), then every job turns its own rows
into record fields. What each job gives an item is an `Outcome`: its fields, or the reason it
failed on that input (a string), so a job that fails leaves the other jobs' fields intact.

Inputs that are uint8 bytes with a lookup table (`taglens.engine.transfer.ImageBytes`) reach a
job that says ``takes_bytes`` as a `ByteBatch`, normalised on its device; any other job gets the
same float32 tensor normalised on the host. A job with ``launch`` returns its rows as a
`Pending` fetch, waited for only after every model of a round is queued (`run_batches`).

When a batch fails, a CUDA (or CPU) out-of-memory error halves it and tries again, so no image is
lost and the caller learns a size that fits; any other error retries the items one by one and
reports only the ones that fail alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from taglens.engine import transfer

log = logging.getLogger(__name__)

Fields = dict[str, Any]
Outcome = Fields | str
"""A job's record fields for one input, or why it failed on that input."""


class Job(Protocol):
    """One loaded model and what it writes into each record.

    ``name`` is the task ("tag", "classify", "embed", "nsfw"; a job may serve several, e.g.
    "classify+embed" from one SigLIP pass); ``model_id`` and ``revision`` identify the checkpoint
    (see `taglens.models.hub.ResolvedModel`) so stored results can be tied to the model that made
    them; ``transform`` is its pure preprocessing (equal transforms share one tensor per image).
    """

    name: str
    transform: Any
    model_id: str
    revision: str

    def __call__(self, pixels: np.ndarray) -> list[Fields]:
        """(B, C, H, W) float32 -> one dict of Record fields per image."""
        ...


@runtime_checkable
class SplitJob(Protocol):
    """A job whose model pass is separate from its per-job finishing step.

    ``forward_key`` is equal for jobs that run the same model on the same input; ``forward(batch)``
    returns one row per input; ``finish(rows)`` turns rows into record fields, so that
    ``job(pixels) == job.finish(job.forward(pixels))``.
    """

    name: str
    forward_key: Hashable

    def forward(self, pixels: Any) -> Any: ...

    def finish(self, outputs: Any) -> list[Fields]: ...


@dataclass(frozen=True, eq=False)
class WholeJob:
    """Any other `Job`: it shares a forward pass only with itself."""

    job: Any

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


def as_split(job: Any) -> SplitJob:
    return job if isinstance(job, SplitJob) else WholeJob(job)  # type: ignore[return-value]


@dataclass(eq=False)
class Item:
    """One input for ``jobs`` (all of one ``forward_key``); ``future`` resolves to one `Outcome`
    per job, in ``jobs`` order."""

    jobs: tuple[SplitJob, ...]
    input: Any
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> Hashable:
        return self.jobs[0].forward_key


@dataclass
class BatchResult:
    """What `run_batch` learned: each item's outcomes, and the largest batch that fit after an
    out-of-memory error (None when none occurred)."""

    outcomes: list[tuple[Outcome, ...]]
    fits: int | None = None


def run_batch(items: Sequence[Item]) -> BatchResult:
    """Run one batch of items of one key: one forward pass, then each job's finish on its rows."""
    return run_batches([items])[0]


def run_batches(batches: Sequence[Sequence[Item]]) -> list[BatchResult]:
    """Run batches of different keys (the models of one round): every forward pass is queued
    before any result is waited for, so on a GPU the models run back to back with no host
    synchronisation between them (see `taglens.engine.transfer`); then each batch's jobs finish."""
    launched = [_launch(items) for items in batches]
    return [_complete(items, outputs) for items, outputs in zip(batches, launched)]


def _launch(items: Sequence[Item]) -> Any:
    """The lead job's forward pass on the collated batch (a `Pending` where the job has ``launch``),
    or the exception it raised."""
    lead = items[0].jobs[0]
    inputs = [item.input for item in items]
    try:
        collate: Callable[[list[Any]], Any] | None = getattr(lead, "collate", None)
        if collate is not None:
            batch = collate(inputs)
        else:
            batch = transfer.collate(inputs, takes_bytes=bool(getattr(lead, "takes_bytes", False)))
        launch = getattr(lead, "launch", None)
        return launch(batch) if launch is not None else lead.forward(batch)
    except Exception as exc:
        return exc


def _complete(items: Sequence[Item], launched: Any) -> BatchResult:
    if not isinstance(launched, BaseException):
        try:
            return BatchResult(_finish_all(items, transfer.resolve(launched)))
        except Exception as exc:
            launched = exc
    return _recover(items, launched)


def _recover(items: Sequence[Item], exc: Exception) -> BatchResult:
    """A failed batch: one item gets its reason; out of memory halves the batch; any other error
    retries the items one by one."""
    if len(items) == 1:
        log.debug("%s failed on one input", items[0].jobs[0].name, exc_info=exc)
        return BatchResult([_failed(items[0], exc)])
    if is_out_of_memory(exc):
        _release_cached_memory()
        half = len(items) // 2
        first, second = run_batch(items[:half]), run_batch(items[half:])
        fits = min(x for x in (first.fits, second.fits, half) if x is not None)
        return BatchResult(first.outcomes + second.outcomes, fits)
    outcomes: list[tuple[Outcome, ...]] = []
    for item in items:
        outcomes += run_batch([item]).outcomes
    return BatchResult(outcomes)


def _finish_all(items: Sequence[Item], outputs: Any) -> list[tuple[Outcome, ...]]:
    if len(outputs) != len(items):
        raise RuntimeError(f"model returned {len(outputs)} rows for {len(items)} inputs")
    # every distinct job finishes the rows of the items that want it, in one call
    rows_of: dict[int, tuple[SplitJob, list[int]]] = {}
    for i, item in enumerate(items):
        for job in item.jobs:
            rows_of.setdefault(id(job), (job, []))[1].append(i)
    finished: dict[tuple[int, int], Outcome] = {}
    for job_id, (job, indices) in rows_of.items():
        for i, outcome in zip(indices, _finish(job, outputs, indices)):
            finished[(i, job_id)] = outcome
    return [tuple(finished[(i, id(job))] for job in item.jobs) for i, item in enumerate(items)]


def _finish(job: SplitJob, outputs: Any, indices: list[int]) -> list[Outcome]:
    """``job.finish`` on its rows; if it fails, row by row, so only the rows it fails on say so."""
    try:
        fields = job.finish(_rows(outputs, indices))
        if len(fields) != len(indices):
            raise RuntimeError(f"job {job.name} finished {len(fields)} of {len(indices)} inputs")
        return list(fields)
    except Exception as exc:
        if len(indices) == 1:
            log.debug("%s failed to finish one input", job.name, exc_info=True)
            return [failure(job.name, exc)]
        return [outcome for i in indices for outcome in _finish(job, outputs, [i])]


def _failed(item: Item, exc: BaseException) -> tuple[Outcome, ...]:
    return tuple(failure(job.name, exc) for job in item.jobs)


def failure(name: str, exc: BaseException) -> str:
    """The one-line reason a job gives for an input it failed on."""
    return f"{name} failed on this image ({type(exc).__name__}: {exc})"[:300]


def _rows(outputs: Any, indices: list[int]) -> Any:
    if isinstance(outputs, np.ndarray):
        return outputs[np.asarray(indices)]
    return [outputs[i] for i in indices]


def is_out_of_memory(exc: BaseException) -> bool:
    """A device (or host) allocation failure, which a smaller batch may avoid."""
    if isinstance(exc, MemoryError):
        return True
    torch_oom = _torch_oom_type()
    return torch_oom is not None and isinstance(exc, torch_oom)


def _torch_oom_type() -> type[BaseException] | None:
    import sys

    torch = sys.modules.get("torch")  # never import torch just to ask
    return getattr(torch, "OutOfMemoryError", None) if torch is not None else None


def _release_cached_memory() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
