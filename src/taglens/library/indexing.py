"""The index pass: one walk, each new or changed file read and hashed once, records stored as they stream.

    walk + stat (scan.plan)  -> unchanged: nothing read
                             -> changed/new: the engine reads and hashes each once (decode threads);
                                bytes the library holds already are filed without decoding
                                (``skip``), copies met in this run are attached to the content
                                their first copy gets, as soon as it is stored
                             -> unchanged but lacking a task's result: computed for that task only
    -> deleted paths removed, orphan contents dropped, the vector index refreshed

Results are committed every ``batch_size`` records, so a killed run loses at most one batch.
A changed file whose bytes the library holds with only some tasks' results (a renamed file
and a new model at once) goes through every model; results already stored are kept as they are.
"""

from __future__ import annotations

import functools

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from taglens.engine import EngineOptions, run
from taglens.errors import LibraryError
from taglens.library import db, scan
from taglens.library.models import ModelSource, load_models
from taglens.library.reports import IndexReport
from taglens.records import Record

if TYPE_CHECKING:
    from taglens.library import Library

RecordHook = Callable[[Record], None]


def index(
    lib: Library,
    paths: Iterable[str | os.PathLike],
    models: Sequence[ModelSource] | None = None,
    *,
    recursive: bool = True,
    options: EngineOptions | None = None,
    retry_errors: bool = False,
    on_record: RecordHook | None = None,
    on_total: Callable[[int], None] | None = None,
) -> IndexReport:
    """`taglens.library.Library.index`: see the module docstring."""
    started = time.perf_counter()
    options = options or EngineOptions()
    sources = {m.task: m for m in (load_models() if models is None else models)}
    unknown = set(sources) - set(db.TASKS)
    if unknown:
        raise LibraryError(f"unknown task(s) {', '.join(sorted(unknown))}; tasks are {', '.join(db.TASKS)}")
    roots = scan.normalise_roots(paths)
    for root in roots:  # a missing root (an unmounted drive) must not read as "every file deleted"
        if not os.path.exists(root):
            raise LibraryError(f"{root}: no such file or folder")
    with db.transaction(lib.conn):
        model_ids = {task: db.model_row(lib.conn, task, *source.identity())["id"]
                     for task, source in sources.items()}
    plan = scan.plan(lib.conn, roots, model_ids, recursive=recursive, retry_errors=retry_errors)
    report = IndexReport(seen=plan.seen, unchanged=plan.unchanged, failed_before=plan.failed_before)
    if on_total is not None:
        on_total(plan.to_read)

    def jobs_for(tasks: Iterable[str]) -> list:
        chosen = [task for task in db.TASKS if task in tasks]
        report.loaded += [task for task in chosen if task not in report.loaded]
        return [sources[task].job() for task in chosen]

    if plan.changed:  # the models load only if a changed file holds bytes the library lacks
        _Pass(lib, model_ids, options, report, on_record).run(plan.changed, functools.cache(lambda: jobs_for(model_ids)))
    for tasks, group in sorted(plan.missing.items(), key=lambda kv: sorted(kv[0])):
        _compute_missing(lib, group, jobs_for(tasks), {t: model_ids[t] for t in tasks}, options, report, on_record)
    with db.transaction(lib.conn):
        report.deleted = db.delete_files(lib.conn, plan.deleted)
        db.delete_orphan_contents(lib.conn)
    if "embed" in model_ids:
        lib.refresh_vectors(model_ids["embed"])
    report.seconds = time.perf_counter() - started
    return report


def undecoded(record: Record) -> bool:
    """Whether the engine filed this record without decoding it (``skip``): file facts only."""
    return record.error is None and record.width is None and record.sha256 is not None


class _Pass:
    """The changed files through the engine once, with every task: what the decode threads ask
    (`skip`) and what the writer files, in input order."""

    def __init__(self, lib: Library, model_ids: dict[str, int], options: EngineOptions, report: IndexReport,
                 on_record: RecordHook | None):
        self.lib, self.model_ids, self.options, self.report, self.on_record = lib, model_ids, options, report, on_record
        self.tasks = frozenset(model_ids)
        self.lock = threading.Lock()
        self.claimed: set[str] = set()  # new bytes of this run: the first file holding them is computed
        self.waiting: dict[str, list[Record]] = {}  # copies whose first file is not stored yet
        self.failed: dict[str, str] = {}  # bytes of this run that could not be decoded: their reason
        self.reader = db.connect(lib.folder / db.FILE_NAME)  # the decode threads' own (read) connection

    def skip(self, sha256: str) -> bool:
        """Asked in the decode threads once a file is hashed: True when its bytes need no model
        (the library holds every task's result for them, or another file of this run has them)."""
        with self.lock:
            if sha256 in self.claimed:
                return True
            content = db.content_by_sha(self.reader, sha256)
            if content is not None and db.done_tasks(self.reader, content["id"], self.model_ids) >= self.tasks:
                return True
            self.claimed.add(sha256)
            return False

    def run(self, paths: list[str], jobs: Callable[[], list]) -> None:
        """``jobs`` makes the jobs (loading the models) the first time a file needs them."""
        pending: list[Record] = []

        def commit() -> None:
            with db.transaction(self.lib.conn):
                for record in pending:
                    self.file(record)
            pending.clear()

        try:
            for record in run(paths, jobs, self.options, skip=self.skip):
                self.report.hashed += record.sha256 is not None
                if not undecoded(record):
                    self.report.count(record)
                if self.on_record is not None:
                    self.on_record(record)
                pending.append(record)
                if len(pending) >= self.options.batch_size:
                    commit()
            commit()
        finally:
            self.reader.close()
        late = [r.path for copies in self.waiting.values() for r in copies]
        if late:  # the file first holding their bytes vanished unstored: compute the copies themselves
            self.waiting.clear()
            _compute_missing(self.lib, [], jobs(), self.model_ids, self.options, self.report, self.on_record,
                             paths=late)

    def file(self, record: Record) -> None:
        """Store one record (in the writer's transaction), then the copies that waited for it."""
        conn = self.lib.conn
        if undecoded(record):
            content = db.content_by_sha(conn, record.sha256)
            if content is not None:
                db.upsert_file(conn, record.path, record.size, record.mtime, content["id"])
                self.report.reused += 1
            elif record.sha256 in self.failed:
                failed = record.with_fields(error=self.failed[record.sha256])
                store(conn, failed, self.model_ids)
                self.report.count(failed)
                if self.on_record is not None:
                    self.on_record(failed)
            else:
                self.waiting.setdefault(record.sha256, []).append(record)
            return
        store(conn, record, self.model_ids)
        if record.sha256 is None:
            return
        if record.error is not None and not record.task_errors:
            self.failed[record.sha256] = record.error
        for copy in self.waiting.pop(record.sha256, []):
            self.file(copy)


def _compute_missing(lib: Library, group: list[scan.Known], jobs: list, model_ids: dict[str, int],
                     options: EngineOptions, report: IndexReport, on_record: RecordHook | None, *,
                     paths: list[str] | None = None) -> None:
    """Unchanged files (``group``, content known: not hashed) through the given jobs only; or
    ``paths`` (hashed) through them."""
    if paths is None:
        paths, contents = [k.path for k in group], [k.content for k in group]
        options = replace(options, hash_files=False)
    else:
        contents = [None] * len(paths)
    pending: list[tuple[Record, int | None]] = []

    def commit() -> None:
        with db.transaction(lib.conn):
            for record, content in pending:
                store(lib.conn, record, model_ids, content=content)
        pending.clear()

    for record, content in zip(run(paths, jobs, options), contents):
        report.count(record)
        if on_record is not None:
            on_record(record)
        pending.append((record, content))
        if len(pending) >= options.batch_size:
            commit()
    commit()


def store(conn: sqlite3.Connection, record: Record, model_ids: dict[str, int], *, path: str | None = None, size: int | None = None,
          mtime: float | None = None, content: int | None = None, every_task: bool = True) -> None:
    """Write one record's results and point its file at its content (by sha256, or ``content``
    when the file is known unchanged). ``path``/``size``/``mtime`` replace the record's (import);
    ``every_task=False`` skips a task whose field is empty.

    A task whose job failed on the image gets a ``task_errors`` row instead of a result, and
    the image's other results are kept: the next index run computes only that task again.
    Only an image that could not be read or decoded is filed as a failed file."""
    path = record.path if path is None else path
    size = record.size if size is None else size
    mtime = record.mtime if mtime is None else mtime
    if size is None or mtime is None:
        return  # vanished before it could be read: nothing to remember
    if (record.error is not None and not record.task_errors) or (record.sha256 is None and content is None):
        db.upsert_file(conn, path, size, mtime, None, "error", record.error or "no content hash")
        return
    if content is None:
        content = db.content_id(conn, record.sha256, record.width or 0, record.height or 0)
    for task, model in model_ids.items():
        if task == "tag" and record.tags is not None:
            db.write_tags(conn, content, model, record.tags)
        elif task == "nsfw" and record.nsfw is not None:
            db.write_nsfw(conn, content, model, record.nsfw)
        elif task == "embed" and record.embedding is not None:
            db.write_embedding(conn, content, model, record.embedding)
        elif task in record.task_errors:
            db.write_task_error(conn, task, content, model, record.task_errors[task])
            continue
        elif every_task:
            raise LibraryError(f"the {task} job did not fill its field for {record.path}")
        else:
            continue
        db.clear_task_error(conn, content, model)
    db.upsert_file(conn, path, size, mtime, content)
