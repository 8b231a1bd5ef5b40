"""Resuming an interrupted run: which inputs an output file already holds, and how to append.

A run killed mid-write may leave a partial last line; `open_for_append` cuts the file back to its
last complete line before appending, so the resumed output holds every image exactly once.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import IO

from taglens.errors import OutputError, TaglensError

RESUMABLE_FORMATS = ("jsonl", "csv")


def completed_paths(path: str | os.PathLike, fmt: str, columns: list[str] | None = None) -> set[str]:
    """The ``path`` of every complete record in an existing JSONL or CSV output (empty if none);
    a CSV whose header is not ``columns`` (other tasks) is refused, as appending would garble it."""
    target = Path(path)
    if not target.exists():
        return set()
    _truncate_partial_line(target)
    done: set[str] = set()
    with open(target, encoding="utf-8", newline="") as f:
        if fmt == "jsonl":
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    done.add(json.loads(line)["path"])
                except (ValueError, KeyError, TypeError):
                    raise TaglensError(f"{target}:{number}: not a taglens JSONL record; refusing to resume into it") from None
        elif fmt == "csv":
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "path" not in reader.fieldnames:
                if reader.fieldnames is None:
                    return done
                raise TaglensError(f"{target}: no 'path' column; refusing to resume into it")
            if columns is not None and reader.fieldnames != columns:
                raise TaglensError(f"{target} has the columns {','.join(reader.fieldnames)}, this run writes "
                                   f"{','.join(columns)}; resume with the same --tasks, or write to another file")
            done.update(row["path"] for row in reader)
        else:
            raise TaglensError(f"--resume works with {' or '.join(RESUMABLE_FORMATS)} output, not {fmt}")
    return done


class AppendFile:
    """An output opened for appending after its partial last line was cut. Like
    `taglens.io.sinks.AtomicFile` it has `commit`, `discard` and `keep`; each just closes it, since
    every record was flushed as it was written."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            if self.path.exists():
                _truncate_partial_line(self.path)
            self.stream: IO[str] = open(self.path, "a", encoding="utf-8", newline="")
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def commit(self) -> None:
        self.stream.flush()
        os.fsync(self.stream.fileno())
        self.stream.close()

    def discard(self) -> None:
        try:
            self.stream.close()
        except OSError:
            pass  # what could not be flushed is a torn line the next --resume cuts off

    def keep(self) -> Path:
        self.commit()
        return self.path


def open_for_append(path: str | os.PathLike) -> AppendFile:
    """Open an output for appending after cutting any partial last line."""
    return AppendFile(path)


def _truncate_partial_line(target: Path) -> None:
    with open(target, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        # Walk back to the last newline (or the start) and cut there.
        position = size
        chunk = 1 << 16
        while position > 0:
            start = max(0, position - chunk)
            f.seek(start)
            data = f.read(position - start)
            cut = data.rfind(b"\n")
            if cut >= 0:
                f.truncate(start + cut + 1)
                return
            position = start
        f.truncate(0)
