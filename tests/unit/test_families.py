"""Every family in the registry, run the same way on the test's device (CUDA where one is visible,
else the CPU): output shapes and dtypes, no NaN, a batch equals its images one by one, and
bfloat16 stays within its documented bound of float32 (docs/models.md, "Tolerances")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from taglens.engine import EngineOptions, run
from taglens.models import registry
from taglens.models.modelset import ModelSet, TaskRequest
from taglens.models.tag_selection import TagSelection
from tests.conftest import photo

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BATCH_ATOL = 1e-5
"""A batch of images against the same images one at a time, float32 (docs/models.md)."""
BFLOAT16_ATOL = 0.05
"""bfloat16 against float32 on scores (probabilities in [0, 1]); embeddings: cosine >= 0.99."""

TASKS_OF_FAMILY = {"joytag": ("tag",), "siglip": ("classify", "embed"), "vit_classifier": ("nsfw",)}


def test_every_registered_family_is_covered() -> None:
    assert set(TASKS_OF_FAMILY) == set(registry.FAMILIES)
    for name, tasks in TASKS_OF_FAMILY.items():
        assert {registry.TASK_FAMILY[task] for task in tasks} == {name}
        assert set(tasks) <= set(registry.config(name).tasks)


def _models(checkpoints: dict, dtype: str) -> ModelSet:
    return ModelSet(tagger=checkpoints["joytag"], siglip=checkpoints["siglip16"], nsfw_model=checkpoints["vit"],
                    device=DEVICE, dtype=dtype)


def _request(family: str) -> TaskRequest:
    return TaskRequest(tasks=TASKS_OF_FAMILY[family], tag_selection=TagSelection(threshold=0.0),
                       labels=("a cat", "a dog", "a car"), classify_threshold=0.0)


def _outputs(models: ModelSet, family: str, images: list, batch_size: int) -> list[dict[str, np.ndarray]]:
    """Per image, each output as an array in a fixed order (every tag, every label, every NSFW label)."""
    records = list(run(images, models.jobs(_request(family)), EngineOptions(batch_size=batch_size, workers=1)))
    out = []
    for record in records:
        assert record.error is None and not record.task_errors, (record.error, record.task_errors)
        values: dict[str, np.ndarray] = {}
        if record.tags is not None:
            values["tags"] = np.array([s.score for s in sorted(record.tags, key=lambda s: s.tag)], np.float64)
        if record.labels is not None:
            values["labels"] = np.array([s.score for s in sorted(record.labels, key=lambda s: s.label)], np.float64)
        if record.nsfw is not None:
            values["nsfw"] = np.array([record.nsfw.scores[k] for k in sorted(record.nsfw.scores)], np.float64)
        if record.embedding is not None:
            assert record.embedding.dtype == np.float32
            values["embedding"] = record.embedding
        out.append(values)
    return out


@pytest.fixture(scope="module")
def images() -> list:
    return [photo(64, 48, seed=0), photo(300, 200, seed=1), photo(40, 90, seed=2), photo(128, 128, seed=3)]


@pytest.mark.parametrize("family", list(registry.FAMILIES))
def test_family_outputs_shapes_and_batch_invariance(family: str, checkpoints: dict, images: list) -> None:
    models = _models(checkpoints, "float32")
    batched = _outputs(models, family, images, batch_size=len(images))
    single = _outputs(models, family, images, batch_size=1)
    expected = {"joytag": {"tags"}, "siglip": {"labels", "embedding"}, "vit_classifier": {"nsfw"}}[family]
    loaded = models.load(family)
    for b, s in zip(batched, single, strict=True):
        assert set(b) == expected
        for name, value in b.items():
            assert np.isfinite(value).all(), name
            assert value.shape == s[name].shape
            np.testing.assert_allclose(value, s[name], atol=BATCH_ATOL, rtol=0, err_msg=f"{family} {name}")
        if "tags" in b:
            assert b["tags"].shape == (len(loaded.tags),)
        if "labels" in b:
            assert b["labels"].shape == (3,) and ((b["labels"] >= 0) & (b["labels"] <= 1)).all()
        if "embedding" in b:
            assert b["embedding"].ndim == 1
            assert abs(float(np.linalg.norm(b["embedding"])) - 1.0) < 1e-5
        if "nsfw" in b:
            assert abs(float(b["nsfw"].sum()) - 1.0) < 1e-5  # the default checkpoint is softmax


@pytest.mark.parametrize("family", list(registry.FAMILIES))
def test_family_bfloat16_within_its_bound(family: str, checkpoints: dict, images: list) -> None:
    exact = _outputs(_models(checkpoints, "float32"), family, images, batch_size=2)
    fast = _outputs(_models(checkpoints, "bfloat16"), family, images, batch_size=2)
    for e, f in zip(exact, fast, strict=True):
        assert set(e) == set(f)
        for name in e:
            assert np.isfinite(f[name]).all()
            if name == "embedding":
                cosine = float(np.dot(e[name], f[name]) / np.linalg.norm(e[name]) / np.linalg.norm(f[name]))
                assert cosine >= 0.99, (family, cosine)
            else:
                assert float(np.abs(e[name] - f[name]).max()) <= BFLOAT16_ATOL, (family, name)
