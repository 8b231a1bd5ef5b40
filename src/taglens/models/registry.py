"""The model families taglens knows, each described by its configuration as data.

Each family is one module under `taglens.models` (as timm keeps a pretrained config beside each
model) holding a ``CONFIG`` (`FamilyConfig`), a ``load(model, revision, *, device, dtype, tf32)``
that returns the loaded family, and a ``job_for(loaded, request)`` that makes its engine job for
a `taglens.models.modelset.TaskRequest`. Every door reads its defaults (hub ids, thresholds,
labels, the prompt template) from these configs, and every model is built through one
`taglens.models.modelset.ModelSet` from this registry.

Family modules import torch only when a model loads, so reading a config (``taglens --help``,
re-indexing an unchanged folder) never pays for it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

TASKS = ("tag", "classify", "nsfw", "embed")

FAMILIES = {
    "joytag": "taglens.models.joytag",
    "siglip": "taglens.models.siglip",
    "vit_classifier": "taglens.models.vit_classifier",
}
"""Family name -> the module that holds it."""

TASK_FAMILY = {"tag": "joytag", "classify": "siglip", "embed": "siglip", "nsfw": "vit_classifier"}
"""Which family serves each task (classify and embed share one SigLIP pass)."""


@dataclass(frozen=True)
class FamilyConfig:
    """A family's defaults and facts, as data.

    ``hub_id`` is the default checkpoint; ``input_size``, ``resample``, ``mean`` and ``std`` are
    its published preprocessing (for transformers families the loaded checkpoint's own processor
    config is what runs, these describe the default one); ``threshold``, ``positive_labels`` and
    ``template`` are the job defaults; ``text_length`` is the default checkpoint's text length.
    """

    name: str
    tasks: tuple[str, ...]
    hub_id: str
    summary: str
    input_size: int
    resample: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    license: str
    url: str
    threshold: float | None = None
    positive_labels: tuple[str, ...] = ()
    template: str | None = None
    text_length: int | None = None
    int8_float32_layers: tuple[str, ...] = ()
    """The output Linear layers ``--dtype int8`` leaves float32 (names in the family's networks,
    matched by their last parts; `taglens.engine.cpu_routes.quantize_int8`)."""


def family(name: str) -> ModuleType:
    """The module of family ``name``."""
    try:
        return importlib.import_module(FAMILIES[name])
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; families are {', '.join(FAMILIES)}") from None


def config(name: str) -> FamilyConfig:
    """The configuration of family ``name``."""
    return family(name).CONFIG


def for_task(task: str) -> FamilyConfig:
    """The configuration of the family that serves ``task``."""
    return config(TASK_FAMILY[task])


def configs() -> list[FamilyConfig]:
    return [config(name) for name in FAMILIES]
