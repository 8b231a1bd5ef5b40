"""Index a folder with the slow fake models: the process the kill test shoots (not a public entry point).

    python -m tests.unit.library.index_script LIBRARY FOLDER CALL_LOG DELAY
"""

from __future__ import annotations

import sys

from taglens.engine import EngineOptions
from taglens.library import Library

from .fakes import fake_models


def main(library: str, folder: str, log: str, delay: str) -> None:
    sources, _ = fake_models(delay=float(delay), log=log)
    with Library.open(library, create=True) as lib:
        report = lib.index([folder], sources, options=EngineOptions(batch_size=2, workers=2))
    print(report.line(), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
