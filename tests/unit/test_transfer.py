"""uint8 across the bus: the device's lookup-table gather gives the host's float32 tensor bit for
bit, for every family; the reused buffers, the side stream and the pending fetches run on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

from taglens.engine import EngineOptions, run
from taglens.engine.core import Item, run_batches
from taglens.engine.prepare import apply_transform
from taglens.engine.transfer import (
    ByteBatch,
    CopyStream,
    DeviceTransfer,
    ImageBytes,
    StagingBuffers,
    collate,
    fetch,
    resolve,
)

from ..conftest import photo

IMAGES = [photo(97, 61, 1), photo(45, 130, 2), photo(56, 56, 3), photo(9, 7, 4), photo(300, 200, 5)]


def _family(name: str, checkpoints):
    """A loaded family's model object and one of its engine jobs, on the CPU in float32."""
    if name == "joytag":
        from taglens.models import joytag

        tagger = joytag.load(checkpoints["joytag"], device="cpu")
        return tagger, tagger.job()
    if name in ("siglip16", "clip", "siglip16_tf5"):
        from taglens.models import siglip

        embedder = siglip.load(checkpoints[name], device="cpu")
        return embedder, embedder.job(embedding=True)
    from taglens.models import vit_classifier

    classifier = vit_classifier.load(checkpoints[name], device="cpu")
    return classifier, vit_classifier.NsfwDetector(classifier).job()


FAMILIES = ["joytag", "siglip16", "siglip16_tf5", "clip", "vit", "vit_tf5"]


@pytest.mark.parametrize("name", FAMILIES)
def test_the_device_lookup_gives_the_host_tensor_bit_for_bit(name, checkpoints):
    _, job = _family(name, checkpoints)
    transform = job.transform
    prepared = [apply_transform(transform, image) for image in IMAGES]
    assert all(isinstance(p, ImageBytes) and p.pixels.dtype == np.uint8 for p in prepared)
    host = np.stack([transform(image) for image in IMAGES])  # the float32 path, as before
    assert np.array_equal(np.stack([p.normalised() for p in prepared]), host)
    batch = collate(prepared, takes_bytes=True)
    assert isinstance(batch, ByteBatch) and batch.pixels.dtype == np.uint8
    on_device = DeviceTransfer(job.forward_key.placement.device).normalised(batch).numpy()
    assert on_device.dtype == np.float32 and on_device.flags.c_contiguous
    assert np.array_equal(on_device, host)  # bit for bit, NaN-free tensors


@pytest.mark.parametrize("name", FAMILIES)
def test_scores_from_bytes_equal_scores_from_float_pixels(name, checkpoints):
    _, job = _family(name, checkpoints)
    prepared = [apply_transform(job.transform, image) for image in IMAGES]
    from_bytes = resolve(job.launch(collate(prepared, takes_bytes=True)))
    from_floats = job.forward(np.stack([job.transform(image) for image in IMAGES]))
    assert np.array_equal(from_bytes, from_floats)


def test_a_job_that_takes_no_bytes_gets_the_host_float_tensor(checkpoints):
    _, job = _family("joytag", checkpoints)
    prepared = [apply_transform(job.transform, image) for image in IMAGES]
    floats = collate(prepared, takes_bytes=False)
    assert isinstance(floats, np.ndarray) and floats.dtype == np.float32
    assert np.array_equal(floats, np.stack([job.transform(image) for image in IMAGES]))


def test_staging_buffers_are_reused_and_grow_only_when_a_batch_is_larger():
    buffers = StagingBuffers(pin=False, depth=2)
    rng = np.random.default_rng(0)
    views = []
    for size in (4, 4, 4, 4, 2, 8):
        array = rng.integers(0, 256, (size, 5, 5, 3), dtype=np.uint8)
        view, slot = buffers.stage(array)
        buffers.release(slot, CopyStream(_cpu()).record())
        assert np.array_equal(view.numpy(), array)
        views.append(view.data_ptr())
    # two buffers for the first two batches of 4, reused for the next three; 8 replaces one
    assert buffers.allocations == 3
    assert views[2] == views[0] and views[3] == views[1] and views[4] == views[0]


def test_the_copy_stream_and_events_are_no_ops_on_the_cpu():
    import torch

    stream = CopyStream(_cpu())
    with stream.context():
        tensor = torch.ones(3)
    event = stream.record()
    event.synchronize()
    assert event.query() and stream.hand_over(tensor) is tensor


def test_a_pending_fetch_resolves_to_the_array_and_its_host_step():
    import torch

    pending = fetch(torch.arange(6, dtype=torch.float32).reshape(2, 3), lambda a: a * 2)
    assert len(pending) == 2 and np.array_equal(resolve(pending), np.arange(6).reshape(2, 3) * 2)
    assert resolve([1, 2]) == [1, 2]


def test_a_round_queues_every_model_before_waiting_for_any(checkpoints):
    """run_batches launches each model's batch first, then resolves: the order a GPU needs."""
    events: list[str] = []

    class Recording:
        takes_bytes = True

        def __init__(self, name, job):
            self.name, self.job = name, job

        @property
        def forward_key(self):
            return self.job.forward_key

        def launch(self, pixels):
            events.append(f"launch {self.name}")
            pending = self.job.launch(pixels)
            original = pending.result

            def result():
                events.append(f"wait {self.name}")
                return original()

            pending.result = result
            return pending

        def finish(self, rows):
            return self.job.finish(rows)

    jobs = [Recording(name, _family(name, checkpoints)[1]) for name in ("joytag", "siglip16", "vit")]
    batches = [[Item((job,), apply_transform(job.job.transform, image)) for image in IMAGES[:3]] for job in jobs]
    results = run_batches(batches)
    assert events == ["launch joytag", "launch siglip16", "launch vit", "wait joytag", "wait siglip16", "wait vit"]
    assert all(len(r.outcomes) == 3 and all(isinstance(o[0], dict) for o in r.outcomes) for r in results)


def test_three_families_through_the_engine_match_their_float_path(checkpoints):
    """The engine's uint8 route (prepare -> bytes -> round of three -> pending) gives each model's
    scores from the float32 path exactly (same batch shapes)."""
    jobs = [_family(name, checkpoints)[1] for name in ("joytag", "siglip16", "vit")]
    records = list(run(IMAGES[:4], jobs, EngineOptions(batch_size=4, workers=1)))
    assert all(r.error is None for r in records)
    tag, embed, nsfw = jobs
    floats = {job.name: job(np.stack([job.transform(image) for image in IMAGES[:4]])) for job in jobs}
    for i, record in enumerate(records):
        assert record.tags == floats["tag"][i]["tags"]
        assert np.array_equal(record.embedding, floats["embed"][i]["embedding"])
        assert record.nsfw == floats["nsfw"][i]["nsfw"]


def _cpu():
    import torch

    return torch.device("cpu")
