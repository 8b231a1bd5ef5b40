"""Run the installed ``taglens`` entry point as a user does: a subprocess, its stderr and exit code."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def entry_point() -> str:
    """The ``taglens`` console script of this Python environment (beside its interpreter)."""
    beside = Path(sys.executable).parent / "taglens"
    found = str(beside) if beside.is_file() else shutil.which("taglens")
    if not found:
        raise RuntimeError("the taglens entry point is not installed (pip install -e .)")
    return found


def run_taglens(*args: object, env: dict[str, str] | None = None, timeout: float = 300,
                cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    environment = dict(os.environ, HF_HUB_OFFLINE="1") | (env or {})
    return subprocess.run([entry_point(), *map(str, args)], capture_output=True, text=True, env=environment,
                          timeout=timeout, cwd=cwd)


def error_lines(stderr: str) -> list[str]:
    """The non-empty lines of stderr (a clean failure has exactly one)."""
    return [line for line in stderr.splitlines() if line.strip()]
