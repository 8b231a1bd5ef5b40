"""Each family's job splits into the model's forward pass and the job's own finishing step, so
jobs with different options can share one forward pass (the HTTP service's batcher relies on it)."""

from __future__ import annotations

import numpy as np

from taglens.models.tag_selection import TagSelection
from taglens.models.modelset import ModelSet, TaskRequest

from ..conftest import photo


def same_fields(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key in got:
        if key == "embedding":
            np.testing.assert_allclose(got[key], want[key], atol=1e-6)
        else:
            assert got[key] == want[key]


def test_forward_then_finish_is_the_job(checkpoints):
    models = ModelSet(tagger=checkpoints["joytag"], siglip=checkpoints["siglip64"], nsfw_model=checkpoints["vit"],
                      device="cpu")
    loose = models.jobs(TaskRequest(tasks=("tag", "classify", "nsfw", "embed"), labels=("a cat", "a dog"),
                                    tag_selection=TagSelection(threshold=0.1), nsfw_threshold=0.1))
    strict = models.jobs(TaskRequest(tasks=("tag", "classify", "nsfw"), labels=("a car",),
                                     tag_selection=TagSelection(threshold=0.9, top_k=2), nsfw_threshold=0.9))
    images = [photo(60, 40, seed) for seed in range(3)]
    for a, b in zip(loose, strict):
        assert a.forward_key is b.forward_key  # same model, whatever the options
        pixels = np.stack([a.transform(im) for im in images])
        rows = a.forward(pixels)
        assert len(rows) == 3
        for job in (a, b):
            whole = job(pixels)
            for got, want in zip(job.finish(rows), whole):
                same_fields(got, want)
            for got, want in zip(job.finish(rows[[2, 0]]), [whole[2], whole[0]]):  # any subset of rows
                same_fields(got, want)
    assert len({id(job.forward_key) for job in loose}) == 3
