"""The pipeline with fake jobs: order, errors, decode-once, batching and bounded look-ahead."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pytest

from taglens.engine import prepare as engine_module
from taglens.engine import EngineOptions, run

from ..conftest import photo


@dataclass(frozen=True)
class Shrink:
    """A transform: resize to size x size, CHW float32 in [0, 1]."""

    input_size: int = 8

    def __call__(self, image):
        return np.asarray(image.resize((self.input_size, self.input_size)), np.float32).transpose(2, 0, 1) / 255


class MeanJob:
    """A fake job: writes each image's mean input value into the record's ``mtime`` field (any
    Record field serves a fake) and records its batch sizes; raises on a chosen image."""

    def __init__(self, name="mean", transform=Shrink(), fail_on=None):
        self.name, self.transform, self.fail_on, self.batches = name, transform, fail_on, []

    def __call__(self, pixels):
        self.batches.append(len(pixels))
        if self.fail_on is not None and any(abs(p.mean() - self.fail_on) < 1e-6 for p in pixels):
            raise RuntimeError("poison")
        return [{"mtime": float(p.mean())} for p in pixels]


def test_records_come_in_input_order_with_errors_in_place(image_dir):
    paths = sorted(str(p) for p in image_dir.rglob("*") if p.is_file())
    records = list(run(paths, [MeanJob()], EngineOptions(batch_size=2, workers=2)))
    assert [r.path for r in records] == paths
    broken = [r for r in records if r.error]
    assert [r.path for r in broken] == [str(image_dir / "broken.jpg")]
    good = [r for r in records if not r.error]
    assert all(r.sha256 and len(r.sha256) == 64 and r.size > 0 and r.width and r.height for r in good)


def test_each_image_is_decoded_once_however_many_jobs(image_dir, monkeypatch):
    calls = []
    real = engine_module.decode_bytes
    lock = threading.Lock()

    def counting(data, options, *, name):
        with lock:
            calls.append(name)
        return real(data, options, name=name)

    monkeypatch.setattr(engine_module, "decode_bytes", counting)
    paths = sorted(str(p) for p in image_dir.rglob("*.png"))
    jobs = [MeanJob("a"), MeanJob("b"), MeanJob("c", transform=Shrink(16))]
    list(run(paths, jobs, EngineOptions(batch_size=4)))
    assert sorted(calls) == paths


def test_equal_transforms_are_computed_once(monkeypatch):
    counts = {"n": 0}

    @dataclass(frozen=True)
    class Counting(Shrink):
        def __call__(self, image):
            counts["n"] += 1
            return super().__call__(image)

    images = [photo(seed=i) for i in range(3)]
    list(run(images, [MeanJob("a", Counting()), MeanJob("b", Counting())], EngineOptions(workers=1)))
    assert counts["n"] == 3


def test_batches_are_filled_to_batch_size():
    job = MeanJob()
    list(run([photo(seed=i) for i in range(10)], [job], EngineOptions(batch_size=4)))
    assert job.batches == [4, 4, 2]


def test_a_failing_batch_is_retried_image_by_image():
    images = [photo(seed=i) for i in range(5)]
    poison = float(Shrink()(images[2]).mean())
    job = MeanJob(fail_on=poison)
    records = list(run(images, [job], EngineOptions(batch_size=5)))
    assert [bool(r.error) for r in records] == [False, False, True, False, False]
    assert "poison" in records[2].error and "mean failed" in records[2].error


def test_look_ahead_is_bounded():
    pulled = {"n": 0}

    def sources():
        for i in range(1000):
            pulled["n"] += 1
            yield photo(8, 8, seed=i)

    stream = run(sources(), [MeanJob()], EngineOptions(batch_size=2, workers=2, prefetch=6))
    next(stream)
    assert pulled["n"] <= 10
    stream.close()


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError):
        list(run([photo()], [MeanJob()], EngineOptions(batch_size=0)))


class SharedModel:
    """A fake model shared by several jobs (equal forward_key), counting its forward passes."""

    def __init__(self, fail_above: int | None = None, out_of_memory: type[BaseException] = MemoryError):
        self.batches: list[int] = []
        self.fail_above, self.out_of_memory = fail_above, out_of_memory

    def __call__(self, pixels):
        if self.fail_above is not None and len(pixels) > self.fail_above:
            raise self.out_of_memory("out of memory (injected)")
        self.batches.append(len(pixels))
        return pixels.mean(axis=(1, 2, 3))


class SelectionJob:
    """A split job over a shared model, like two TagJobs with different selections."""

    transform = Shrink()

    def __init__(self, model, name, offset):
        self.model, self.name, self.offset = model, name, offset

    @property
    def forward_key(self):
        return self.model

    def forward(self, pixels):
        return self.model(pixels)

    def finish(self, rows):
        return [{self.name: float(r) + self.offset} for r in rows]

    def __call__(self, pixels):
        return self.finish(self.forward(pixels))


def test_jobs_of_one_model_share_its_forward_pass():
    from taglens.records import Record

    model = SharedModel()
    loose, strict = SelectionJob(model, "width", 0.0), SelectionJob(model, "height", 100.0)
    images = [photo(seed=i) for i in range(6)]
    records = list(run(images, [loose, strict], EngineOptions(batch_size=4)))
    assert model.batches == [4, 2]  # once per batch, not once per job
    assert all(isinstance(r, Record) and r.height == r.width + 100.0 for r in records)


def test_an_out_of_memory_batch_is_halved_and_no_image_is_lost():
    model = SharedModel(fail_above=2)
    job = SelectionJob(model, "width", 0.0)
    images = [photo(seed=i) for i in range(8)]
    records = list(run(images, [job], EngineOptions(batch_size=8)))
    assert [r.error for r in records] == [None] * 8 and all(r.width is not None for r in records)
    assert model.batches[:4] == [2, 2, 2, 2]  # 8 -> 4 + 4 -> 2 + 2 + 2 + 2
    want = [float(Shrink()(image).mean()) for image in images]
    assert [r.width for r in records] == pytest.approx(want, abs=1e-6)


def test_after_an_out_of_memory_error_later_batches_keep_to_the_size_that_fit():
    model = SharedModel(fail_above=4)
    job = SelectionJob(model, "width", 0.0)
    list(run([photo(seed=i) for i in range(24)], [job], EngineOptions(batch_size=8)))
    assert model.batches == [4, 4] + [4] * 4  # the first batch halved, the rest capped at 4


def test_torch_out_of_memory_errors_halve_the_batch_too():
    import torch

    model = SharedModel(fail_above=1, out_of_memory=torch.OutOfMemoryError)
    records = list(run([photo(seed=i) for i in range(4)], [SelectionJob(model, "width", 0.0)],
                       EngineOptions(batch_size=4)))
    assert all(r.error is None for r in records) and model.batches == [1, 1, 1, 1]


def test_jobs_made_by_a_function_are_made_only_when_an_image_needs_them(image_dir):
    paths = sorted(str(p) for p in image_dir.rglob("*") if p.is_file() and p.name != "broken.jpg")
    made = []

    def make():
        made.append(1)
        return [MeanJob()]

    skipped = list(run(paths, make, EngineOptions(batch_size=2, workers=2), skip=lambda sha256: True))
    assert made == [] and all(r.sha256 and r.width is None and r.error is None for r in skipped)

    first = {}
    records = list(run(paths, make, EngineOptions(batch_size=2, workers=2),
                       skip=lambda sha256: first.setdefault("sha", sha256) != sha256))
    assert made == [1]  # once, though two decode threads asked
    computed = [r for r in records if r.width is not None]
    assert len(computed) == 1  # the first file hashed (whichever thread got there first)
    eager = list(run([computed[0].path], [MeanJob()], EngineOptions(batch_size=2, workers=1)))
    assert computed[0].mtime == pytest.approx(eager[0].mtime)


def test_a_failure_making_the_jobs_is_the_callers_not_an_error_record(image_dir):
    paths = sorted(str(p) for p in image_dir.rglob("*") if p.is_file())

    def make():
        raise OSError("the model folder is gone")

    with pytest.raises(OSError, match="the model folder is gone"):
        list(run(paths, make, EngineOptions(batch_size=2, workers=2), skip=lambda sha256: False))
