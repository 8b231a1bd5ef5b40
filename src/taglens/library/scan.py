"""Change detection: what an index run must compute, reuse, update or remove, decided cheaply.

For each image under the roots (`taglens.io.inputs.iter_image_paths`):

- same size and mtime as recorded: **unchanged**, neither read nor hashed; computed again only for
  the tasks whose current model has no result for its content yet (a new model re-embeds only);
- otherwise the file is **hashed**: a sha256 the library already holds (a rename, a move, a copy,
  or a touch) is attached to the existing content with no model run; an unknown one is **new**;
- a recorded path under the roots that the walk no longer yields is **deleted**.

Nothing here decodes an image or loads a model.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from taglens.io.inputs import iter_image_paths
from taglens.library import db

_TABLES = db.RESULT_TABLES


@dataclass(frozen=True)
class Attach:
    """A file whose bytes the library already knows: point it at that content."""

    path: str
    size: int
    mtime: float
    content: int


@dataclass(frozen=True)
class Copy:
    """A new file with the same bytes as another new file of this run: attached after that one is computed."""

    path: str
    size: int
    mtime: float
    sha256: str


@dataclass
class Plan:
    seen: int = 0
    unchanged: int = 0
    failed_before: int = 0  # of the unchanged: files that failed before and are not tried again
    hashed: int = 0
    attach: list[Attach] = field(default_factory=list)
    compute: dict[frozenset[str], list[str]] = field(default_factory=dict)
    deleted: list[int] = field(default_factory=list)
    copies: list[Copy] = field(default_factory=list)

    def add_compute(self, tasks: frozenset[str], path: str) -> None:
        self.compute.setdefault(tasks, []).append(path)

    @property
    def to_compute(self) -> int:
        return sum(len(v) for v in self.compute.values())


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """The sha256 of a file's bytes (the same digest the engine records)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def normalise_roots(paths: Iterable[str | os.PathLike]) -> list[str]:
    return list(dict.fromkeys(os.path.abspath(os.fspath(p)) for p in paths))


def plan(
    conn: sqlite3.Connection,
    roots: Sequence[str],
    model_ids: dict[str, int],
    *,
    recursive: bool = True,
    retry_errors: bool = False,
    workers: int = 4,
) -> Plan:
    """Compare the files under ``roots`` (absolute) with the database; see the module docstring."""
    tasks = frozenset(model_ids)
    known = _known_files(conn, roots, model_ids, recursive)
    result = Plan()
    to_hash: list[tuple[str, os.stat_result]] = []
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
            result.add_compute(tasks, path)  # the engine turns it into an error record
            continue
        if row is not None and row["size"] == st.st_size and row["mtime"] == st.st_mtime:
            if row["status"] == "error":
                if retry_errors:
                    result.add_compute(tasks, path)
                else:
                    result.unchanged += 1
                    result.failed_before += 1
                continue
            missing = tasks - row["done"]
            if missing:
                result.add_compute(missing, path)
            else:
                result.unchanged += 1
            continue
        to_hash.append((path, st))

    def hash_one(item: tuple[str, os.stat_result]) -> tuple[str, os.stat_result, str | None]:
        path, st = item
        try:
            return path, st, file_sha256(path)
        except OSError:
            return path, st, None

    new: set[str] = set()
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="taglens-hash") as pool:
        for path, st, sha in pool.map(hash_one, to_hash):
            result.hashed += 1
            content = db.content_by_sha(conn, sha) if sha else None
            if content is None:
                if sha in new:
                    result.copies.append(Copy(path, st.st_size, st.st_mtime, sha))
                else:
                    new.add(sha)
                    result.add_compute(tasks, path)
                continue
            result.attach.append(Attach(path, st.st_size, st.st_mtime, content["id"]))
            missing = tasks - _done_for_content(conn, content["id"], model_ids)
            if missing:
                result.add_compute(missing, path)
    result.deleted = [row["id"] for path, row in known.items() if path not in seen]
    return result


def _known_files(conn: sqlite3.Connection, roots: Sequence[str], model_ids: dict[str, int],
                 recursive: bool) -> dict[str, dict]:
    """Recorded files under the roots, each with ``done``: the tasks its content has results for."""
    checks = ", ".join(
        f"EXISTS (SELECT 1 FROM {_TABLES[task]} r WHERE r.content = f.content AND r.model = {int(model)}) AS has_{task}"
        for task, model in model_ids.items()
    ) or "0 AS nothing"
    known: dict[str, dict] = {}
    for root in roots:
        sep = "/" if "/" in root or os.sep == "/" else "\\"
        prefix = root.rstrip(sep) + sep
        rows = conn.execute(
            f"SELECT f.id, f.path, f.size, f.mtime, f.status, f.content, {checks} FROM files f "
            "WHERE f.path = ? OR (f.path >= ? AND f.path < ?)",
            (root, prefix, prefix + "\U0010ffff"),
        )
        for row in rows:
            if not recursive and row["path"] != root and sep in row["path"][len(prefix):]:
                continue  # below the top level: not this run's business
            row["done"] = frozenset(task for task in model_ids if row.get(f"has_{task}"))
            known[row["path"]] = row
    return known


def _done_for_content(conn: sqlite3.Connection, content: int, model_ids: dict[str, int]) -> frozenset[str]:
    return frozenset(
        task for task, model in model_ids.items()
        if conn.execute(f"SELECT 1 FROM {_TABLES[task]} WHERE content = ? AND model = ?", (content, model)).fetchone()
    )
