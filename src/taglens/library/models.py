"""The models an index run may need, named but not loaded until there is something to compute.

A `ModelSource` knows its task and the identity (model id, revision) of its checkpoint without
loading weights (`taglens.hub.resolve_model` only looks at files), so re-indexing an unchanged
folder never imports torch. `load_models` is the one place the real model families are named;
tests pass their own sources (`loaded(...)` wraps a Job that already exists).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from taglens.engine import Job
from taglens.errors import LibraryError

DEFAULT_TAGGER = "fancyfeast/joytag"
DEFAULT_SIGLIP = "google/siglip-so400m-patch14-224"
DEFAULT_NSFW = "Falconsai/nsfw_image_detection"
TAG_THRESHOLD = 0.4


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
    """A checkpoint resolved through `taglens.hub.resolve_model` and loaded by ``load`` on first use."""

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
            from taglens.hub import resolve_model

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
    tagger: str | None = DEFAULT_TAGGER,
    siglip: str | None = DEFAULT_SIGLIP,
    nsfw_model: str | None = DEFAULT_NSFW,
    device: str = "auto",
    dtype: str = "float32",
    tag_threshold: float = TAG_THRESHOLD,
) -> list[LazyModel]:
    """The real model families for an index run, each loaded only if something needs it.
    ``None`` leaves a task out."""
    sources: list[LazyModel] = []
    if tagger is not None:
        def tag_job() -> Job:
            from taglens.tagging import Tagger, TagSelection

            return Tagger.from_pretrained(tagger, device=device, dtype=dtype).job(TagSelection(threshold=tag_threshold))

        sources.append(LazyModel("tag", tagger, None, tag_job))
    if nsfw_model is not None:
        def nsfw_job() -> Job:
            from taglens.nsfw import NsfwDetector

            return NsfwDetector.from_pretrained(nsfw_model, device=device, dtype=dtype).job()

        sources.append(LazyModel("nsfw", nsfw_model, None, nsfw_job))
    if siglip is not None:
        def embed_job() -> Job:
            return load_embedder(siglip, None, device=device, dtype=dtype).job(embed=True)

        sources.append(LazyModel("embed", siglip, None, embed_job))
    return sources


def load_embedder(model: str, revision: str | None, *, device: str = "auto", dtype: str = "float32") -> Any:
    """A SigLIP/CLIP `taglens.zeroshot.Embedder` (text and image towers), for indexing and search."""
    from taglens.zeroshot import Embedder

    return Embedder.from_pretrained(model, revision=revision, device=device, dtype=dtype)
