"""The installed ``taglens`` console script, run as a user runs it: a subprocess, its own stdin,
stdout, stderr and exit status, offline, with the library in a folder of the test's own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# the console script pip installed beside this interpreter (never skipped: a missing entry point fails)
TAGLENS = Path(sys.executable).with_name("taglens")


def taglens(*args: object, library: Path | None = None, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``taglens ARGS...``; ``library`` becomes $TAGLENS_LIBRARY (else it points at a folder
    that does not exist, so no test ever touches the user's own library)."""
    assert TAGLENS.is_file(), f"{TAGLENS} is missing: pip install -e . installs the taglens entry point"
    full = {**os.environ, "HF_HUB_OFFLINE": "1", "TAGLENS_LIBRARY": str(library or "/nonexistent/taglens-library"),
            **(env or {})}
    return subprocess.run([str(TAGLENS), *map(str, args)], capture_output=True, text=True, env=full, cwd=cwd,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def one_clean_line(result: subprocess.CompletedProcess[str]) -> str:
    """The error line of a failed run, after checking there is no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]
