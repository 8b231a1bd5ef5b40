"""--compile gives the eager numbers (within 1e-5) and pads batches to powers of two."""

from __future__ import annotations

import numpy as np
import torch

from taglens.engine import EngineOptions, run
from taglens.engine.placement import CompiledForward
from taglens.models.modelset import ModelSet, TaskRequest

from ..conftest import photo


def test_compiled_forward_pads_to_powers_of_two():
    seen = []

    def forward(x):
        seen.append(x.shape[0])
        return x * 2

    compiled = CompiledForward(forward)
    compiled._compiled = forward  # the padding logic, without paying for inductor here
    out = compiled(torch.arange(3.0).reshape(3, 1))
    assert seen == [4] and out.shape == (3, 1) and out[:, 0].tolist() == [0.0, 2.0, 4.0]


def test_compiled_models_match_eager(checkpoints):
    images = [photo(40 + i, 30 + 2 * i, seed=i) for i in range(3)]
    request = TaskRequest(tasks=("tag", "classify", "nsfw", "embed"), labels=("a cat", "a dog"))
    kwargs = dict(tagger=checkpoints["joytag"], siglip=checkpoints["siglip16"], nsfw_model=checkpoints["vit"])
    eager = list(run(images, ModelSet(**kwargs).jobs(request), EngineOptions(batch_size=4)))
    compiled = list(run(images, ModelSet(**kwargs, compile=True).jobs(request), EngineOptions(batch_size=4)))
    for a, b in zip(eager, compiled):
        assert [t.tag for t in a.tags] == [t.tag for t in b.tags]
        assert np.allclose([t.score for t in a.tags], [t.score for t in b.tags], atol=1e-5)
        assert np.allclose([x.score for x in a.labels], [x.score for x in b.labels], atol=1e-5)
        assert abs(a.nsfw.score - b.nsfw.score) < 1e-5
        assert np.abs(a.embedding - b.embedding).max() < 1e-5
