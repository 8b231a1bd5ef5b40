"""Quarantine: move (or copy) flagged files into a folder so that no file is ever lost or left in
two places, an interrupted run picks up where it stopped, and every move can be undone.

Where files go. Each file keeps its path relative to its **input root**: for a folder given as
an input, that folder (``photos/`` -> ``photos/a/b.jpg`` lands at ``DIR/a/b.jpg``); for a file
given on its own, its parent folder (``x/c.jpg`` lands at ``DIR/c.jpg``). Where inputs overlap,
the deepest folder wins. A name already taken at the destination is never overwritten: the file
gets the first free name of ``stem-1.ext``, ``stem-2.ext``, ... and the journal records it.

The journal (JSON lines, ``DIR/taglens-journal.jsonl`` unless told otherwise) is the only
record of where a file went. Every line is written with one ``write`` and ``fsync``'d before
the next step. For each file:

1. ``intent`` (id, mode, absolute source and destination, the temporary name, sha256) is
   journaled; only then is anything touched;
2. the transfer (`taglens.quarantine.transfers`): on one filesystem an atomic rename that refuses to replace
   (``renameat2(RENAME_NOREPLACE)`` where the kernel has it), then both folders fsync'd.
   Across filesystems (or for a copy): copy to a hidden temporary name beside the destination
   (``.taglens-<journal>-<id>.part``), fsync, read back and compare sha256 with the bytes read
   (and with the sha256 the scores were computed from), rename it to the destination without
   replacing, fsync the folder, and only then delete the source and fsync its folder;
3. ``done`` is journaled (or ``failed`` with a reason, the file left where it was).

An entry without its ``done`` is resolved from what is on disk whenever the journal is opened
again (the next run, or ``--undo``), which is why a crash at any point is safe:

=============================  ==========================================================
state found                    resolution
=============================  ==========================================================
temporary file present         deleted (it exists only while the source is intact)
source only                    nothing happened: ``failed`` ("interrupted before ..."),
                               the file stays; a resumed run scores and moves it again
destination only               the move finished: ``done``
both, identical bytes          the copy finished before the source was deleted: delete
                               the source (move) or keep both (copy): ``done``
both, different bytes          someone else's file: both kept, ``failed`` with the reason
=============================  ==========================================================

`undo` walks the journal backwards and moves every file back with the same protocol
(``undo`` / ``undone`` lines); it never overwrites a file at the original place and reports
each file it could not put back. Undoing a copy deletes the copy, only when the original
is still there with identical bytes. The journal is locked (``flock``) while in use, so two
runs never share a quarantine.
"""

from __future__ import annotations

import errno
import json
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from taglens.io.names import dumps
from taglens.errors import QuarantineError
from taglens.io.atomic import fsync_folder
from taglens.quarantine.transfers import (
    Mismatch,
    describe,
    makedirs_durable,
    resolve,
    sha256_file,
    transfer,
)

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one run at a time is then up to the user
    fcntl = None  # type: ignore[assignment]

Mode = Literal["move", "copy"]
JOURNAL_NAME = "taglens-journal.jsonl"
JOURNAL_VERSION = 1
_HEADER_START = b'{"op": "journal"'


@dataclass(frozen=True)
class Outcome:
    """What happened to one file.

    ``status`` is one of ``moved``, ``copied``, ``already copied``, ``skipped``, ``failed``
    (quarantine), ``completed`` / ``left in place`` (an interrupted entry resolved on opening),
    ``restored`` / ``copy removed`` (undo). ``reason`` says why for ``failed``, ``skipped``
    and ``left in place``.
    """

    source: str
    destination: str | None
    status: str
    reason: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == "failed"


@dataclass
class Entry:
    """One journaled file: its intent line and the state the later lines put it in."""

    id: int
    mode: Mode
    src: str
    dst: str
    tmp: str
    sha256: str | None
    intent: dict[str, Any]
    state: Literal["pending", "done", "failed", "undoing", "undone"] = "pending"
    reason: str | None = None


class InputRoots:
    """Maps each input path to its place under the quarantine folder (see the module docstring)."""

    def __init__(self, arguments: Iterable[str]):
        folders = {os.path.abspath(a) for a in arguments if a != "-" and os.path.isdir(a)}
        self.folders = sorted(folders, key=len, reverse=True)

    def relative(self, path: str) -> str:
        absolute = os.path.abspath(path)
        for folder in self.folders:
            prefix = folder if folder.endswith(os.sep) else folder + os.sep
            if absolute.startswith(prefix):
                return os.path.relpath(absolute, folder)
        return os.path.basename(absolute)


class Journal:
    """The append-only, fsync'd, locked JSON-lines file behind a quarantine."""

    def __init__(self, path: str | os.PathLike, *, create: bool):
        self.path = os.path.abspath(os.fspath(path))
        if not create and not os.path.isfile(self.path):
            raise QuarantineError(f"journal {self.path} does not exist")
        parent = os.path.dirname(self.path)
        if create:
            makedirs_durable(parent)
        existed = os.path.exists(self.path)
        self.fd = os.open(self.path, os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0), 0o644)
        self.broken = False
        try:
            _lock(self.fd, self.path)
            if not existed:
                fsync_folder(parent)
            self.entries: dict[int, Entry] = {}
            self.token = ""
            self._read()
        except BaseException:
            os.close(self.fd)
            raise

    def append(self, line: dict[str, Any]) -> None:
        """Write one line and fsync it. Any failure stops the journal for good (a later line
        after a torn one would corrupt it); reopening it resolves whatever was in flight."""
        if self.broken:
            raise QuarantineError(f"journal {self.path} could not be written earlier; stopping")
        data = (dumps(line) + "\n").encode("utf-8")
        try:
            written = os.write(self.fd, data)
            if written != len(data):
                raise OSError(errno.EIO, "short write")
            os.fsync(self.fd)
        except OSError as exc:
            self.broken = True
            raise QuarantineError(f"cannot write journal {self.path} ({describe(exc)}); stopping") from None

    def next_id(self) -> int:
        return max(self.entries, default=0) + 1

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the lock
            self.fd = -1

    def _read(self) -> None:
        size = os.fstat(self.fd).st_size
        os.lseek(self.fd, 0, os.SEEK_SET)
        data = b""
        while len(data) < size:
            chunk = os.read(self.fd, size - len(data))
            if not chunk:
                break
            data += chunk
        if data and not data.startswith(_HEADER_START):  # never cut or append to someone else's file
            raise QuarantineError(f"{self.path} is not a taglens quarantine journal")
        if data and not data.endswith(b"\n"):
            # A torn last line (power loss mid-write): its fsync never returned, so nothing
            # after it happened. Cut it.
            keep = data.rfind(b"\n") + 1
            os.ftruncate(self.fd, keep)
            os.fsync(self.fd)
            data = data[:keep]
        for number, raw in enumerate(data.splitlines(), 1):
            try:
                self._apply(json.loads(raw))
            except (ValueError, KeyError, TypeError) as exc:
                raise QuarantineError(f"{self.path}:{number}: not a valid journal line ({exc})") from None
        if not self.token:
            self.token = uuid.uuid4().hex[:12]
            self.append({"op": "journal", "version": JOURNAL_VERSION, "token": self.token})

    def _apply(self, line: dict[str, Any]) -> None:
        op = line["op"]
        if op == "journal":
            if line["version"] > JOURNAL_VERSION:
                raise QuarantineError(f"{self.path}: written by a newer taglens (version {line['version']})")
            self.token = line["token"]
        elif op == "open":
            pass  # who opened the journal when, for the reader
        elif op == "intent":
            entry = Entry(int(line["id"]), line["mode"], line["src"], line["dst"], line["tmp"],
                          line.get("sha256"), line)
            if entry.id in self.entries or entry.mode not in ("move", "copy"):
                raise ValueError(f"duplicate id or unknown mode in intent {entry.id}")
            self.entries[entry.id] = entry
        else:
            entry = self.entries[int(line["id"])]
            state = {"done": "done", "failed": "failed", "undo": "undoing", "undone": "undone",
                     "undo-failed": "done"}.get(op)
            if state is None:
                raise ValueError(f"unknown op {op!r}")
            entry.state = state  # type: ignore[assignment]
            entry.reason = line.get("reason")


class Quarantine:
    """Move or copy files into ``folder``, journaled (see the module docstring).

    Opening it resolves whatever an interrupted run left pending (`recovered` lists what was
    found). Use as a context manager::

        with Quarantine("quarantine/", mode="move") as q:
            q.put("photos/a/b.jpg", "a/b.jpg", sha256=record.sha256)
    """

    def __init__(
        self, folder: str | os.PathLike, *, mode: Mode = "move", journal: str | os.PathLike | None = None
    ):
        if mode not in ("move", "copy"):
            raise ValueError(f"mode must be move or copy, not {mode!r}")
        self.folder = os.path.abspath(os.fspath(folder))
        self.mode: Mode = mode
        if os.path.exists(self.folder) and not os.path.isdir(self.folder):
            raise QuarantineError(f"{self.folder} exists and is not a folder")
        self.journal = Journal(journal or os.path.join(self.folder, JOURNAL_NAME), create=True)
        try:
            self.recovered = recover(self.journal)
            self.journal.append({"op": "open", "mode": mode, "folder": self.folder, "time": _now()})
        except BaseException:
            self.journal.close()
            raise
        self._handled: set[str] = set()

    def __enter__(self) -> Quarantine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.journal.close()

    def contains(self, path: str) -> bool:
        """Whether ``path`` lies inside the quarantine folder or is its journal."""
        absolute = os.path.abspath(path)
        return absolute == self.journal.path or absolute.startswith(self.folder + os.sep)

    def put(
        self, path: str, relative: str, *, sha256: str | None = None, info: dict[str, Any] | None = None
    ) -> Outcome:
        """Move or copy ``path`` to ``folder/relative`` (or the next free name). Never raises
        for a per-file problem: the `Outcome` says what happened."""
        src = os.path.abspath(path)
        if self.contains(src):
            return Outcome(src, None, "skipped", "inside the quarantine folder")
        if src in self._handled:
            return Outcome(src, None, "skipped", "already handled in this run")
        self._handled.add(src)
        if self.mode == "move" and os.path.islink(src):
            return Outcome(src, None, "failed", "is a symbolic link (moving it would not move the image)")
        if not os.path.isfile(src):
            reason = "no longer exists" if not os.path.lexists(src) else "not a regular file"
            return Outcome(src, None, "failed", reason)
        if self.mode == "copy":
            earlier = self._earlier_copy(src, sha256)
            if earlier is not None:
                return Outcome(src, earlier, "already copied")
        relative = os.path.normpath(relative)
        if relative == ".." or relative.startswith(".." + os.sep) or os.path.isabs(relative):
            raise ValueError(f"relative destination must stay inside the quarantine folder: {relative!r}")
        try:
            dst = self._free_name(os.path.join(self.folder, relative))
        except OSError as exc:
            return Outcome(src, None, "failed", describe(exc))
        entry_id = self.journal.next_id()
        tmp = os.path.join(os.path.dirname(dst), f".taglens-{self.journal.token}-{entry_id}.part")
        intent = {"op": "intent", "id": entry_id, "mode": self.mode, "src": src, "dst": dst, "tmp": tmp,
                  "folder": self.folder, "sha256": sha256, "time": _now(), **({"info": info} if info else {})}
        self.journal.append(intent)
        entry = Entry(entry_id, self.mode, src, dst, tmp, sha256, intent)
        self.journal.entries[entry_id] = entry
        try:
            transfer(src, dst, tmp, keep_source=self.mode == "copy", expect_sha256=sha256)
        except FileExistsError:  # the name was taken after we chose it: nothing was moved
            return _fail(self.journal, entry, "the destination name was taken meanwhile; left in place")
        except (OSError, Mismatch) as exc:
            return _settle(self.journal, entry, failure=describe(exc))
        self.journal.append({"op": "done", "id": entry_id})
        entry.state = "done"
        return Outcome(src, dst, "moved" if self.mode == "move" else "copied")

    def _earlier_copy(self, src: str, sha256: str | None) -> str | None:
        for entry in self.journal.entries.values():
            if (entry.mode == "copy" and entry.state == "done" and entry.src == src and sha256 is not None
                    and entry.sha256 == sha256 and os.path.isfile(entry.dst)):
                return entry.dst
        return None

    def _free_name(self, wanted: str) -> str:
        stem, ext = os.path.splitext(wanted)
        candidate, n = wanted, 0
        while os.path.lexists(candidate) or candidate == self.journal.path:
            n += 1
            candidate = f"{stem}-{n}{ext}"
        return candidate


def recover(journal: Journal) -> list[Outcome]:
    """Resolve every entry an interrupted run left pending (forward or undo), from the disk."""
    outcomes = []
    for entry in journal.entries.values():
        if entry.state == "pending":
            outcomes.append(_settle(journal, entry, failure=None))
        elif entry.state == "undoing":
            outcomes.append(_settle_undo(journal, entry, failure=None))
    return outcomes


def undo(journal_path: str | os.PathLike) -> list[Outcome]:
    """Put back every file the journal moved (newest first) and delete every copy it made.

    Nothing at an original place is ever overwritten; each file that cannot go back stays in
    the quarantine and gets a ``failed`` outcome with the reason. Running it again retries those.
    """
    journal = Journal(journal_path, create=False)
    try:
        outcomes = recover(journal)
        journal.append({"op": "open", "mode": "undo", "time": _now()})
        for entry in sorted(journal.entries.values(), key=lambda e: e.id, reverse=True):
            if entry.state == "done":
                outcomes.append(_undo_one(journal, entry))
        return outcomes
    finally:
        journal.close()


def _undo_one(journal: Journal, entry: Entry) -> Outcome:
    def refuse(reason: str) -> Outcome:
        journal.append({"op": "undo-failed", "id": entry.id, "reason": reason})
        entry.reason = reason
        return Outcome(entry.dst, entry.src, "failed", reason)

    if not os.path.lexists(entry.dst):
        return refuse("no longer in the quarantine folder")
    if entry.mode == "move":
        if os.path.lexists(entry.src):
            return refuse("the original place is taken; left in the quarantine")
    else:
        if not os.path.isfile(entry.src):
            return refuse("the original is gone; the copy is kept")
        if sha256_file(entry.src) != sha256_file(entry.dst):
            return refuse("the copy differs from the original; the copy is kept")
    journal.append({"op": "undo", "id": entry.id, "time": _now()})
    entry.state = "undoing"
    try:
        if entry.mode == "move":
            transfer(entry.dst, entry.src, _undo_tmp(entry, journal), keep_source=False, expect_sha256=None)
        else:
            os.unlink(entry.dst)
            fsync_folder(os.path.dirname(entry.dst))
    except FileExistsError:
        return _settle_undo(journal, entry, failure=_TAKEN_MEANWHILE)
    except (OSError, Mismatch) as exc:
        return _settle_undo(journal, entry, failure=describe(exc))
    journal.append({"op": "undone", "id": entry.id})
    entry.state = "undone"
    _prune_empty_dirs(os.path.dirname(entry.dst), entry.intent.get("folder"))
    return Outcome(entry.dst, entry.src, "restored" if entry.mode == "move" else "copy removed")


_TAKEN_MEANWHILE = "the original place was taken meanwhile; left in the quarantine"


def _undo_tmp(entry: Entry, journal: Journal) -> str:
    return os.path.join(os.path.dirname(entry.src), f".taglens-{journal.token}-{entry.id}-undo.part")


def _fail(journal: Journal, entry: Entry, reason: str) -> Outcome:
    journal.append({"op": "failed", "id": entry.id, "reason": reason})
    entry.state, entry.reason = "failed", reason
    return Outcome(entry.src, entry.dst, "failed", reason)


def _settle(journal: Journal, entry: Entry, *, failure: str | None) -> Outcome:
    """Resolve a forward entry whose transfer did not report success, from what is on disk.
    ``failure`` is the error the transfer raised, or None when recovering after a crash."""
    state, reason = resolve(entry.src, entry.dst, entry.tmp, keep_source=entry.mode == "copy")
    if state == "done":
        journal.append({"op": "done", "id": entry.id, "recovered": True})
        entry.state = "done"
        return Outcome(entry.src, entry.dst, "completed" if failure is None else _DONE[entry.mode])
    if state == "not started" and failure is None:
        reason = "interrupted before the transfer; the file stayed in place"
        journal.append({"op": "failed", "id": entry.id, "reason": reason})
        entry.state, entry.reason = "failed", reason
        return Outcome(entry.src, entry.dst, "left in place", reason)
    return _fail(journal, entry, reason or failure or "failed")


_DONE = {"move": "moved", "copy": "copied"}


def _settle_undo(journal: Journal, entry: Entry, *, failure: str | None) -> Outcome:
    """Resolve an undo that did not report success: finished, or the file is still quarantined
    (and a later undo tries again). ``failure`` is None when recovering after a crash."""
    if entry.mode == "copy":
        state, reason = ("done", None) if not os.path.lexists(entry.dst) else ("not started", None)
    else:
        state, reason = resolve(entry.dst, entry.src, _undo_tmp(entry, journal), keep_source=False)
    if state == "done":
        journal.append({"op": "undone", "id": entry.id, "recovered": True})
        entry.state = "undone"
        _prune_empty_dirs(os.path.dirname(entry.dst), entry.intent.get("folder"))
        return Outcome(entry.dst, entry.src, "restored" if entry.mode == "move" else "copy removed")
    reason = reason or failure or "interrupted before the file went back; still in the quarantine"
    journal.append({"op": "undo-failed", "id": entry.id, "reason": reason})
    entry.state, entry.reason = "done", reason
    status = "left in place" if failure is None and state == "not started" else "failed"
    return Outcome(entry.dst, entry.src, status, reason)


def _prune_empty_dirs(folder: str, stop: str | None) -> None:
    """Remove folders left empty by an undo, up to (not including) the quarantine folder."""
    if not stop:
        return
    stop = os.path.abspath(stop)
    current = os.path.abspath(folder)
    while current.startswith(stop + os.sep):
        try:
            os.rmdir(current)
        except OSError:
            return
        current = os.path.dirname(current)


def _lock(fd: int, path: str) -> None:
    if fcntl is None:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise QuarantineError(f"journal {path} is in use by another taglens run") from None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def summarize(outcomes: Sequence[Outcome]) -> dict[str, int]:
    """Counts by status, for summary lines."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    return counts


__all__ = ["JOURNAL_NAME", "InputRoots", "Journal", "Outcome", "Quarantine", "recover", "summarize", "undo"]
