"""Where records go: JSON lines or CSV, to stdout or to a file that appears only when complete.

A file output is written to a temporary name beside the target and renamed at the end, so a
killed run never leaves a half-written file under the real name.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Protocol

from taglens.records import Record


class Sink(Protocol):
    def write(self, record: Record) -> None: ...

    def close(self) -> None: ...


class AtomicTextFile:
    """A text file written under a temporary name and renamed over ``path`` by `commit`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent)
        self.tmp = Path(tmp)
        self.stream: IO[str] = os.fdopen(fd, "w", encoding="utf-8", newline="")

    def commit(self) -> None:
        self.stream.flush()
        os.fsync(self.stream.fileno())
        self.stream.close()
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.stream.close()
        self.tmp.unlink(missing_ok=True)


class JsonlSink:
    """One JSON object per line, flushed per record so a reader can follow along."""

    def __init__(self, stream: IO[str], *, embedding: bool = True):
        self.stream = stream
        self.embedding = embedding

    def write(self, record: Record) -> None:
        self.stream.write(json.dumps(record.to_json(embedding=self.embedding), ensure_ascii=False) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


CSV_COLUMNS = {
    "tags": ("tags", "tag_scores"),
    "labels": ("labels", "label_scores"),
    "nsfw": ("nsfw_label", "nsfw_score", "nsfw_flagged", "nsfw_scores"),
    "embedding": ("embedding",),
}


class CsvSink:
    """One row per image: ``path``, ``error``, then the columns of each job that ran.

    Name lists are joined by ", " in score order; the matching ``*_scores`` column holds a JSON
    object of name -> score, so nothing is lost and a spreadsheet still reads well.
    """

    def __init__(self, stream: IO[str], fields: Sequence[str]):
        self.columns = ["path", "error"] + [c for f in fields for c in CSV_COLUMNS[f]]
        self.writer = csv.DictWriter(stream, fieldnames=self.columns, extrasaction="ignore")
        self.writer.writeheader()
        self.stream = stream

    def write(self, record: Record) -> None:
        row: dict[str, object] = {"path": record.path, "error": record.error or ""}
        if record.tags is not None:
            row["tags"] = ", ".join(t.tag for t in record.tags)
            row["tag_scores"] = json.dumps({t.tag: t.score for t in record.tags}, ensure_ascii=False)
        if record.labels is not None:
            row["labels"] = ", ".join(x.label for x in record.labels)
            row["label_scores"] = json.dumps({x.label: x.score for x in record.labels}, ensure_ascii=False)
        if record.nsfw is not None:
            row.update(nsfw_label=record.nsfw.label, nsfw_score=record.nsfw.score,
                       nsfw_flagged=str(record.nsfw.flagged).lower(),
                       nsfw_scores=json.dumps(record.nsfw.scores, ensure_ascii=False))
        if record.embedding is not None:
            row["embedding"] = json.dumps([float(v) for v in record.embedding])
        self.writer.writerow(row)
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


def open_text_output(output: str | os.PathLike | None) -> tuple[IO[str], AtomicTextFile | None]:
    """stdout for ``None`` or ``-``, else an `AtomicTextFile` the caller commits when done."""
    if output is None or os.fspath(output) == "-":
        return sys.stdout, None
    target = AtomicTextFile(output)
    return target.stream, target


def text_for(record: Record) -> str:
    """A compact human line for a record, used by the ``txt`` format."""
    if record.error is not None:
        return f"{record.path}\terror: {record.error}"
    buf = io.StringIO()
    buf.write(record.path)
    if record.tags is not None:
        buf.write("\t" + ", ".join(t.tag for t in record.tags))
    if record.labels is not None:
        buf.write("\t" + ", ".join(f"{x.label} ({x.score:.3f})" for x in record.labels))
    if record.nsfw is not None:
        buf.write(f"\t{record.nsfw.label} ({record.nsfw.score:.3f})")
    return buf.getvalue()
