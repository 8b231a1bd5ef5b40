"""How many decode threads run beside torch's intra-op threads, so the two do not fight for cores.

On the CPU, torch runs each model's forward on its intra-op pool (one thread per core by
default), and those threads meet at a barrier after every operator: one of them preempted by a
decode thread stalls all the others. Decoding is a few per cent of the models' work in float32
(a 1024x768 JPEG for three models: ~30 ms against ~1 s of model time per image on 2 cores), so
on the CPU it gets a quarter of the cores (1 to 4 threads) and, from 4 cores on, torch gets the
rest; below 4 cores torch keeps every core and one decode thread shares them. On a GPU the
models' work is not on the cores, and exact preprocessing (~24 ms per 1024x768 image per core)
is what keeps the GPU fed: decoding gets one thread per core. ``OMP_NUM_THREADS`` (torch's intra-op count) and ``--workers`` (decode
threads) are respected; the other count is sized around them. `benchmarks/pipeline.py` measures
the rule against the old min(4, cores) decode threads (docs/analyze.md has the figures).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MAX_DECODE_WORKERS = 4


@dataclass(frozen=True)
class ThreadSizing:
    decode_workers: int
    torch_threads: int


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS says, else the CPU count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def size_threads(cores: int, *, device_type: str = "cpu", workers: int | None = None,
                 torch_threads: int | None = None) -> ThreadSizing:
    """Decode threads and torch intra-op threads for ``cores`` cores (see the module doc).
    ``workers`` / ``torch_threads``: counts the user set (``--workers``, ``OMP_NUM_THREADS``)."""
    cores = max(1, cores)
    if device_type != "cpu":
        return ThreadSizing(workers or cores, torch_threads or cores)
    if torch_threads is not None:
        decode = workers or _clamp(cores - torch_threads, 1, MAX_DECODE_WORKERS)
        return ThreadSizing(decode, torch_threads)
    decode = workers or _clamp(cores // 4, 1, MAX_DECODE_WORKERS)
    return ThreadSizing(decode, max(1, cores - decode) if cores >= 4 else cores)


def omp_threads() -> int | None:
    """``OMP_NUM_THREADS`` as a positive count, else None."""
    try:
        value = int(os.environ.get("OMP_NUM_THREADS", "").strip())
    except ValueError:
        return None
    return value if value >= 1 else None


def sizing(device_type: str = "cpu", workers: int | None = None) -> ThreadSizing:
    """`size_threads` for this process: its usable cores and ``OMP_NUM_THREADS``."""
    return size_threads(usable_cores(), device_type=device_type, workers=workers, torch_threads=omp_threads())


def apply_torch_threads(device_type: str) -> int:
    """Set torch's intra-op thread count by the rule, where it is still torch's default (one per
    core: neither ``OMP_NUM_THREADS`` nor ``torch.set_num_threads`` chose it); the count."""
    import torch

    count = sizing(device_type).torch_threads
    if device_type == "cpu" and omp_threads() is None and torch.get_num_threads() == usable_cores():
        torch.set_num_threads(count)
    return torch.get_num_threads()


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))
