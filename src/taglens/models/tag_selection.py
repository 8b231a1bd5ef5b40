"""Which tags a tagging run keeps: `TagSelection` (the options) and `ResolvedSelection` (bound to
one model's tag list, as float32 cutoffs).

A tag is kept when its sigmoid score is strictly greater than its threshold (the tag's own from a
thresholds file, else the global one; by default the tagger family's, `FamilyConfig.threshold`,
as its authors use), it is not excluded, and it is among the ``top_k`` best when that is set. Kept tags are listed
by score, highest first. Any multi-label tagger family uses it.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from taglens.errors import TagSelectionError
from taglens.models.tagnames import TagNames
from taglens.records import TagScore


@dataclass(frozen=True)
class TagSelection:
    """Which tags a tagging run keeps.

    ``threshold``: a tag counts when its score is strictly greater; None: the tagger family's
    default (``FamilyConfig.threshold``), bound in `resolve`.
    ``thresholds``: per-tag thresholds that replace the global one (see `read_thresholds`).
    ``top_k``: keep at most this many of the tags that pass, the highest scores first.
    ``exclude``: tag names never reported.
    Names may be written with spaces instead of underscores and in any case (``Long hair``).
    """

    threshold: float | None = None
    thresholds: Mapping[str, float] = field(default_factory=dict)
    top_k: int | None = None
    exclude: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.threshold is not None:
            _check_threshold(self.threshold, "threshold")
        for tag, value in self.thresholds.items():
            _check_threshold(value, f"threshold for {tag!r}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise TagSelectionError(f"top_k must be a positive integer, not {self.top_k!r}")
        if isinstance(self.exclude, str):
            raise TagSelectionError("exclude must be a collection of tag names, not one string")
        object.__setattr__(self, "thresholds", dict(self.thresholds))
        object.__setattr__(self, "exclude", frozenset(self.exclude))

    @classmethod
    def from_files(
        cls,
        *,
        threshold: float | None = None,
        thresholds_file: str | os.PathLike | None = None,
        top_k: int | None = None,
        exclude: Iterable[str] = (),
        exclude_file: str | os.PathLike | None = None,
    ) -> TagSelection:
        """A selection whose per-tag thresholds and extra exclusions come from files."""
        thresholds = read_thresholds(thresholds_file) if thresholds_file is not None else {}
        names = set(exclude)
        if exclude_file is not None:
            names.update(read_tag_list(exclude_file))
        return cls(threshold=threshold, thresholds=thresholds, top_k=top_k, exclude=frozenset(names))

    def __hash__(self) -> int:
        return hash((self.threshold, tuple(sorted(self.thresholds.items())), self.top_k, self.exclude))

    def resolve(self, tags: Sequence[str], default_threshold: float) -> ResolvedSelection:
        """Bind the names to a model's tag list (as `taglens.models.tagnames.TagNames` does: spaces for
        underscores, any case), with ``default_threshold`` (the tagger's) where ``threshold`` is
        None; unknown names raise `UnknownTagError`, a `TagSelectionError`."""
        names = TagNames(tags)
        index = {name: i for i, name in enumerate(tags)}
        thresholds = list(self.thresholds.items())
        excluded = sorted(self.exclude)
        bound = names.resolve([name for name, _ in thresholds] + excluded)
        threshold = default_threshold if self.threshold is None else self.threshold
        cutoffs = np.full(len(tags), threshold, dtype=np.float32)
        for name, (_, value) in zip(bound, thresholds):
            cutoffs[index[name]] = value
        for name in bound[len(thresholds):]:
            cutoffs[index[name]] = np.inf  # no score passes
        return ResolvedSelection(tuple(tags), cutoffs, self.top_k)


@dataclass(frozen=True, eq=False)
class ResolvedSelection:
    """A selection bound to one tag list: a float32 cutoff per tag (+inf when excluded)."""

    tags: tuple[str, ...]
    cutoffs: np.ndarray
    top_k: int | None = None

    def select(self, scores: np.ndarray) -> tuple[TagScore, ...]:
        """One image's (n_tags,) float32 scores -> the kept tags, highest score first.

        The comparison is in float32, like the reference's ``score > threshold`` on a float32 tensor.
        """
        scores = np.asarray(scores, dtype=np.float32)
        passed = np.flatnonzero(scores > self.cutoffs)
        order = passed[np.argsort(-scores[passed], kind="stable")]  # ties keep the tag-list order
        if self.top_k is not None:
            order = order[: self.top_k]
        return tuple(TagScore(self.tags[i], float(scores[i])) for i in order)


def read_thresholds(path: str | os.PathLike) -> dict[str, float]:
    """Per-tag thresholds from a CSV file of ``tag,threshold`` rows (a header row is allowed).

    Blank rows are skipped; a tag listed twice, a missing value or a value outside [0, 1] is an
    error naming the file and line.
    """
    path = Path(path)
    out: dict[str, float] = {}
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            first = True
            for number, row in enumerate(csv.reader(f), 1):
                cells = [c.strip() for c in row]
                if not any(cells):
                    continue
                if len(cells) != 2 or not cells[0]:
                    raise TagSelectionError(f"{path}:{number}: expected 'tag,threshold', got {','.join(row)!r}")
                tag, text = cells
                try:
                    value = float(text)
                except ValueError:
                    if first:
                        first = False
                        continue  # a header row such as "tag,threshold"
                    raise TagSelectionError(f"{path}:{number}: threshold {text!r} is not a number") from None
                first = False
                if tag in out:
                    raise TagSelectionError(f"{path}:{number}: {tag!r} is listed twice")
                try:
                    _check_threshold(value, f"threshold for {tag!r}")
                except TagSelectionError as exc:
                    raise TagSelectionError(f"{path}:{number}: {exc}") from None
                out[tag] = value
    except OSError as exc:
        raise TagSelectionError(f"{path}: cannot read thresholds file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise TagSelectionError(f"{path}: not UTF-8 text") from None
    return out


def read_tag_list(path: str | os.PathLike) -> list[str]:
    """Tag names from a text file: one per line, or comma-separated; blank entries skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise TagSelectionError(f"{path}: cannot read tag list ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise TagSelectionError(f"{path}: not UTF-8 text") from None
    return split_tags(text.replace("\n", ","))


def split_tags(text: str) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]`` (tag names never contain commas)."""
    return [t.strip() for t in text.split(",") if t.strip()]


def _check_threshold(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise TagSelectionError(f"{what} must be a number from 0 to 1, not {value!r}")


