"""The record: one per input image, the single shape every job, sink, database row and API
response is made from.

A record carries the path and either an ``error`` or the fields of the jobs that ran
(``tags``, ``labels``, ``nsfw``, ``embedding``); fields of jobs that did not run stay ``None``
and are left out of the JSON form.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


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

    @property
    def ok(self) -> bool:
        return self.error is None

    def with_fields(self, **fields: Any) -> Record:
        return replace(self, **fields)

    def to_json(self, *, embedding: bool = True) -> dict[str, Any]:
        """The JSONL shape: ``path``, then ``error`` or the fields of the jobs that ran."""
        out: dict[str, Any] = {"path": self.path}
        if self.error is not None:
            out["error"] = self.error
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
        return out
