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
import re
import secrets
import time
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
        remove_stale_parts(self.path)
        self.tmp, self._lock = _create_beside(self.path)

    def commit(self) -> None:
        self._rename(self.path)

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)
        self._unlock()

    def _unlock(self) -> None:
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

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
        self._unlock()
        fsync_folder(path.parent)  # the rename itself is durable, not only the bytes

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


def fsync_folder(folder: str | os.PathLike) -> None:
    """fsync a folder, so that a rename or a new name in it survives a power loss (best effort:
    Windows cannot open folders, and some file systems refuse the call)."""
    try:
        fd = os.open(folder or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


STALE_AFTER_S = 2.0  # a temporary file is locked within microseconds of its creation


def remove_stale_parts(path: str | os.PathLike) -> list[Path]:
    """Remove the ``.NAME.XXXX.part`` files a killed run left beside ``path`` (a full disk's worth,
    perhaps): those no process holds locked (every writer keeps its own locked until it is renamed
    or removed), and older than a moment. Returns what was removed."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{8}}\.part")
    removed = []
    try:
        names = [n for n in os.listdir(path.parent) if pattern.fullmatch(n)]
    except OSError:
        return removed
    for name in names:
        part = path.parent / name
        try:
            fd = os.open(part, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            if _try_lock(fd) and time.time() - os.fstat(fd).st_mtime > STALE_AFTER_S:
                part.unlink()
                removed.append(part)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _try_lock(fd: int) -> bool:
    """Take an exclusive lock on ``fd`` without waiting; True when taken (always, without fcntl)."""
    try:
        import fcntl
    except ImportError:  # Windows: an open file cannot be removed there anyway
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _create_beside(path: Path) -> tuple[Path, int]:
    """A new, empty ``.NAME.XXXX.part`` in ``path``'s folder, with ``path``'s mode when it exists,
    else the umask's, and a descriptor holding it locked (so `remove_stale_parts` leaves it alone)."""
    folder = path.parent
    for _ in range(100):
        tmp = folder / f".{path.name}.{secrets.token_hex(4)}.part"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {_reason(exc, folder)}") from None
        _try_lock(fd)
        try:
            os.fchmod(fd, path.stat().st_mode & 0o7777)
        except OSError:
            pass  # a new file: the umask's mode stands
        return tmp, fd
    raise OutputError(f"cannot write {path}: no free temporary name in {folder}")


def _reason(exc: OSError, folder: Path) -> str:
    """The OS reason, saying which folder when the folder is what is wrong."""
    import errno

    if exc.errno == errno.ENOENT:
        return f"the folder {folder} does not exist"
    if exc.errno == errno.ENOTDIR:
        return f"{folder} is not a folder"
    return exc.strerror or str(exc)
