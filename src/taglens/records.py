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

import dataclasses
import typing
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


class Part:
    """A record field's value type: its JSON form is its dataclass fields, by name."""

    def to_json(self) -> dict[str, Any]:
        return {f.name: json_value(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Any:
        """The part back from its JSON form (or an Arrow row: a map comes back as pairs)."""
        hints = typing.get_type_hints(cls)
        return cls(**{f.name: dict(data[f.name]) if hints[f.name] == dict[str, float] else data[f.name]
                      for f in dataclasses.fields(cls)})  # type: ignore[arg-type]


@dataclass(frozen=True)
class TagScore(Part):
    tag: str
    score: float


@dataclass(frozen=True)
class LabelScore(Part):
    label: str
    score: float


@dataclass(frozen=True)
class NsfwResult(Part):
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
        for name in JOB_FIELDS:
            value = getattr(self, name)
            if value is not None and (embedding or name != "embedding"):
                out[name] = json_value(value)
        out.update(self.error_fields())
        return out

    def error_fields(self) -> dict[str, str]:
        """``{"<task>_error": reason}`` for each failed task, in task order."""
        return {error_field(task): reason for task, reason in self.task_errors.items()}


JOB_FIELDS = tuple(TASK_FIELDS.values())  # ("tags", "labels", "nsfw", "embedding")
FACT_FIELDS = ("sha256", "size", "mtime", "width", "height")


def field_types() -> dict[str, Any]:
    """Every `Record` field's type, resolved: what the Arrow schema (`taglens.io.arrow`) and the
    HTTP schemas (`taglens.server.schemas`) are derived from."""
    return typing.get_type_hints(Record)


def wire_fields() -> dict[str, Any]:
    """The JSON form's fields (`Record.to_json`) and their types, in order: ``path``, ``error``, the
    job fields (the embedding as a list of floats), then a ``<task>_error`` per task."""
    types = field_types()
    out: dict[str, Any] = {"path": types["path"], "error": types["error"]}
    out.update({name: types[name] for name in JOB_FIELDS})
    out["embedding"] = list[float] | None
    out.update({error_field(task): str | None for task in TASKS})
    return out


def json_value(value: Any) -> Any:
    """A field's value as JSON: parts as objects, tuples of parts as lists, arrays as float lists."""
    if isinstance(value, Part):
        return value.to_json()
    if isinstance(value, tuple):
        return [json_value(v) for v in value]
    if isinstance(value, np.ndarray):
        return [float(v) for v in value]
    if isinstance(value, dict):
        return dict(value)
    return value


def _task_order(task: str) -> int:
    return TASKS.index(task) if task in TASKS else len(TASKS)
