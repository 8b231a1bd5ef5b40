"""Change detection: which files an index run must read, decided from the walk and ``stat`` alone.

For each image under the roots (`taglens.io.inputs.iter_image_paths`):

- same size and mtime as recorded: **unchanged**, not read; computed again only for the tasks
  whose current model has no result for its content yet (a new model re-embeds only);
- otherwise the file is **changed** (or new): the index pass (`taglens.library.indexing`) has the
  engine read and hash it once; a sha256 the library already holds (a rename, a move, a copy, or
  a touch) is filed under the existing content without decoding, an unknown one is computed;
- a recorded path under the roots that the walk no longer yields is **deleted**.

Nothing here reads a file's bytes, decodes an image or loads a model.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from taglens.io.inputs import iter_image_paths
from taglens.library import db


@dataclass(frozen=True)
class Known:
    """An unchanged file whose content lacks some tasks' results: computed for those, filed under ``content``."""

    path: str
    content: int


@dataclass
class Plan:
    seen: int = 0
    unchanged: int = 0
    failed_before: int = 0  # of the unchanged: files that failed before and are not tried again
    changed: list[str] = field(default_factory=list)  # new, changed or retried: read (and hashed) by the engine
    missing: dict[frozenset[str], list[Known]] = field(default_factory=dict)
    deleted: list[int] = field(default_factory=list)

    @property
    def to_read(self) -> int:
        return len(self.changed) + sum(len(v) for v in self.missing.values())


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """The sha256 of a file's bytes (the same digest the engine records); for imports, which
    check a file on this disk against a row computed elsewhere."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def normalise_roots(paths: Iterable[str | os.PathLike]) -> list[str]:
    return list(dict.fromkeys(os.path.abspath(os.fsdecode(p)) for p in paths))


def plan(
    conn: sqlite3.Connection,
    roots: Sequence[str],
    model_ids: dict[str, int],
    *,
    recursive: bool = True,
    retry_errors: bool = False,
) -> Plan:
    """Compare the files under ``roots`` (absolute) with the database; see the module docstring."""
    tasks = frozenset(model_ids)
    known = db.known_files(conn, roots, model_ids, recursive)
    result = Plan()
    seen: set[str] = set()
    for path in iter_image_paths(roots, recursive=recursive):
        if path in seen:
            continue
        seen.add(path)
        result.seen += 1
        row = known.get(path)
        try:
            st = os.stat(path)
        except OSError:
            result.changed.append(path)  # the engine turns it into an error record
            continue
        if row is None or row["size"] != st.st_size or row["mtime"] != st.st_mtime:
            result.changed.append(path)
        elif row["status"] == "error":
            if retry_errors:
                result.changed.append(path)
            else:
                result.unchanged += 1
                result.failed_before += 1
        elif missing := tasks - row["done"]:
            result.missing.setdefault(missing, []).append(Known(path, row["content"]))
        else:
            result.unchanged += 1
    result.deleted = [row["id"] for path, row in known.items() if path not in seen]
    return result
