"""The thread sizing rule (taglens.engine.threads): decode threads and torch's intra-op threads
together never ask for more cores than there are on the CPU (from 4 cores on), the user's counts
(--workers, OMP_NUM_THREADS) are kept, and a GPU run keeps min(4, cores) decode threads."""

from __future__ import annotations

import pytest

from taglens.engine import threads
from taglens.engine.run import EngineOptions
from taglens.engine.threads import ThreadSizing, size_threads


@pytest.mark.parametrize("cores, want", [
    (1, ThreadSizing(1, 1)), (2, ThreadSizing(1, 2)), (3, ThreadSizing(1, 3)), (4, ThreadSizing(1, 3)),
    (8, ThreadSizing(2, 6)), (16, ThreadSizing(4, 12)), (64, ThreadSizing(4, 60)),
])
def test_on_the_cpu_decoding_gets_a_quarter_of_the_cores_and_torch_the_rest(cores, want):
    assert size_threads(cores) == want
    if cores >= 4:
        assert want.decode_workers + want.torch_threads == cores


@pytest.mark.parametrize("cores", [1, 2, 4, 16])
def test_on_a_gpu_decoding_keeps_the_old_min_4_cores(cores):
    assert size_threads(cores, device_type="cuda") == ThreadSizing(cores, cores)  # decode feeds the GPU


def test_the_users_counts_are_kept_and_the_other_is_sized_around_them():
    assert size_threads(8, workers=6) == ThreadSizing(6, 2)
    assert size_threads(8, torch_threads=2) == ThreadSizing(4, 2)  # OMP_NUM_THREADS=2
    assert size_threads(8, torch_threads=8) == ThreadSizing(1, 8)
    assert size_threads(2, torch_threads=1) == ThreadSizing(1, 1)
    assert size_threads(8, workers=3, torch_threads=3) == ThreadSizing(3, 3)


def test_omp_num_threads_is_read_and_nonsense_ignored(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.omp_threads() == 3
    assert threads.sizing().torch_threads == 3
    for bad in ("", "zero", "0", "-2"):
        monkeypatch.setenv("OMP_NUM_THREADS", bad)
        assert threads.omp_threads() is None


def test_the_engine_defaults_to_the_rule(monkeypatch):
    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert EngineOptions().workers == 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert EngineOptions().workers == 8  # on a GPU every core decodes


def test_torch_keeps_a_count_someone_chose(monkeypatch):
    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        monkeypatch.setattr(threads, "usable_cores", lambda: 8)
        assert threads.apply_torch_threads("cpu") == 1  # not torch's default (8 here): left alone
        torch.set_num_threads(8)
        assert threads.apply_torch_threads("cpu") == 6  # torch's default: sized by the rule
    finally:
        torch.set_num_threads(saved)
