"""What a run asks of the models: the tasks and each job's options (the CLI flags, an API request).

Kept apart from `taglens.models.modelset` so that the family modules can name it without importing
the set that loads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from taglens.errors import LabelsError, UnknownTaskError
from taglens.models.registry import TASKS

if TYPE_CHECKING:
    from taglens.models.tag_selection import TagSelection


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
    templates: tuple[str, ...] = ()
    """Prompt templates; empty: the family's own (``This is a photo of {}.`` for SigLIP)."""
    classify_threshold: float | None = None
    classify_top_k: int | None = None
    nsfw_threshold: float | None = None
    positive_labels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", parse_tasks(self.tasks))
        if "classify" in self.tasks and not self.labels:
            raise LabelsError("the classify task needs labels")
