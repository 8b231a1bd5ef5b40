"""Task names meet model families here: which models a run needs, loaded once, shared by every job.

    models = ModelSet(device="auto", dtype="float32")               # nothing loaded yet (TF32 off)
    request = TaskRequest(tasks=("tag", "classify", "embed"), labels=("a cat", "a dog"))
    jobs = models.jobs(request)                                      # loads JoyTag and SigLIP
    for record in taglens.engine.run(paths, jobs): ...

Every door builds its models through a `ModelSet`: the families and their defaults come from
`taglens.models.registry`, and each family's ``job_for`` makes its job for a request
(``classify`` and ``embed`` share one SigLIP forward pass). A `ModelSet` loads each family on first
use (thread-safe) and keeps it, so the HTTP service and a Ray actor build per-request jobs from one
set of weights; the label-embedding cache lives in the loaded `Embedder` and is shared too.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from taglens.engine import Job
from taglens.models import registry
from taglens.models.registry import TASK_FAMILY
from taglens.models.request import TaskRequest

if TYPE_CHECKING:
    from taglens.models.joytag_vit import Tagger
    from taglens.models.siglip import Embedder
    from taglens.models.vit_classifier import ImageClassifier, NsfwDetector

FIELD_OF_FAMILY = {"joytag": "tagger", "siglip": "siglip", "vit_classifier": "nsfw_model"}
"""The `ModelSet` field naming each family's checkpoint (the commands' --tagger, --siglip, --nsfw-model)."""


@dataclass
class ModelSet:
    """The model families of one process, each loaded on first use and then shared.

    ``tagger``, ``siglip`` and ``nsfw_model`` are hub ids or folders (see `taglens.models.hub`).
    """

    tagger: str | os.PathLike = field(default_factory=lambda: registry.config("joytag").hub_id)
    siglip: str | os.PathLike = field(default_factory=lambda: registry.config("siglip").hub_id)
    nsfw_model: str | os.PathLike = field(default_factory=lambda: registry.config("vit_classifier").hub_id)
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

    def load(self, family: str) -> Any:
        """Family ``family`` loaded (once) from its checkpoint field, on this set's device and dtype."""
        def load() -> Any:
            model = getattr(self, FIELD_OF_FAMILY[family])
            return registry.family(family).load(model, device=self.device, dtype=self.dtype, tf32=self.tf32)

        return self._get(family, load)

    def load_tagger(self) -> Tagger:
        return self.load("joytag")

    def load_embedder(self) -> Embedder:
        return self.load("siglip")

    def load_classifier(self) -> ImageClassifier:
        return self.load("vit_classifier")

    def load_nsfw(self) -> NsfwDetector:
        """The NSFW classifier with the default rule (its ``nsfw`` label at 0.5)."""
        from taglens.models.vit_classifier import NsfwDetector

        return NsfwDetector(self.load_classifier())

    def jobs(self, request: TaskRequest) -> list[Job]:
        """One job per model family the request needs, in registry order (classify and embed share SigLIP's)."""
        needed = {TASK_FAMILY[task] for task in request.tasks}
        families = [name for name in registry.FAMILIES if name in needed]
        return [registry.family(name).job_for(self.load(name), request) for name in families]

    def _get(self, key: str, load: Any) -> Any:
        with self._lock:
            if key not in self._loaded:
                family = load()
                if self.compile:
                    family.compile()
                self._loaded[key] = family
            return self._loaded[key]
