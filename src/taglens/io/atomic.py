"""Files that appear under their real name only when complete: written to a temporary name in
the same folder (so the final rename is atomic), then renamed over the target, or removed.

`TempPath` is for writers that want a path (pyarrow, numpy memmaps, usearch); `AtomicFile` adds
an open stream for writers that want one. This is the one place taglens makes temporary output
files: a new file gets the permissions any file gets (0666 minus the umask), a file it replaces
keeps its own. The folder must exist: an output path never creates folders (a mistyped folder
is an error, as for a shell redirection).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import IO, Any

from taglens.errors import OutputError


class TempPath:
    """A temporary file beside ``path``: `commit` renames it over ``path``, `discard` removes it,
    `keep` (after an interrupt) keeps what was written. As a context manager it commits when the
    block succeeds and discards when it raises. `OutputError` names the path and the OS reason
    when the folder cannot be written."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.replaces = self.path.exists()
        self.tmp = _create_beside(self.path)

    def commit(self) -> None:
        self._rename(self.path)

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)

    def keep(self) -> Path:
        """What was written so far, kept (a run was interrupted): under the real name when there was
        no file there, else beside it as ``NAME.partial.SUFFIX`` so the file it would have replaced
        stays as it was. Returns where it is."""
        kept = partial_path(self.path) if self.replaces else self.path
        self._rename(kept)
        return kept

    def _rename(self, path: Path) -> None:
        try:
            os.replace(self.tmp, path)
        except OSError as exc:
            self.discard()
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None

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
        try:
            self.stream.flush()
            os.fsync(self.stream.fileno())
            self.stream.close()
        except OSError as exc:  # a full disk shows here, if not before
            self.discard()
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        super().commit()

    def discard(self) -> None:
        try:
            self.stream.close()
        except OSError:
            pass  # the buffered rest could not be written: the file goes anyway
        super().discard()

    def keep(self) -> Path:
        self.stream.close()
        return super().keep()


def partial_path(path: str | os.PathLike) -> Path:
    """``out.jsonl`` -> ``out.partial.jsonl``: where an interrupted run keeps its records when a
    file of the real name was already there."""
    path = Path(path)
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def check_writable(path: str | os.PathLike) -> None:
    """Raise `OutputError` unless a file can be written at ``path`` (its folder exists and takes a
    new file), by creating and removing a temporary file there: a check that holds for root and
    read-only mounts alike, made before any model loads. A device or pipe (``/dev/stdout``) is
    written in place, not through a temporary file, so it is not probed."""
    if not is_stream(path):
        TempPath(path).discard()


def is_stream(path: str | os.PathLike) -> bool:
    """``path`` exists and is not a regular file (a terminal, ``/dev/stdout``, a named pipe): it is
    written to directly, never replaced by a rename."""
    import stat

    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _create_beside(path: Path) -> Path:
    """A new, empty ``.NAME.XXXX.part`` in ``path``'s folder, with ``path``'s mode when it exists,
    else the umask's."""
    folder = path.parent
    for _ in range(100):
        tmp = folder / f".{path.name}.{secrets.token_hex(4)}.part"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {_reason(exc, folder)}") from None
        try:
            os.fchmod(fd, path.stat().st_mode & 0o7777)
        except OSError:
            pass  # a new file: the umask's mode stands
        finally:
            os.close(fd)
        return tmp
    raise OutputError(f"cannot write {path}: no free temporary name in {folder}")


def _reason(exc: OSError, folder: Path) -> str:
    """The OS reason, saying which folder when the folder is what is wrong."""
    import errno

    if exc.errno == errno.ENOENT:
        return f"the folder {folder} does not exist"
    if exc.errno == errno.ENOTDIR:
        return f"{folder} is not a folder"
    return exc.strerror or str(exc)
