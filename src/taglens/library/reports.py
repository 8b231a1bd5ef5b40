"""What the library's methods return: plain dataclasses, each with the JSON or text form the CLI prints."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from taglens.counts import counted
from taglens.records import NsfwResult, Record, TagScore


_UNDECODABLE = re.compile("[\udc80-\udcff]")


def json_text(data: Any, **dumps: Any) -> str:
    """``json.dumps`` for what the library commands print: Unicode as it is, except the lone
    surrogates ``os.fsdecode`` gives a path's bytes that are not UTF-8, which are written as
    ``\\udcXX`` escapes, so every line is valid UTF-8 and ``os.fsencode(json.loads(line)["path"])``
    gives the file system's bytes back."""
    text = json.dumps(data, ensure_ascii=False, **dumps)
    return _UNDECODABLE.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


@dataclass
class IndexReport:
    """What an index run did. ``computed`` images went through the models (``partial`` of them
    lost a job's result, kept for the next run to compute; see `taglens.records`); ``reused`` ones
    were renamed, moved or copied files whose content the library already knew."""

    seen: int = 0
    unchanged: int = 0
    failed_before: int = 0
    hashed: int = 0
    reused: int = 0
    computed: int = 0
    partial: int = 0
    errors: int = 0
    deleted: int = 0
    loaded: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, record: Record) -> None:
        """Count one record the models produced: computed (``partial`` too) or an error."""
        if record.error is not None:
            self.errors += 1
            return
        self.computed += 1
        self.partial += record.status == "partial"

    @property
    def ok(self) -> int:
        """Files of this run that the library now holds results for (not failed, now or before)."""
        return self.seen - self.errors - self.failed_before

    def line(self) -> str:
        before = f" ({self.failed_before} failed before)" if self.failed_before else ""
        partial = f" ({self.partial} partial: retried next run)" if self.partial else ""
        return (f"{counted(self.seen, 'file')}: {self.unchanged} unchanged{before}, {self.reused} reused, "
                f"{self.computed} computed{partial}, {counted(self.errors, 'error')}, {self.deleted} removed "
                f"({self.seconds:.1f} s)")


@dataclass(frozen=True)
class Hit:
    """One search result: a file, its score (None for a filter-only search), tags and NSFW result,
    and ``image``, the library's id of its content (the HTTP service's image id; not in `to_json`)."""

    path: str
    score: float | None
    tags: tuple[TagScore, ...] | None = None
    nsfw: NsfwResult | None = None
    image: int | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "score": self.score,
                "tags": None if self.tags is None else [t.to_json() for t in self.tags],
                "nsfw": None if self.nsfw is None else self.nsfw.to_json()}


@dataclass(frozen=True)
class DuplicateGroup:
    """Files whose images are near-duplicates; ``similarity`` is the lowest cosine linking them."""

    paths: tuple[str, ...]
    similarity: float

    def to_json(self) -> dict[str, Any]:
        return {"paths": list(self.paths), "similarity": self.similarity}


@dataclass
class VerifyReport:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class PruneReport:
    missing_files: int = 0
    orphan_contents: int = 0
    old_models: int = 0
    dry_run: bool = False

    def line(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        return (f"{verb} {counted(self.missing_files, 'missing file')}, "
                f"{counted(self.orphan_contents, 'unreferenced image')} and the results of "
                f"{counted(self.old_models, 'superseded model')}")
