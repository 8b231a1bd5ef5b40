"""Crash-safe file transfers: move or copy a file so that, whatever instant the process dies,
the file exists whole in at least one place, never in two places once `resolve` has run, and
nothing already at the destination is ever replaced.

- `rename_noreplace`: an atomic rename that fails instead of replacing (Linux
  ``renameat2(RENAME_NOREPLACE)``; elsewhere check-then-rename).
- `transfer`: on one filesystem that rename, then both folders fsync'd; across filesystems (or
  for a copy) copy to a temporary name beside the destination, fsync, read back and compare
  sha256, rename into place without replacing, fsync, and only then delete the source.
- `resolve`: after an interruption, bring a transfer to a safe end state from what is on disk.

`taglens.quarantine` journals each transfer around these steps.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import os
import sys
from typing import Any

from taglens.io.atomic import fsync_folder

_CHUNK = 1 << 20


def resolve(src: str, dst: str, tmp: str, *, keep_source: bool) -> tuple[str, str | None]:
    """Bring an interrupted transfer to a safe end state: ``done``, ``not started`` (the source
    is intact and the destination absent) or ``conflict`` (both kept, with the reason)."""
    if os.path.lexists(tmp):  # only ever present while the source is intact
        os.unlink(tmp)
        fsync_folder(os.path.dirname(tmp))
    has_src, has_dst = os.path.lexists(src), os.path.lexists(dst)
    if has_dst and not has_src:
        return "done", None  # the destination appears only complete and verified
    if has_src and not has_dst:
        return "not started", None
    if not has_src and not has_dst:
        return "conflict", f"neither {src} nor {dst} exists (removed by something else)"
    # Both exist: the copy was renamed into place before the source was deleted (or a hard link).
    if not same_content(src, dst):
        return "conflict", f"both {src} and {dst} exist with different contents; both kept"
    if keep_source:
        return "done", None
    try:
        os.unlink(src)
        fsync_folder(os.path.dirname(src))
        return "done", None
    except OSError as exc:
        # The source cannot be deleted (e.g. a read-only folder): take the copy back out so
        # the file is not left in two places.
        os.unlink(dst)
        fsync_folder(os.path.dirname(dst))
        return "conflict", f"could not delete the original ({describe(exc)}); left in place"


class Mismatch(Exception):
    """A copy did not read back as what was read, or the file changed since it was scored."""


def transfer(src: str, dst: str, tmp: str, *, keep_source: bool, expect_sha256: str | None) -> None:
    """Move (``keep_source=False``) or copy ``src`` to ``dst``, never replacing ``dst``."""
    makedirs_durable(os.path.dirname(dst))
    if not keep_source:
        scored = verified_state(src, expect_sha256)
        try:
            rename_noreplace(src, dst)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
        else:
            fsync_folder(os.path.dirname(dst))
            fsync_folder(os.path.dirname(src))
            if scored is not None and file_state(os.lstat(dst)) != scored:
                # swapped between the check and the rename: what moved was never scored, so it goes back
                rename_noreplace(dst, src)
                fsync_folder(os.path.dirname(src))
                fsync_folder(os.path.dirname(dst))
                raise Mismatch("the file was replaced after it was scored; left in place")
            return
    copied = copy_verified(src, tmp, expect_sha256)
    try:
        rename_noreplace(tmp, dst)
    except OSError:
        os.unlink(tmp)
        raise
    fsync_folder(os.path.dirname(dst))
    if not keep_source:
        try:
            if file_state(os.lstat(src)) != copied:
                raise Mismatch("the file was replaced while it was copied; left in place")
            os.unlink(src)
        except Mismatch:
            os.unlink(dst)  # our copy of what was there before: the new file stays where it is
            fsync_folder(os.path.dirname(dst))
            raise
        except OSError as exc:
            os.unlink(dst)  # identical bytes, just written by us: never leave the file twice
            fsync_folder(os.path.dirname(dst))
            reason = f"could not delete the original ({exc.strerror}); left in place"
            raise OSError(exc.errno, reason) from None
        fsync_folder(os.path.dirname(src))


FileState = tuple[int, int, int, int]


def file_state(st: os.stat_result) -> FileState:
    """Which file this is and whether it changed: device, inode, size, mtime (ns)."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def verified_state(src: str, expect_sha256: str | None) -> FileState | None:
    """The `file_state` of ``src`` once its bytes are checked to be the ``expect_sha256`` they were
    scored from (`Mismatch` if not; None when there is nothing to check): the file a move may take."""
    if expect_sha256 is None:
        return None
    with open(src, "rb") as f:
        before = file_state(os.fstat(f.fileno()))
        read = hashlib.file_digest(f, "sha256").hexdigest()
        after = file_state(os.fstat(f.fileno()))
    if read != expect_sha256 or before != after:
        raise Mismatch("the file changed since it was scored; left in place")
    return after


def copy_verified(src: str, tmp: str, expect_sha256: str | None) -> FileState:
    """Copy ``src`` to a new file ``tmp``, fsync it, and check its bytes read back correctly;
    returns the `file_state` of the source it read."""
    digest = hashlib.sha256()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with open(src, "rb") as fin, os.fdopen(fd, "wb", closefd=False) as fout:
            while chunk := fin.read(_CHUNK):
                digest.update(chunk)
                fout.write(chunk)
            fout.flush()
            state = file_state(os.fstat(fin.fileno()))
            try:
                os.chmod(tmp, os.stat(src).st_mode & 0o7777)
                st = os.stat(src)
                os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
            except OSError:
                pass  # metadata is best effort; the bytes are what matters
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    read = digest.hexdigest()
    problem = None
    if expect_sha256 is not None and read != expect_sha256:
        problem = "the file changed since it was scored; left in place"
    elif sha256_file(tmp) != read:
        problem = "the copy did not read back identical; left in place"
    if problem:
        os.unlink(tmp)
        raise Mismatch(problem)
    return state


@functools.cache
def _renameat2() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def rename_noreplace(src: str, dst: str) -> None:
    """``os.rename`` that fails with `FileExistsError` instead of replacing ``dst``: atomic with
    Linux's ``renameat2(RENAME_NOREPLACE)``; elsewhere (or on filesystems without it) a check
    then ``os.rename`` (the journal lock keeps other taglens runs out of the window)."""
    fn = _renameat2()
    if fn is not None:
        if fn(-100, os.fsencode(src), -100, os.fsencode(dst), 1) == 0:  # AT_FDCWD, RENAME_NOREPLACE
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), src, None, dst)
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    os.rename(src, dst)


def makedirs_durable(folder: str) -> None:
    """``os.makedirs`` that fsyncs the parent of every folder it creates."""
    missing = []
    current = os.path.abspath(folder)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for path in reversed(missing):
        try:
            os.mkdir(path)
        except FileExistsError:
            if not os.path.isdir(path):
                raise NotADirectoryError(errno.ENOTDIR, f"{path} exists and is not a folder") from None
        fsync_folder(os.path.dirname(path))



def same_content(a: str, b: str) -> bool:
    try:
        if os.path.samefile(a, b):
            return True
        return os.path.getsize(a) == os.path.getsize(b) and sha256_file(a) == sha256_file(b)
    except OSError:
        return False


def sha256_file(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename and exc.filename not in exc.strerror else ""
        return f"{exc.strerror}{where}"
    return str(exc)
