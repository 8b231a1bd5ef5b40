"""The models an index run may need, named but not loaded until there is something to compute.

A `ModelSource` knows its task and the identity (model id, revision) of its checkpoint without
loading weights (`taglens.models.hub.resolve_model` only looks at files), so re-indexing an unchanged
folder never imports torch. `load_models` is the one place the real model families are named:
JoyTag through `taglens.models.joytag.Tagger`, SigLIP/CLIP through `taglens.models.siglip.Embedder` and
the NSFW classifier through `taglens.models.vit_classifier.NsfwDetector`, each loaded through a
`taglens.models.modelset.ModelSet` (one loaded model per family, shareable with other jobs of the
process). Tests pass their own sources (`loaded(...)` wraps a Job that already exists).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from taglens.engine import Job
from taglens.errors import LibraryError
from taglens.models import registry

if TYPE_CHECKING:
    from taglens.models.vit_classifier import NsfwDetector
    from taglens.models.modelset import ModelSet
    from taglens.models.siglip import Embedder

__all__ = ["LazyModel", "LoadedModel", "ModelSource", "load_embedder", "load_models", "loaded", "tagger_tag_names"]

TAG_LIST_FILE = "top_tags.txt"  # taglens.models.joytag_vit.TAGS_FILE, without importing torch


class ModelSource(Protocol):
    """One task's model: identity now, weights on demand."""

    task: str  # "tag" | "nsfw" | "embed"

    def identity(self) -> tuple[str, str]:
        """(model_id, revision), without loading the model."""
        ...

    def job(self) -> Job:
        """The loaded Job (loaded on the first call, then reused)."""
        ...


@dataclass
class LazyModel:
    """A checkpoint resolved through `taglens.models.hub.resolve_model` and loaded by ``load`` on first use."""

    task: str
    model: str
    revision: str | None
    load: Callable[[], Job]
    _identity: tuple[str, str] | None = field(default=None, repr=False)
    _job: Job | None = field(default=None, repr=False)

    def identity(self) -> tuple[str, str]:
        if self._job is not None:
            return self._job.model_id, self._job.revision
        if self._identity is None:
            from taglens.models.hub import resolve_model

            resolved = resolve_model(self.model, self.revision)
            self._identity = (resolved.model_id, resolved.revision)
        return self._identity

    def job(self) -> Job:
        if self._job is None:
            job = self.load()
            expected = self.identity()
            if (job.model_id, job.revision) != expected:
                raise LibraryError(
                    f"{self.task} model {self.model!r} loaded as {job.model_id}@{job.revision}, but resolved as "
                    f"{expected[0]}@{expected[1]}; results would be stored under the wrong model"
                )
            self._job = job
        return self._job


@dataclass
class LoadedModel:
    """A Job that exists already (the Python API, tests)."""

    task: str
    loaded: Job

    def identity(self) -> tuple[str, str]:
        return self.loaded.model_id, self.loaded.revision

    def job(self) -> Job:
        return self.loaded


def loaded(task: str, job: Job) -> LoadedModel:
    return LoadedModel(task, job)


def load_models(
    *,
    tagger: str | os.PathLike | None = registry.for_task("tag").hub_id,
    siglip: str | os.PathLike | None = registry.for_task("embed").hub_id,
    nsfw_model: str | os.PathLike | None = registry.for_task("nsfw").hub_id,
    device: str = "auto",
    dtype: str = "float32",
    tag_threshold: float | None = None,
    model_set: ModelSet | None = None,
    tf32: bool = False,
    compile: bool = False,
) -> list[LazyModel]:
    """The real model families for an index run, each loaded only if something needs it.

    ``None`` leaves a task out. The library stores what each family's job gives: JoyTag tags
    scoring strictly above ``tag_threshold`` (default: the tagger family's), the NSFW classifier's scores, and SigLIP/CLIP image
    embeddings (from the same image-tower pass ``taglens analyze --tasks embed`` runs).
    ``compile`` compiles each model's forward pass as ``taglens analyze --compile`` does
    (`taglens.models.modelset.ModelSet.compile`). ``model_set`` shares already loaded models (its
    names and settings then win over the arguments); otherwise one is made from the arguments.
    """
    from taglens.models.modelset import ModelSet

    if model_set is None:
        chosen = {name: value for name, value in (("tagger", tagger), ("siglip", siglip), ("nsfw_model", nsfw_model))
                  if value is not None}
        model_set = ModelSet(**chosen, device=device, dtype=dtype, tf32=tf32, compile=compile)
    sources: list[LazyModel] = []
    if tagger is not None:
        def tag_job() -> Job:
            from taglens.models.tag_selection import TagSelection

            return model_set.load_tagger().job(TagSelection(threshold=tag_threshold))

        sources.append(LazyModel("tag", os.fspath(model_set.tagger), None, tag_job))
    if nsfw_model is not None:
        sources.append(LazyModel("nsfw", os.fspath(model_set.nsfw_model), None, lambda: nsfw_detector(model_set).job()))
    if siglip is not None:
        sources.append(LazyModel("embed", os.fspath(model_set.siglip), None,
                                 lambda: model_set.load_embedder().job(embedding=True)))
    return sources


def nsfw_detector(model_set: ModelSet) -> NsfwDetector:
    """The set's NSFW classifier under the library's rule (`taglens.models.vit_classifier.library_detector`)."""
    from taglens.models.vit_classifier import library_detector

    return library_detector(model_set.load_classifier())


def tagger_tag_names(model_id: str, revision: str) -> tuple[str, ...] | None:
    """Every tag name of the JoyTag-format checkpoint recorded as (``model_id``, ``revision``),
    read from its tag list when that is on this machine (never from the network), else None."""
    from taglens.models.hub import cached_file

    path = cached_file(model_id, revision, TAG_LIST_FILE)
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def load_embedder(model: str, revision: str | None, *, device: str = "auto", dtype: str = "float32") -> Embedder:
    """The SigLIP/CLIP `taglens.models.siglip.Embedder` (text and image towers) of ``model`` at ``revision``:
    what search loads for the checkpoint recorded in the library."""
    from taglens.models.siglip import Embedder

    return Embedder.from_pretrained(model, revision=revision, device=device, dtype=dtype)
