"""The record: one per input image, the single shape every job, sink, database row and API
response is made from.

A record carries the path and the fields of the jobs that ran (``tags``, ``labels``, ``nsfw``,
``embedding``); fields of jobs that did not run stay ``None`` and are left out of the JSON form.

When something fails, the record says what and why, and keeps everything that did not fail:

- ``task_errors`` maps each task whose job failed on this image to the reason (``{"nsfw":
  "nsfw failed on this image (...)"}``); the other jobs' fields are kept. One SigLIP job serving
  classify and embed fails both tasks. Every output writes it as one ``<task>_error`` field per
  failed task (``tag_error``, ``classify_error``, ``nsfw_error``, ``embed_error``).
- ``error`` is set exactly when the record has no results at all: the image could not be read,
  decoded or preprocessed (then ``task_errors`` is empty), or every job failed on it (then
  ``error`` repeats their reasons).

So a record is **done** (every job's fields), **partial** (some jobs failed, the rest kept: it
counts as a success, its failed tasks are named) or an **error** (nothing to show); see `status`.
A run succeeds (exit status 0, HTTP 200) when at least one image is done or partial.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np


# task -> the record field its job fills, in the order every output lists them
TASK_FIELDS = {"tag": "tags", "classify": "labels", "nsfw": "nsfw", "embed": "embedding"}
TASKS = tuple(TASK_FIELDS)
TASK_OF_FIELD = {f: t for t, f in TASK_FIELDS.items()}


def error_field(task: str) -> str:
    """The name a failed task's reason has in every output: ``<task>_error``."""
    return f"{task}_error"


def tasks_of_job(name: str) -> tuple[str, ...]:
    """The tasks a job serves, from its name (``"classify+embed"`` -> ``("classify", "embed")``)."""
    return tuple(part for part in name.split("+") if part)


@dataclass(frozen=True)
class TagScore:
    tag: str
    score: float


@dataclass(frozen=True)
class LabelScore:
    label: str
    score: float


@dataclass(frozen=True)
class NsfwResult:
    """The classifier's top label and score, every label's score, and whether it passed the
    positive label's threshold."""

    label: str
    score: float
    scores: dict[str, float]
    flagged: bool


@dataclass(frozen=True)
class Record:
    """What taglens learned about one image (or why it could not)."""

    path: str
    error: str | None = None
    sha256: str | None = None
    size: int | None = None
    mtime: float | None = None
    width: int | None = None
    height: int | None = None
    tags: tuple[TagScore, ...] | None = None
    labels: tuple[LabelScore, ...] | None = None
    nsfw: NsfwResult | None = None
    embedding: np.ndarray | None = field(default=None, compare=False)
    task_errors: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """The image has results (it is done or partial)."""
        return self.error is None

    @property
    def status(self) -> Literal["done", "partial", "error"]:
        if self.error is not None:
            return "error"
        return "partial" if self.task_errors else "done"

    def with_fields(self, **fields: Any) -> Record:
        return replace(self, **fields)

    def with_job_results(self, outcomes: Iterable[tuple[str, dict[str, Any] | str]]) -> Record:
        """This record plus each job's outcome, given as (job name, its fields or the reason it
        failed on this image): every successful job's fields are kept, each failed job's tasks get
        their reason in ``task_errors``, and ``error`` is set only when every job failed."""
        fields: dict[str, Any] = {}
        errors: dict[str, str] = {}
        succeeded = False
        for name, outcome in outcomes:
            if isinstance(outcome, str):
                errors.update((task, outcome) for task in tasks_of_job(name))
            else:
                fields.update(outcome)
                succeeded = True
        if not errors:
            return replace(self, **fields)
        ordered = {task: errors[task] for task in sorted(errors, key=_task_order)}
        error = None if succeeded else "; ".join(dict.fromkeys(ordered.values()))
        return replace(self, **fields, task_errors=ordered, error=error)

    def to_json(self, *, embedding: bool = True) -> dict[str, Any]:
        """The JSONL shape: ``path``, then ``error`` or the fields of the jobs that ran, then a
        ``<task>_error`` per failed task."""
        out: dict[str, Any] = {"path": self.path}
        if self.error is not None:
            out["error"] = self.error
            out.update(self.error_fields())
            return out
        if self.tags is not None:
            out["tags"] = [{"tag": t.tag, "score": t.score} for t in self.tags]
        if self.labels is not None:
            out["labels"] = [{"label": x.label, "score": x.score} for x in self.labels]
        if self.nsfw is not None:
            out["nsfw"] = {
                "label": self.nsfw.label,
                "score": self.nsfw.score,
                "scores": dict(self.nsfw.scores),
                "flagged": self.nsfw.flagged,
            }
        if embedding and self.embedding is not None:
            out["embedding"] = [float(v) for v in self.embedding]
        out.update(self.error_fields())
        return out

    def error_fields(self) -> dict[str, str]:
        """``{"<task>_error": reason}`` for each failed task, in task order."""
        return {error_field(task): reason for task, reason in self.task_errors.items()}


def _task_order(task: str) -> int:
    return TASKS.index(task) if task in TASKS else len(TASKS)
