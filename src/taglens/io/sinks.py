"""Where records go: JSON lines or CSV, to stdout or to a file that appears only when complete;
records also as Parquet (`ParquetSink`), embeddings as a ``.npy`` matrix with its paths (`NpySink`).

A file output is written to a temporary name beside the target and renamed at the end, so a
killed run never leaves a half-written file under the real name; a run stopped on purpose
(Ctrl-C: `StopRun` inside `committing`) keeps what it wrote, and one that cannot write raises
`taglens.errors.OutputError` and leaves nothing.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Protocol

import numpy as np

from taglens.io.atomic import AtomicFile, TempPath, is_stream, partial_path
from taglens.io.names import dumps, printable
from taglens.errors import OutputError
from taglens.records import TASK_OF_FIELD, Record, error_field


class Sink(Protocol):
    def write(self, record: Record) -> None: ...

    def close(self) -> None: ...


class Target(Protocol):
    """An output file being written: `AtomicFile`, `ParquetSink`, `NpySink` or a resumed
    `taglens.io.resume.AppendFile`."""

    path: Path

    def commit(self) -> None: ...

    def discard(self) -> None: ...

    def keep(self) -> Path: ...


class StopRun(Exception):
    """Raised inside `committing` to stop early and keep what was written so far; ``kept`` is
    then where it is (see `taglens.io.atomic.TempPath.keep`)."""

    kept: Path | None = None


class JsonlSink:
    """One JSON object per line, flushed per record so a reader can follow along."""

    def __init__(self, stream: IO[str], *, embedding: bool = True):
        self.stream = stream
        self.embedding = embedding

    def write(self, record: Record) -> None:
        self.stream.write(dumps(record.to_json(embedding=self.embedding)) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


CSV_COLUMNS = {
    "tags": ("tags", "tag_scores"),
    "labels": ("labels", "label_scores"),
    "nsfw": ("nsfw_label", "nsfw_score", "nsfw_flagged", "nsfw_scores"),
    "embedding": ("embedding",),
}


def csv_columns(fields: Sequence[str]) -> list[str]:
    """``path``, ``error``, the columns of each field's job, then a ``<task>_error`` per job."""
    return (["path", "error"] + [c for f in fields for c in CSV_COLUMNS[f]]
            + [error_field(TASK_OF_FIELD[f]) for f in fields])


def names_json(names: Iterable[str]) -> str:
    """A list of tag or label names as one CSV cell: a JSON array, so a name holding a comma or a
    quote reads back exactly (``["a cat", "red, white"]``)."""
    return json.dumps(list(names), ensure_ascii=False)


class CsvSink:
    """One row per image: the `csv_columns` of the jobs that ran.

    ``tags`` and ``labels`` are JSON arrays of names in score order (`names_json`); the matching
    ``*_scores`` column holds a JSON object of name -> score, so nothing is lost or ambiguous.
    """

    def __init__(self, stream: IO[str], fields: Sequence[str], *, header: bool = True):
        self.columns = csv_columns(fields)
        self.writer = csv.DictWriter(stream, fieldnames=self.columns, extrasaction="ignore")
        if header:
            self.writer.writeheader()
        self.stream = stream

    def write(self, record: Record) -> None:
        row: dict[str, object] = {"path": record.path, "error": record.error or "", **record.error_fields()}
        if record.tags is not None:
            row["tags"] = names_json(t.tag for t in record.tags)
            row["tag_scores"] = json.dumps({t.tag: t.score for t in record.tags}, ensure_ascii=False)
        if record.labels is not None:
            row["labels"] = names_json(x.label for x in record.labels)
            row["label_scores"] = json.dumps({x.label: x.score for x in record.labels}, ensure_ascii=False)
        if record.nsfw is not None:
            row.update(nsfw_label=record.nsfw.label, nsfw_score=record.nsfw.score,
                       nsfw_flagged=str(record.nsfw.flagged).lower(),
                       nsfw_scores=json.dumps(record.nsfw.scores, ensure_ascii=False))
        if record.embedding is not None:
            row["embedding"] = json.dumps([float(v) for v in record.embedding])
        self.writer.writerow({k: printable(v) if isinstance(v, str) else v for k, v in row.items()})
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


@contextmanager
def committing(target: Target | None) -> Iterator[None]:
    """Commit ``target`` when the block completes, discard it when it raises (``None``, i.e.
    stdout, needs neither): an output file appears whole or not at all. A write that fails (a
    full disk) becomes `OutputError` naming the file; `StopRun` keeps what was written."""
    try:
        yield
        if target is not None:
            target.commit()
    except StopRun as stop:
        if target is not None:
            stop.kept = target.keep()
        raise
    except OSError as exc:
        if target is None:
            raise
        target.discard()
        raise OutputError(f"cannot write {target.path}: {exc.strerror or exc}") from None
    except BaseException:
        if target is not None:
            target.discard()
        raise


def open_text_output(output: str | os.PathLike | None) -> tuple[IO[str], AtomicFile | None]:
    """stdout for ``None`` or ``-``, the device or pipe itself for one (``/dev/stdout``), else an
    `AtomicFile` the caller commits when done."""
    if output is None or os.fspath(output) == "-":
        return sys.stdout, None
    if is_stream(output):
        return open(output, "w", encoding="utf-8", newline=""), None
    target = AtomicFile(output)
    return target.stream, target


class ParquetSink:
    """Records as Parquet, in the schema of `taglens.io.arrow` (key column, ``error``, optional file
    facts, then the job columns in ``fields``; embeddings as ``fixed_size_list<float32>[dim]``,
    null for failed images). ``metadata`` (e.g. the model ids and revisions) goes into the
    file's schema metadata.

    Rows are written in row groups of ``row_group_size`` to a temporary file beside ``path``;
    `commit` renames it into place, `discard` deletes it, so a killed run leaves no half file.
    """

    def __init__(self, path: str | os.PathLike, dim: int | None = None, *, fields: Sequence[str] = ("embedding",),
                 key: str = "path", facts: bool = False, metadata: dict[str, str] | None = None,
                 row_group_size: int = 4096):
        import pyarrow.parquet as pq

        from taglens.io.arrow import record_schema

        self.path = Path(path)
        self.dim = dim
        self.row_group_size = row_group_size
        self.schema = record_schema(fields, dim, key=key, facts=facts, metadata=metadata)
        self.target = TempPath(self.path)
        try:
            self.writer = pq.ParquetWriter(self.target.tmp, self.schema)
        except OSError as exc:
            self.target.discard()
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self.rows = 0
        self._pending: list[Record] = []

    def write(self, record: Record) -> None:
        if record.embedding is not None and self.dim is not None and np.shape(record.embedding) != (self.dim,):
            raise ValueError(f"embedding of shape {np.shape(record.embedding)} for {record.path!r}; "
                             f"this file holds ({self.dim},)")
        self._pending.append(record)
        if len(self._pending) >= self.row_group_size:
            self._flush()

    def write_row(self, key: str, embedding: np.ndarray | None, error: str | None = None) -> None:
        """A row that is not an image, e.g. a text and its embedding."""
        self.write(Record(path=key, error=error, embedding=embedding))

    def _flush(self) -> None:
        from taglens.io.arrow import records_to_table

        if not self._pending:
            return
        self.writer.write_table(records_to_table(self._pending, self.schema))
        self.rows += len(self._pending)
        self._pending = []

    def close(self) -> None:
        """Write what is buffered and close the temporary file (`commit` makes it visible)."""
        if self.writer is not None:
            self._flush()
            self.writer.close()
            self.writer = None

    def commit(self) -> None:
        self.close()
        self.target.commit()

    def keep(self) -> Path:
        self.close()
        return self.target.keep()

    def discard(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except OSError:
                pass  # the file goes anyway
            self.writer = None
        self.target.discard()


class NpySink:
    """Embeddings as a ``.npy`` float32 matrix, one row per embedded image in input order, and
    the matching paths, one per line, in ``<name>.paths.txt`` beside it (``emb.npy`` ->
    ``emb.paths.txt``). Failed images get no row (they are reported as errors; Parquet keeps
    them). Rows are spooled to a temporary file; `commit` writes both files atomically."""

    def __init__(self, path: str | os.PathLike, dim: int, *, keys_suffix: str | None = ".paths.txt"):
        self.path = Path(path)
        self.dim = dim
        self.keys_suffix = keys_suffix
        self.replaces = self.path.exists()
        try:
            self.spool = tempfile.TemporaryFile(dir=self.path.parent)
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self.keys: list[str] = []

    def write(self, record: Record) -> None:
        if record.error is None and record.embedding is not None:
            self.write_row(record.path, record.embedding)

    def write_row(self, key: str, embedding: np.ndarray | None, error: str | None = None) -> None:
        if embedding is None:
            return
        vector = np.asarray(embedding, np.float32)
        if vector.shape != (self.dim,):
            raise ValueError(f"embedding of shape {vector.shape} for {key!r}; this file holds ({self.dim},)")
        self.spool.write(vector.tobytes())
        self.keys.append(key)

    def close(self) -> None:
        self.spool.flush()

    def commit(self) -> None:
        self._write(self.path)

    def keep(self) -> Path:
        path = partial_path(self.path) if self.replaces else self.path
        self._write(path)
        return path

    def _write(self, path: Path) -> None:
        """The matrix to ``path`` and the keys beside it, each atomically; neither stays if one fails."""
        self.spool.seek(0)
        matrix = np.frombuffer(self.spool.read(), np.float32).reshape(len(self.keys), self.dim)
        self.spool.close()
        out = AtomicFile(path, binary=True)
        keys = AtomicFile(path.with_suffix(self.keys_suffix)) if self.keys_suffix else None
        keys_written = False
        try:
            np.save(out.stream, matrix)
            if keys is not None:
                keys.stream.write("".join(printable(k).replace("\n", " ") + "\n" for k in self.keys))
                keys.commit()
                keys_written = True
            out.commit()
        except BaseException:
            out.discard()
            if keys is not None:
                keys.discard()
                if keys_written:
                    keys.path.unlink(missing_ok=True)
            raise

    def discard(self) -> None:
        try:
            self.spool.close()
        except OSError:
            pass  # a full disk refuses even the buffered rest: the anonymous spool goes anyway
