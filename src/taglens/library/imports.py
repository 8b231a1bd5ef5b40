"""Results computed elsewhere, brought into the library: the Parquet files of ``taglens analyze``,
``taglens embed`` (or the Ray job), which all write one schema: `taglens.io.arrow`.

The file's schema metadata names the checkpoint of each job (``taglens.<job>.model_id`` and
``.revision``, the job names being ``tag``, ``nsfw``, ``embed`` or ``classify+embed``; files
from an older ``taglens embed`` say ``taglens.model_id`` and are read as the embed job's), so
every imported result is filed under the model that made it, exactly as ``taglens index`` files
its own. What happens to each row (`Library.import_records` applies it):

- **an error row** (no result at all): skipped (counted); ``taglens index`` tries that file itself
  later;
- **a row one job failed on** (``<task>_error`` set): its other results are stored, and the failed
  task is remembered as failed so the next ``taglens index`` computes it;
- **a local file that exists**: stored as if indexed here: its path, size and mtime as on this
  disk, its content by sha256. When the size or mtime differ from the row's, the file is hashed,
  and a sha256 other than the row's means the results are for other bytes: skipped as
  ``changed``;
- **a URI** (``s3://bucket/a.jpg``, ``gs://``, ``https://``...): stored under that URI with the
  row's size, mtime and sha256, so search finds it. ``taglens index`` never walks URIs, and
  ``library prune`` / ``verify`` do not look for them on disk;
- **a local path that is not on this machine**: skipped (counted as ``absent``): results for a
  file that cannot be opened here would be removed by the next ``library prune`` anyway.

Only tags, NSFW results and embeddings are kept (the library has no place for zero-shot labels).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from taglens.counts import counted
from taglens.errors import LibraryError
from taglens.io.locations import is_uri
from taglens.library import db
from taglens.records import Record, error_field

if TYPE_CHECKING:
    from taglens.library import Library

BATCH_ROWS = 4096
# job name in the metadata -> library task; "classify+embed" carries the embeddings too
_TASK_OF_JOB = {"tag": "tag", "nsfw": "nsfw", "embed": "embed", "classify+embed": "embed"}
_FIELD_OF_TASK = {"tag": "tags", "nsfw": "nsfw", "embed": "embedding"}


@dataclass
class ImportReport:
    """What an import did, row by row (see the module docstring for each outcome)."""

    files: int = 0
    rows: int = 0
    stored: int = 0
    remote: int = 0
    errors: int = 0
    absent: int = 0
    changed: int = 0
    models: dict[str, tuple[str, str]] = field(default_factory=dict)
    seconds: float = 0.0

    def line(self) -> str:
        return (f"{counted(self.rows, 'row')} from {counted(self.files, 'file')}: {self.stored} stored "
                f"({counted(self.remote, 'URI')}), {counted(self.errors, 'error')} skipped, "
                f"{self.absent} absent here, {self.changed} changed since analyzed ({self.seconds:.1f} s)")


@dataclass(frozen=True)
class ParquetSource:
    """One Parquet file of records: the models its metadata names (task -> (model_id, revision))."""

    path: Path
    models: dict[str, tuple[str, str]]

    def batches(self, rows: int = BATCH_ROWS) -> Iterator[list[Record]]:
        """The records, ``rows`` at a time (a million-row file is never held whole)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from taglens.io.arrow import records_from_table

        names = self._names()
        columns = ["path", "error", *(c for c in ("sha256", "size", "mtime", "width", "height") if c in names),
                   *(_FIELD_OF_TASK[t] for t in self.models),
                   *(c for t in self.models if (c := error_field(t)) in names)]
        parquet = pq.ParquetFile(self.path)
        for batch in parquet.iter_batches(batch_size=rows, columns=columns):
            yield list(records_from_table(pa.Table.from_batches([batch])))

    def _names(self) -> list[str]:
        import pyarrow.parquet as pq

        return pq.read_schema(self.path).names


def open_parquet(path: str | os.PathLike) -> ParquetSource:
    """Read a records file's schema and metadata; `LibraryError` when it is not one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise LibraryError(f"{path}: not a readable Parquet file ({exc})") from None
    if "path" not in schema.names or "error" not in schema.names:
        what = "text embeddings" if "text" in schema.names else "no 'path' and 'error' columns"
        raise LibraryError(f"{path}: not image records from `taglens analyze` or `taglens embed` ({what})")
    meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    models: dict[str, tuple[str, str]] = {}
    if "taglens.model_id" in meta and "embedding" in schema.names:  # written by an older taglens embed
        meta.setdefault("taglens.embed.model_id", meta["taglens.model_id"])
        meta.setdefault("taglens.embed.revision", meta.get("taglens.revision", ""))
    for job, task in _TASK_OF_JOB.items():
        model_id, revision = meta.get(f"taglens.{job}.model_id"), meta.get(f"taglens.{job}.revision")
        if model_id and revision and _FIELD_OF_TASK[task] in schema.names:
            models[task] = (model_id, revision)
    for task, column in _FIELD_OF_TASK.items():
        if column in schema.names and task not in models:
            raise LibraryError(f"{path}: has a '{column}' column but its metadata names no model for it "
                               f"(taglens.<job>.model_id / .revision), so its results cannot be filed")
    if not models:
        raise LibraryError(f"{path}: holds no tags, NSFW results or embeddings to import")
    return ParquetSource(path, models)


def place(record: Record, report: ImportReport) -> tuple[Record, str, int, float] | None:
    """Where one imported record goes: (record, path, size, mtime), or None when it is skipped
    (counted in ``report``); see the module docstring."""
    from taglens.library.scan import file_sha256

    if record.error is not None:
        report.errors += 1
        return None
    if is_uri(record.path):
        if record.sha256 is None:  # nothing to tell its bytes by
            report.errors += 1
            return None
        report.remote += 1
        return record, record.path, record.size or 0, record.mtime or 0.0
    path = os.path.abspath(record.path)
    try:
        st = os.stat(path)
        if record.sha256 is None or (st.st_size, st.st_mtime) != (record.size, record.mtime):
            sha = file_sha256(path)
            if record.sha256 is not None and sha != record.sha256:
                report.changed += 1
                return None
            record = record.with_fields(sha256=sha)
    except OSError:
        report.absent += 1
        return None
    return record, path, st.st_size, st.st_mtime


def import_parquet(lib: Library, files: Iterable[str | os.PathLike], *, batch_rows: int = BATCH_ROWS) -> ImportReport:
    """`taglens.library.Library.import_parquet`: every file is checked before anything is written."""
    started = time.perf_counter()
    sources = [open_parquet(f) for f in files]
    report = ImportReport(files=len(sources))
    for source in sources:
        import_records(lib, (r for batch in source.batches(batch_rows) for r in batch), source.models, report=report)
    report.seconds = time.perf_counter() - started
    return report


def import_records(lib: Library, records: Iterable[Record], models: dict[str, tuple[str, str]], *,
                   report: ImportReport | None = None, batch_size: int = 1000) -> ImportReport:
    """`taglens.library.Library.import_records`: each record `place`d, committed every ``batch_size``."""
    from taglens.library.indexing import store

    started = time.perf_counter()
    report = report if report is not None else ImportReport()
    unknown = set(models) - set(db.TASKS)
    if unknown:
        raise LibraryError(f"unknown task(s) {', '.join(sorted(unknown))}; tasks are {', '.join(db.TASKS)}")
    with db.transaction(lib.conn):
        model_ids = {task: db.model_row(lib.conn, task, *models[task])["id"] for task in db.TASKS if task in models}
    report.models.update(models)
    pending: list[tuple[Record, str, int, float]] = []

    def commit() -> None:
        with db.transaction(lib.conn):
            for record, path, size, mtime in pending:
                store(lib.conn, record, model_ids, path=path, size=size, mtime=mtime, every_task=False)
        report.stored += len(pending)
        pending.clear()

    for record in records:
        report.rows += 1
        placed = place(record, report)
        if placed is not None:
            pending.append(placed)
        if len(pending) >= batch_size:
            commit()
    commit()
    with db.transaction(lib.conn):
        db.delete_orphan_contents(lib.conn)  # paths that now point at other bytes
    if "embed" in model_ids:
        lib.refresh_vectors(model_ids["embed"])
    report.seconds += time.perf_counter() - started
    return report
