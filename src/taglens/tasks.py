"""Task names meet model families here: which models a run needs, loaded once, shared by every job.

    models = ModelSet(device="auto", dtype="float32")               # nothing loaded yet (TF32 off)
    request = TaskRequest(tasks=("tag", "classify", "embed"), labels=("a cat", "a dog"))
    jobs = models.jobs(request)                                      # loads JoyTag and SigLIP
    for record in taglens.engine.run(paths, jobs): ...

``classify`` and ``embed`` share one SigLIP forward pass. A `ModelSet` loads each family on first
use (thread-safe) and keeps it, so the HTTP service and a Ray actor build per-request jobs from
one set of weights; the label-embedding cache lives in the loaded `Embedder` and is shared too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from taglens.engine import Job
from taglens.errors import LabelsError, UnknownTaskError

if TYPE_CHECKING:
    from taglens.nsfw import NsfwDetector
    from taglens.tagging import Tagger, TagSelection
    from taglens.zeroshot import Embedder

TASKS = ("tag", "classify", "nsfw", "embed")
DEFAULT_TAGGER = "fancyfeast/joytag"
DEFAULT_SIGLIP = "google/siglip-so400m-patch14-224"
DEFAULT_NSFW = "Falconsai/nsfw_image_detection"
DEFAULT_TEMPLATE = "This is a photo of {}."


def parse_tasks(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"tag,nsfw"`` or ``["tag", "nsfw"]`` -> ("tag", "nsfw") in canonical order; unknown names raise."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [t.strip().lower() for t in items if t.strip()]
    unknown = sorted(set(names) - set(TASKS))
    if unknown or not names:
        raise UnknownTaskError(f"tasks must be a non-empty subset of {','.join(TASKS)}; got {','.join(names) or 'none'}"
                           + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    return tuple(t for t in TASKS if t in names)


@dataclass(frozen=True)
class TaskRequest:
    """What to compute for each image, with each job's options (the CLI flags, an API request)."""

    tasks: tuple[str, ...]
    tag_selection: TagSelection | None = None
    labels: tuple[str, ...] = ()
    templates: tuple[str, ...] = (DEFAULT_TEMPLATE,)
    classify_threshold: float | None = None
    classify_top_k: int | None = None
    nsfw_threshold: float | None = None
    positive_labels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", parse_tasks(self.tasks))
        if "classify" in self.tasks and not self.labels:
            raise LabelsError("the classify task needs labels")


@dataclass
class ModelSet:
    """The model families of one process, each loaded on first use and then shared.

    ``tagger``, ``siglip`` and ``nsfw_model`` are hub ids or folders (see `taglens.models.hub`).
    """

    tagger: str | os.PathLike = DEFAULT_TAGGER
    siglip: str | os.PathLike = DEFAULT_SIGLIP
    nsfw_model: str | os.PathLike = DEFAULT_NSFW
    device: str = "auto"
    dtype: str = "float32"
    compile: bool = False
    """Compile each model's forward pass (``torch.compile``): faster per image after ~30 s of
    compiling per model; for long runs and the server."""
    tf32: bool = False
    """Let float32 CUDA matmuls and cuDNN convolutions use TF32 (faster on Ampere and later GPUs,
    ~1e-3 relative error per operation). Off: IEEE float32, the reference numbers."""
    _loaded: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def load_tagger(self) -> Tagger:
        from taglens.tagging import Tagger

        return self._get("tag", lambda: Tagger.from_pretrained(self.tagger, device=self.device, dtype=self.dtype,
                                                               tf32=self.tf32))

    def load_embedder(self) -> Embedder:
        from taglens.zeroshot import Embedder

        return self._get("siglip", lambda: Embedder.from_pretrained(self.siglip, device=self.device, dtype=self.dtype,
                                                                    tf32=self.tf32))

    def load_nsfw(self) -> NsfwDetector:
        from taglens.nsfw import NsfwDetector

        return self._get("nsfw", lambda: NsfwDetector.from_pretrained(self.nsfw_model, device=self.device,
                                                                      dtype=self.dtype, tf32=self.tf32))

    def jobs(self, request: TaskRequest) -> list[Job]:
        """One job per model family the request needs (classify and embed share SigLIP's)."""
        jobs: list[Job] = []
        if "tag" in request.tasks:
            jobs.append(self.load_tagger().job(request.tag_selection))
        if "classify" in request.tasks or "embed" in request.tasks:
            jobs.append(self.load_embedder().job(
                list(request.labels) if "classify" in request.tasks else None,
                templates=request.templates,
                embedding="embed" in request.tasks,
                threshold=request.classify_threshold,
                top_k=request.classify_top_k,
            ))
        if "nsfw" in request.tasks:
            jobs.append(self.load_nsfw().job(positive_label=request.positive_labels, threshold=request.nsfw_threshold))
        return jobs

    def _get(self, key: str, load: Any) -> Any:
        with self._lock:
            if key not in self._loaded:
                family = load()
                if self.compile:
                    family.compile()
                self._loaded[key] = family
            return self._loaded[key]
