"""The library database: one SQLite file (WAL), the single source of truth.

Files point at contents (one row per distinct sha256), and every result hangs off a content and
the model row that made it, so a renamed or copied file reuses results and a new model
invalidates only its own rows:

    files(path, size, mtime, content -> contents, status, error)
    contents(sha256, width, height)
    models(task, model_id, revision, generation)       task: tag | nsfw | embed
    tag_sets(content, model)  tags(content, model, tag, score)
    nsfw(content, model, label, score, unsafe, flagged, scores)
    embeddings(content, model, vector float16 blob)
    task_errors(content, model, error, failed_at)       a job that failed on this image

A content a job failed on has a ``task_errors`` row for that model instead of a result (its other
results are kept), so the next index run computes that task again (`taglens.library.scan` only
counts results as done); writing the result removes the row.

``files.path`` is the absolute path; a name whose bytes are not UTF-8 is stored escaped
(`to_db_path`, `from_db_path`): every function here takes and gives paths in their in-memory form.

``models.generation`` goes up (by trigger) whenever that model's embeddings change, so a vector
index built from generation g is stale exactly when the number moved.

The schema is a chain of numbered migrations, each run in one transaction on open; a database
from a newer taglens is refused. Rows come back as the TypedDicts next to the SQL.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from taglens.errors import LibraryError, LibraryVersionError
from taglens.models.vit_classifier import unsafe_score
from taglens.records import NsfwResult, TagScore

TASKS = ("tag", "nsfw", "embed")
RESULT_TABLES = {"tag": "tag_sets", "nsfw": "nsfw", "embed": "embeddings"}  # a result of the task is a row here
FILE_NAME = "library.db"


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    statements: tuple[str, ...]

    def apply(self, conn: sqlite3.Connection) -> None:
        for statement in self.statements:
            conn.execute(statement)


MIGRATIONS: list[Migration] = [
    Migration(1, "files, contents, models and results", (
        """CREATE TABLE models (
            id INTEGER PRIMARY KEY,
            task TEXT NOT NULL CHECK (task IN ('tag', 'nsfw', 'embed')),
            model_id TEXT NOT NULL,
            revision TEXT NOT NULL,
            dim INTEGER,
            generation INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            last_used_at REAL NOT NULL,
            UNIQUE (task, model_id, revision))""",
        # AUTOINCREMENT: a content id is never reused, so a vector index key always means one image
        """CREATE TABLE contents (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            sha256 TEXT NOT NULL UNIQUE,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL)""",
        """CREATE TABLE files (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            size INTEGER NOT NULL,
            mtime REAL NOT NULL,
            content INTEGER REFERENCES contents(id) ON DELETE SET NULL,
            status TEXT NOT NULL CHECK (status IN ('ok', 'error')),
            error TEXT,
            indexed_at REAL NOT NULL)""",
        "CREATE INDEX files_by_content ON files(content)",
        """CREATE TABLE tag_sets (
            content INTEGER NOT NULL REFERENCES contents(id) ON DELETE CASCADE,
            model INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
            PRIMARY KEY (content, model)) WITHOUT ROWID""",
        """CREATE TABLE tags (
            content INTEGER NOT NULL,
            model INTEGER NOT NULL,
            tag TEXT NOT NULL,
            score REAL NOT NULL,
            PRIMARY KEY (content, model, tag),
            FOREIGN KEY (content, model) REFERENCES tag_sets(content, model) ON DELETE CASCADE) WITHOUT ROWID""",
        "CREATE INDEX tags_by_tag ON tags(tag, model)",
        """CREATE TABLE nsfw (
            content INTEGER NOT NULL REFERENCES contents(id) ON DELETE CASCADE,
            model INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
            label TEXT NOT NULL,
            score REAL NOT NULL,
            unsafe REAL NOT NULL,
            flagged INTEGER NOT NULL,
            scores TEXT NOT NULL,
            PRIMARY KEY (content, model)) WITHOUT ROWID""",
        """CREATE TABLE embeddings (
            id INTEGER PRIMARY KEY,
            content INTEGER NOT NULL REFERENCES contents(id) ON DELETE CASCADE,
            model INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
            vector BLOB NOT NULL,
            UNIQUE (content, model))""",
        "CREATE INDEX embeddings_by_model ON embeddings(model, content)",
        """CREATE TRIGGER embeddings_insert AFTER INSERT ON embeddings BEGIN
            UPDATE models SET generation = generation + 1 WHERE id = NEW.model; END""",
        """CREATE TRIGGER embeddings_delete AFTER DELETE ON embeddings BEGIN
            UPDATE models SET generation = generation + 1 WHERE id = OLD.model; END""",
        """CREATE TRIGGER embeddings_update AFTER UPDATE ON embeddings BEGIN
            SELECT RAISE(ABORT, 'embeddings are never rewritten: delete and insert'); END""",
    )),
    Migration(2, "the job that failed on an image, per model", (
        """CREATE TABLE task_errors (
            content INTEGER NOT NULL REFERENCES contents(id) ON DELETE CASCADE,
            model INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
            error TEXT NOT NULL,
            failed_at REAL NOT NULL,
            PRIMARY KEY (content, model)) WITHOUT ROWID""",
    )),
]
VERSION = MIGRATIONS[-1].number


class ModelRow(TypedDict):
    id: int
    task: str
    model_id: str
    revision: str
    dim: int | None
    generation: int
    created_at: float
    last_used_at: float


class FileRow(TypedDict):
    id: int
    path: str
    size: int
    mtime: float
    content: int | None
    status: str
    error: str | None
    indexed_at: float


class ContentRow(TypedDict):
    id: int
    sha256: str
    width: int
    height: int


def connect(path: str | Path, *, migrations: Sequence[Migration] | None = None) -> sqlite3.Connection:
    """Open (creating if needed) the database at ``path``, migrated to the latest version."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.row_factory = _dict_row
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 30000")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
    if mode and next(iter(mode.values())) != "wal":
        raise LibraryError(f"{path}: SQLite could not switch to WAL mode (got {mode})")
    # WAL + NORMAL: a killed process loses nothing committed; only power loss may undo the last commits.
    conn.execute("PRAGMA synchronous = NORMAL")
    try:
        migrate(conn, MIGRATIONS if migrations is None else migrations)
    except BaseException:
        conn.close()
        raise
    return conn


def _dict_row(cursor: sqlite3.Cursor, row: tuple) -> dict[str, Any]:
    return {d[0]: v for d, v in zip(cursor.description, row)}


def schema_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()["user_version"]


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration]) -> None:
    """Bring the schema up to the last migration, each step in its own transaction; refuse a newer DB."""
    latest = migrations[-1].number if migrations else 0
    current = schema_version(conn)
    if current > latest:
        raise LibraryVersionError(
            f"the library database has schema version {current}, newer than this taglens knows ({latest}); "
            "upgrade taglens to open it"
        )
    for migration in migrations:
        if migration.number <= current:
            continue
        with transaction(conn):
            # re-read inside the write lock: another process may have migrated meanwhile
            if schema_version(conn) >= migration.number:
                continue
            migration.apply(conn)
            conn.execute(f"PRAGMA user_version = {int(migration.number)}")


class transaction:
    """``with transaction(conn):`` BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")


class read_snapshot:
    """``with read_snapshot(conn):`` one consistent read of the database (BEGIN ... COMMIT), so
    that e.g. a model's generation and its vectors agree while other processes write."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN")
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.execute("COMMIT")


# ---- models -------------------------------------------------------------------------------------


def model_row(conn: sqlite3.Connection, task: str, model_id: str, revision: str) -> ModelRow:
    """The row for this checkpoint and task, created on first use; marks it as the latest used."""
    now = time.time()
    conn.execute(
        "INSERT INTO models (task, model_id, revision, created_at, last_used_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (task, model_id, revision) DO UPDATE SET last_used_at = excluded.last_used_at",
        (task, model_id, revision, now, now),
    )
    return conn.execute(
        "SELECT * FROM models WHERE task = ? AND model_id = ? AND revision = ?", (task, model_id, revision)
    ).fetchone()


def model_by_id(conn: sqlite3.Connection, model: int) -> ModelRow | None:
    return conn.execute("SELECT * FROM models WHERE id = ?", (model,)).fetchone()


def current_model(conn: sqlite3.Connection, task: str) -> ModelRow | None:
    """The model last used for ``task`` (the one search uses for ``embed``)."""
    return conn.execute(
        "SELECT * FROM models WHERE task = ? ORDER BY last_used_at DESC, id DESC LIMIT 1", (task,)
    ).fetchone()


def models(conn: sqlite3.Connection) -> list[ModelRow]:
    return conn.execute("SELECT * FROM models ORDER BY task, last_used_at DESC").fetchall()


def delete_models(conn: sqlite3.Connection, ids: Iterable[int]) -> None:
    """Forget models (their results go with them, by cascade)."""
    conn.executemany("DELETE FROM models WHERE id = ?", [(m,) for m in ids])


# ---- files and contents -------------------------------------------------------------------------


def file_by_path(conn: sqlite3.Connection, path: str) -> FileRow | None:
    row = conn.execute("SELECT * FROM files WHERE path = ?", (to_db_path(path),)).fetchone()
    return None if row is None else _path_back(row)


def content_by_sha(conn: sqlite3.Connection, sha256: str) -> ContentRow | None:
    return conn.execute("SELECT * FROM contents WHERE sha256 = ?", (sha256,)).fetchone()


def content_id(conn: sqlite3.Connection, sha256: str, width: int, height: int) -> int:
    conn.execute("INSERT INTO contents (sha256, width, height) VALUES (?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
                 (sha256, width, height))
    return conn.execute("SELECT id FROM contents WHERE sha256 = ?", (sha256,)).fetchone()["id"]


def upsert_file(conn: sqlite3.Connection, path: str, size: int, mtime: float, content: int | None,
                status: str = "ok", error: str | None = None) -> None:
    conn.execute(
        "INSERT INTO files (path, size, mtime, content, status, error, indexed_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (path) DO UPDATE SET size = excluded.size, mtime = excluded.mtime, content = excluded.content, "
        "status = excluded.status, error = excluded.error, indexed_at = excluded.indexed_at",
        (to_db_path(path), size, mtime, content, status, error, time.time()),
    )


def known_files(conn: sqlite3.Connection, roots: Sequence[str], model_ids: dict[str, int],
                recursive: bool) -> dict[str, dict[str, Any]]:
    """Recorded files under the roots (absolute paths), each with ``done``: the tasks (of
    ``model_ids``) its content has results for."""
    checks = ", ".join(
        f"EXISTS (SELECT 1 FROM {RESULT_TABLES[task]} r WHERE r.content = f.content AND r.model = {int(model)}) "
        f"AS has_{task}" for task, model in model_ids.items()
    ) or "0 AS nothing"
    known: dict[str, dict[str, Any]] = {}
    for root in roots:
        sep = "/" if "/" in root or os.sep == "/" else "\\"
        prefix = root.rstrip(sep) + sep
        rows = conn.execute(
            f"SELECT f.id, f.path, f.size, f.mtime, f.status, f.content, {checks} FROM files f "
            "WHERE f.path = ? OR (f.path >= ? AND f.path < ?)",
            (to_db_path(root), to_db_path(prefix), to_db_path(prefix) + "\U0010ffff"),
        )
        for row in rows:
            row["path"] = from_db_path(row["path"])
            if not recursive and row["path"] != root and sep in row["path"][len(prefix):]:
                continue  # below the top level: not this run's business
            row["done"] = frozenset(task for task in model_ids if row.get(f"has_{task}"))
            known[row["path"]] = row
    return known


def done_tasks(conn: sqlite3.Connection, content: int, model_ids: dict[str, int]) -> frozenset[str]:
    """The tasks of ``model_ids`` that ``content`` has a result for."""
    return frozenset(
        task for task, model in model_ids.items()
        if conn.execute(f"SELECT 1 FROM {RESULT_TABLES[task]} WHERE content = ? AND model = ?",
                        (content, model)).fetchone()
    )


def files_listing(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """(path, content) of every indexed file, in path order."""
    rows = conn.execute("SELECT path, content FROM files WHERE status = 'ok' AND content IS NOT NULL "
                        "ORDER BY path").fetchall()
    return _paths_back(rows)


def all_files(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """(id, path, size, mtime) of every recorded file, indexed or failed."""
    return _paths_back(conn.execute("SELECT id, path, size, mtime FROM files").fetchall())


def files_of_content(conn: sqlite3.Connection, content: int) -> list[dict[str, Any]]:
    """(path, size, mtime) of the indexed files holding ``content``, in path order."""
    return _paths_back(conn.execute("SELECT path, size, mtime FROM files WHERE content = ? AND status = 'ok' "
                                    "ORDER BY path", (content,)).fetchall())


def content_by_id(conn: sqlite3.Connection, content: int) -> ContentRow | None:
    return conn.execute("SELECT * FROM contents WHERE id = ?", (content,)).fetchone()


def delete_files(conn: sqlite3.Connection, ids: Iterable[int]) -> int:
    return conn.executemany("DELETE FROM files WHERE id = ?", ((i,) for i in ids)).rowcount


def delete_orphan_contents(conn: sqlite3.Connection) -> int:
    """Contents no file points at any more (their results go with them, by cascade)."""
    return conn.execute(
        "DELETE FROM contents WHERE NOT EXISTS (SELECT 1 FROM files WHERE files.content = contents.id)"
    ).rowcount


def write_task_error(conn: sqlite3.Connection, task: str, content: int, model: int, error: str) -> None:
    """Remember that ``model``'s job failed on ``content`` (and why), unless a result from that
    model is already there (e.g. an imported row failed where an index run had succeeded)."""
    conn.execute(
        "INSERT INTO task_errors (content, model, error, failed_at) SELECT ?, ?, ?, ? "
        f"WHERE NOT EXISTS (SELECT 1 FROM {RESULT_TABLES[task]} WHERE content = ? AND model = ?) "
        "ON CONFLICT (content, model) DO UPDATE SET error = excluded.error, failed_at = excluded.failed_at",
        (content, model, error, time.time(), content, model))


def clear_task_error(conn: sqlite3.Connection, content: int, model: int) -> None:
    conn.execute("DELETE FROM task_errors WHERE content = ? AND model = ?", (content, model))


def write_tags(conn: sqlite3.Connection, content: int, model: int, tags: Sequence[TagScore]) -> None:
    if conn.execute("INSERT INTO tag_sets (content, model) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    (content, model)).rowcount == 0:
        return
    conn.executemany("INSERT INTO tags (content, model, tag, score) VALUES (?, ?, ?, ?)",
                     [(content, model, t.tag, float(t.score)) for t in tags])


def write_nsfw(conn: sqlite3.Connection, content: int, model: int, result: NsfwResult) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO nsfw (content, model, label, score, unsafe, flagged, scores) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (content, model, result.label, float(result.score), unsafe_score(result), int(result.flagged),
         json.dumps({k: float(v) for k, v in result.scores.items()})),
    )


def write_embedding(conn: sqlite3.Connection, content: int, model: int, vector: np.ndarray) -> None:
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    conn.execute("UPDATE models SET dim = ? WHERE id = ? AND dim IS NULL", (vector.shape[0], model))
    conn.execute(
        "INSERT INTO embeddings (content, model, vector) VALUES (?, ?, ?) ON CONFLICT (content, model) DO NOTHING",
        (content, model, vector.astype("<f2").tobytes()),
    )


def decode_vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f2").astype(np.float32)


def embeddings_for(conn: sqlite3.Connection, model: int, dim: int, batch: int = 10_000
                   ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(content ids int64, float16 vectors (n, dim)) in batches, in content order."""
    cursor = conn.execute("SELECT content, vector FROM embeddings WHERE model = ? ORDER BY content", (model,))
    while rows := cursor.fetchmany(batch):
        keys = np.fromiter((r["content"] for r in rows), dtype=np.int64, count=len(rows))
        vectors = np.frombuffer(b"".join(r["vector"] for r in rows), dtype="<f2").reshape(len(rows), dim)
        yield keys, vectors


def embedding_keys(conn: sqlite3.Connection, model: int) -> np.ndarray:
    rows = conn.execute("SELECT content FROM embeddings WHERE model = ? ORDER BY content", (model,)).fetchall()
    return np.fromiter((r["content"] for r in rows), dtype=np.int64, count=len(rows))


def embedding_of(conn: sqlite3.Connection, content: int, model: int) -> np.ndarray | None:
    row = conn.execute("SELECT vector FROM embeddings WHERE content = ? AND model = ?", (content, model)).fetchone()
    return None if row is None else decode_vector(row["vector"])


def embedding_count(conn: sqlite3.Connection, model: int) -> int:
    return conn.execute("SELECT count(*) AS n FROM embeddings WHERE model = ?", (model,)).fetchone()["n"]


def generation(conn: sqlite3.Connection, model: int) -> int:
    row = conn.execute("SELECT generation FROM models WHERE id = ?", (model,)).fetchone()
    return -1 if row is None else row["generation"]


# ---- what search shows --------------------------------------------------------------------------


def describe_contents(conn: sqlite3.Connection, contents: Sequence[int], tag_model: int | None,
                      nsfw_model: int | None) -> dict[int, dict[str, Any]]:
    """For each content: its file paths (sorted), tags (highest first) and NSFW result."""
    out: dict[int, dict[str, Any]] = {c: {"paths": [], "tags": None, "nsfw": None} for c in contents}
    for chunk in _chunks(list(contents), 500):
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(f"SELECT content, path FROM files WHERE status = 'ok' AND content IN ({marks}) "
                                "ORDER BY path", chunk):
            out[row["content"]]["paths"].append(from_db_path(row["path"]))
        if tag_model is not None:
            for row in conn.execute(f"SELECT content FROM tag_sets WHERE model = ? AND content IN ({marks})",
                                    [tag_model, *chunk]):
                out[row["content"]]["tags"] = []
            for row in conn.execute(f"SELECT content, tag, score FROM tags WHERE model = ? AND content IN ({marks}) "
                                    "ORDER BY content, score DESC, tag", [tag_model, *chunk]):
                out[row["content"]]["tags"].append(TagScore(row["tag"], row["score"]))
        if nsfw_model is not None:
            for row in conn.execute(f"SELECT * FROM nsfw WHERE model = ? AND content IN ({marks})",
                                    [nsfw_model, *chunk]):
                out[row["content"]]["nsfw"] = NsfwResult(row["label"], row["score"], json.loads(row["scores"]),
                                                         bool(row["flagged"]))
    return out


def has_tag(conn: sqlite3.Connection, model: int, tag: str) -> bool:
    """Whether any image carries ``tag`` from ``model`` (one index lookup)."""
    row = conn.execute("SELECT 1 FROM tags WHERE tag = ? AND model = ? LIMIT 1", (tag, model)).fetchone()
    return row is not None


def filtered_contents(conn: sqlite3.Connection, *, tags: Sequence[str] = (), no_tags: Sequence[str] = (),
                      tag_model: int | None = None, max_nsfw: float | None = None,
                      nsfw_model: int | None = None) -> np.ndarray:
    """Content ids (sorted int64) of indexed files that pass the tag and NSFW filters."""
    where, params = ["EXISTS (SELECT 1 FROM files f WHERE f.content = c.id AND f.status = 'ok')"], []
    for tag in tags:
        where.append("EXISTS (SELECT 1 FROM tags t WHERE t.content = c.id AND t.model = ? AND t.tag = ?)")
        params += [tag_model, tag]
    for tag in no_tags:
        where.append("NOT EXISTS (SELECT 1 FROM tags t WHERE t.content = c.id AND t.model = ? AND t.tag = ?)")
        params += [tag_model, tag]
    if max_nsfw is not None:
        where.append("EXISTS (SELECT 1 FROM nsfw n WHERE n.content = c.id AND n.model = ? AND n.unsafe <= ?)")
        params += [nsfw_model, max_nsfw]
    rows = conn.execute(f"SELECT c.id FROM contents c WHERE {' AND '.join(where)} ORDER BY c.id", params).fetchall()
    return np.fromiter((r["id"] for r in rows), dtype=np.int64, count=len(rows))


# ---- upkeep -------------------------------------------------------------------------------------


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Files (all, indexed, failed), distinct images, and the files recorded under a URI-like path."""
    one = lambda sql: conn.execute(sql).fetchone()["n"]  # noqa: E731
    return {"files": one("SELECT count(*) AS n FROM files"),
            "indexed": one("SELECT count(*) AS n FROM files WHERE status = 'ok'"),
            "errors": one("SELECT count(*) AS n FROM files WHERE status = 'error'"),
            "images": one("SELECT count(*) AS n FROM contents")}


def uri_like_paths(conn: sqlite3.Connection) -> list[str]:
    """Recorded paths containing ``://`` (the caller decides which are URIs)."""
    return [from_db_path(r["path"]) for r in conn.execute("SELECT path FROM files WHERE path LIKE '%://%'")]


def model_counts(conn: sqlite3.Connection, model: ModelRow) -> dict[str, int]:
    """How many results ``model`` has stored, and on how many images its job failed."""
    one = lambda sql: conn.execute(sql, (model["id"],)).fetchone()["n"]  # noqa: E731
    return {"results": one(f"SELECT count(*) AS n FROM {RESULT_TABLES[model['task']]} WHERE model = ?"),
            "failed": one("SELECT count(*) AS n FROM task_errors WHERE model = ?")}


def integrity_problems(conn: sqlite3.Connection) -> list[str]:
    """SQLite's integrity and foreign key checks, and indexed files that point at no content."""
    problems = []
    integrity = [next(iter(r.values())) for r in conn.execute("PRAGMA integrity_check")]
    if integrity != ["ok"]:
        problems += [f"integrity_check: {line}" for line in integrity]
    problems += [f"foreign key: {row}" for row in conn.execute("PRAGMA foreign_key_check")]
    dangling = conn.execute("SELECT count(*) AS n FROM files WHERE status = 'ok' AND content IS NULL").fetchone()["n"]
    if dangling:
        problems.append(f"{dangling} indexed files point at no image content")
    return problems


# ---- paths --------------------------------------------------------------------------------------


PATH_ESCAPE = "\ufffe"  # a Unicode noncharacter: starts each escape in a stored path
_UNDECODABLE = re.compile("[\udc80-\udcff\ufffe]")
_ESCAPED = re.compile("\ufffe([0-9a-f]{2}|\ufffe)")


def to_db_path(path: str) -> str:
    """A path as stored. In memory a path is a str as ``os.fsdecode`` gives it: a byte of a name
    that is not UTF-8 (``b"bad\\xff.jpg"``, legal on Linux) is a lone surrogate (``"bad\\udcff.jpg"``),
    which SQLite cannot hold. Stored, each such byte is ``U+FFFE`` and two hex digits, and a
    ``U+FFFE`` of the name itself is doubled; every other path is stored as it is. The form keeps
    a folder's stored path a prefix of its files' (what `known_files` relies on) and round-trips
    exactly (`from_db_path`)."""
    if not _UNDECODABLE.search(path):
        return path
    return _UNDECODABLE.sub(lambda m: PATH_ESCAPE * 2 if m[0] == PATH_ESCAPE else f"{PATH_ESCAPE}{ord(m[0]) - 0xdc00:02x}",
                            path)


def from_db_path(stored: str) -> str:
    """The in-memory path (``os.fsdecode`` form) of a stored one; see `to_db_path`."""
    if PATH_ESCAPE not in stored:
        return stored
    return _ESCAPED.sub(lambda m: PATH_ESCAPE if m[1] == PATH_ESCAPE else chr(0xdc00 + int(m[1], 16)), stored)


def _path_back(row: dict[str, Any]) -> dict[str, Any]:
    row["path"] = from_db_path(row["path"])
    return row


def _paths_back(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [_path_back(r) for r in rows]


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
