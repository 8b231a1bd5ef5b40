"""Files that appear under their real name only when complete: written to a temporary name in
the same folder (so the final rename is atomic), then renamed over the target, or removed.

`TempPath` is for writers that want a path (pyarrow, numpy memmaps, usearch); `AtomicFile` adds
an open stream for writers that want one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Any


class TempPath:
    """A temporary file beside ``path``: `commit` renames it over ``path``, `discard` removes it.
    As a context manager it commits when the block succeeds and discards when it raises."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)

    def commit(self) -> None:
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> TempPath:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


class AtomicFile(TempPath):
    """A `TempPath` opened for writing (text, UTF-8, by default; ``binary=True`` for bytes);
    `commit` flushes and fsyncs it before the rename."""

    def __init__(self, path: str | os.PathLike, *, binary: bool = False):
        super().__init__(path)
        self.stream: IO[Any] = open(self.tmp, "wb") if binary else open(self.tmp, "w", encoding="utf-8", newline="")

    def commit(self) -> None:
        self.stream.flush()
        os.fsync(self.stream.fileno())
        self.stream.close()
        super().commit()

    def discard(self) -> None:
        self.stream.close()
        super().discard()
