"""The engine's batcher on its own model thread (the HTTP service's way): one forward pass for jobs
sharing a model, size and wait limits, failures isolated, cancelled items dropped."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from taglens.engine.batcher import Batcher


class Model:
    """A fake model: each row's output is its input's mean; records every batch it ran."""

    def __init__(self, poison: float | None = None, gate: threading.Event | None = None):
        self.batches: list[int] = []
        self.poison = poison
        self.gate = gate

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        if self.gate is not None:
            self.gate.wait(10)
        self.batches.append(len(pixels))
        if self.poison is not None and np.any(np.isclose(pixels.mean(axis=(1, 2, 3)), self.poison)):
            raise RuntimeError("poison")
        return pixels.mean(axis=(1, 2, 3))


class Split:
    """A job with a forward / finish split, as TagJob, ImageTextJob and NsfwJob have."""

    def __init__(self, model: Model, offset: float, name: str = "fake"):
        self.model, self.offset, self.name = model, offset, name
        self.finished: list[int] = []

    @property
    def forward_key(self):
        return self.model

    def forward(self, pixels):
        return self.model(pixels)

    def finish(self, rows):
        self.finished.append(len(rows))
        return [{"value": float(r) + self.offset} for r in rows]


class Whole:
    """A plain engine Job (no split)."""

    name = "whole"

    def __init__(self):
        self.batches = []

    def __call__(self, pixels):
        self.batches.append(len(pixels))
        return [{"value": float(p.mean())} for p in pixels]


def pixels(value: float) -> np.ndarray:
    return np.full((3, 2, 2), value, np.float32)


@pytest.fixture
def batcher():
    made = []

    def make(**kwargs):
        made.append(Batcher(background=True, **kwargs))
        return made[-1]

    yield make
    for b in made:
        b.close()


def test_jobs_sharing_a_model_share_one_forward_pass(batcher):
    model = Model()
    a, b = Split(model, 0.0), Split(model, 100.0)
    gate = threading.Event()
    blocker = Model(gate=gate)
    batch = batcher(max_batch_size=8, max_wait=0.05)
    first = batch.submit(Split(blocker, 0), pixels(0))  # holds the worker while the others queue up
    futures = [batch.submit(job, pixels(i)) for i, job in enumerate([a, b, a, b, a])]
    gate.set()
    first.result(5)
    assert [f.result(5) for f in futures] == [{"value": 0.0}, {"value": 101.0}, {"value": 2.0}, {"value": 103.0},
                                              {"value": 4.0}]
    assert model.batches == [5]  # one forward pass for both jobs
    assert sorted(a.finished + b.finished) == [2, 3]  # each job finished its own rows


def test_max_batch_size_and_separate_models(batcher):
    gate = threading.Event()
    blocker = Model(gate=gate)
    one, two = Model(), Model()
    batch = batcher(max_batch_size=4, max_wait=0.05)
    held = batch.submit(Split(blocker, 0), pixels(0))
    futures = [batch.submit(Split(one, 0), pixels(i)) for i in range(10)]
    futures += [batch.submit(Split(two, 0), pixels(i)) for i in range(3)]
    gate.set()
    held.result(5)
    assert [f.result(5)["value"] for f in futures] == [float(i) for i in range(10)] + [0.0, 1.0, 2.0]
    assert one.batches == [4, 4, 2] and two.batches == [3]


def test_a_lone_item_waits_at_most_max_wait(batcher):
    model = Model()
    batch = batcher(max_batch_size=64, max_wait=0.3)
    started = time.monotonic()
    assert batch.submit(Split(model, 0), pixels(1)).result(5) == {"value": 1.0}
    waited = time.monotonic() - started
    assert 0.25 <= waited < 2.0
    quick = batcher(max_batch_size=64, max_wait=0.0)
    started = time.monotonic()
    quick.submit(Split(Model(), 0), pixels(1)).result(5)
    assert time.monotonic() - started < 0.25
    full = batcher(max_batch_size=2, max_wait=5.0)  # a full batch does not wait
    started = time.monotonic()
    job = Split(Model(), 0)
    f1, f2 = full.submit(job, pixels(1)), full.submit(job, pixels(2))
    assert (f1.result(5), f2.result(5)) == ({"value": 1.0}, {"value": 2.0})
    assert time.monotonic() - started < 2.0


def test_a_failing_image_does_not_take_its_batch_with_it(batcher):
    model = Model(poison=3.0)
    gate = threading.Event()
    batch = batcher(max_batch_size=8, max_wait=0.05)
    held = batch.submit(Split(Model(gate=gate), 0), pixels(0))
    futures = [batch.submit(Split(model, 0, name="fake"), pixels(i)) for i in range(6)]
    gate.set()
    held.result(5)
    outcomes = [f.result(5) for f in futures]
    assert outcomes[3].startswith("fake failed on this image (RuntimeError: poison)")
    assert [o for i, o in enumerate(outcomes) if i != 3] == [{"value": float(i)} for i in (0, 1, 2, 4, 5)]


def test_cancelled_items_are_dropped_and_close_fails_the_rest(batcher):
    gate = threading.Event()
    model = Model()
    batch = batcher(max_batch_size=8, max_wait=0.05)
    held = batch.submit(Split(Model(gate=gate), 0), pixels(0))
    time.sleep(0.1)  # the worker is inside the held batch now
    gone = batch.submit(Split(model, 0), pixels(1))
    kept = batch.submit(Split(model, 0), pixels(2))
    assert gone.cancel()
    gate.set()
    assert kept.result(5) == {"value": 2.0} and held.result(5) == {"value": 0.0}
    assert model.batches == [1]
    closing = batcher(max_batch_size=8, max_wait=10.0)
    waiting = closing.submit(Split(Model(), 0), pixels(1))
    closing.close()
    assert waiting.result(5) == "the server is shutting down"
    with pytest.raises(RuntimeError):
        closing.submit(Split(Model(), 0), pixels(1))


def test_plain_jobs_are_batched_with_themselves(batcher):
    job = Whole()
    batch = batcher(max_batch_size=8, max_wait=0.2)
    futures = [batch.submit(job, pixels(i)) for i in range(5)]
    assert [f.result(5) for f in futures] == [{"value": float(i)} for i in range(5)]
    assert job.batches == [5]




def test_calls_run_on_the_model_thread_between_batches(batcher):
    batch = batcher(max_batch_size=8, max_wait=0.01)
    model_threads = []
    job = Split(Model(), 0)
    original = job.forward
    job.forward = lambda pixels: (model_threads.append(threading.current_thread().name), original(pixels))[1]
    assert batch.submit(job, pixels(1)).result(5) == {"value": 1.0}
    called = batch.call(lambda: threading.current_thread().name).result(5)
    assert called == model_threads[0] == "taglens-models"
    failing = batch.call(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(5)


def test_without_a_model_thread_calls_run_in_the_caller_and_batches_wait_for_a_flush():
    batch = Batcher(max_batch_size=4)
    assert batch.call(lambda: threading.current_thread().name).result(0) == threading.current_thread().name
    model = Model()
    futures = [batch.submit(Split(model, 0), pixels(i)) for i in range(6)]
    assert batch.run_full() == 1 and model.batches == [4]
    assert not futures[5].done()
    batch.flush()
    assert model.batches == [4, 2] and [f.result(0)["value"] for f in futures] == [float(i) for i in range(6)]
