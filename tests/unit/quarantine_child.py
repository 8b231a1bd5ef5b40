"""Crash injection for the quarantine: count every step that changes the disk (each journal
write and fsync, mkdir, rename, unlink, temporary-file creation) and stop at the k-th.

Imported by the tests to raise `Crash` in-process, and run as a script to SIGKILL itself:

    python quarantine_child.py SPEC.json

where SPEC holds ``folder``, ``mode``, ``files`` ([path, relative, sha256] triples), ``kill_at``
(a step number, or null to run to the end) and ``force_copy`` (treat every rename between
folders as crossing filesystems). The script prints the number of steps it took.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import types

import taglens.quarantine as quarantine
import taglens.quarantine.transfers as transfer

COUNTED = ("write", "fsync", "unlink", "mkdir", "rename", "ftruncate")


class Crash(BaseException):
    """Raised at the chosen step (a BaseException, so no ``except Exception`` can swallow it)."""


class StepCounter:
    """Replaces ``os`` in `taglens.quarantine` and `taglens.quarantine.transfers`, and
    ``transfer.rename_noreplace``, with counting versions."""

    def __init__(self, stop_at: int | None, on_stop):
        self.steps = 0
        self.stop_at = stop_at
        self.on_stop = on_stop

    def step(self, what: str) -> None:
        self.steps += 1
        if self.stop_at is not None and self.steps >= self.stop_at:
            self.on_stop(what)

    def install(self, setattr_, *, force_copy: bool = False) -> None:
        proxy = types.ModuleType("os_proxy")
        proxy.__dict__.update({k: getattr(os, k) for k in dir(os) if not k.startswith("__")})

        def counted(name):
            real = getattr(os, name)

            def call(*args, **kwargs):
                self.step(name)
                return real(*args, **kwargs)

            return call

        for name in COUNTED:
            setattr(proxy, name, counted(name))
        real_open = os.open

        def open_(path, flags, *args, **kwargs):
            if flags & os.O_CREAT and ".taglens-" in os.fspath(path):
                self.step("create temporary")
            return real_open(path, flags, *args, **kwargs)

        proxy.open = open_
        real_rename = transfer.rename_noreplace

        def rename_noreplace(src, dst):
            self.step("rename")
            if force_copy and not os.path.basename(src).startswith(".taglens-"):
                raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), src, None, dst)
            return real_rename(src, dst)

        setattr_(quarantine, "os", proxy)
        setattr_(transfer, "os", proxy)
        setattr_(transfer, "rename_noreplace", rename_noreplace)


def run_files(folder: str, mode: str, files: list[list[str]]) -> None:
    with quarantine.Quarantine(folder, mode=mode) as q:  # type: ignore[arg-type]
        for path, relative, sha256 in files:
            q.put(path, relative, sha256=sha256)


def main() -> None:
    spec = json.loads(open(sys.argv[1]).read())

    def kill(what: str) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    counter = StepCounter(spec["kill_at"], kill)
    counter.install(setattr, force_copy=spec["force_copy"])
    run_files(spec["folder"], spec["mode"], spec["files"])
    print(counter.steps)


if __name__ == "__main__":
    main()
