"""A Ray worker setup hook for the tests: the first time a worker prepares a file whose name
starts with ``die-once``, the worker process exits (as a lost node or an OOM kill would end it),
leaving a ``.died`` marker beside the file so the retried task goes through."""

from __future__ import annotations

import os


def install() -> None:
    from taglens import engine

    original = engine.prepare_source

    def prepare_source(source, *args, **kwargs):
        name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else ""
        if os.path.basename(name).startswith("die-once"):
            marker = name + ".died"
            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)
        return original(source, *args, **kwargs)

    engine.prepare_source = prepare_source
