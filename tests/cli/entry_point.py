"""Running the installed ``taglens`` entry point as a user does, in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TAGLENS = Path(sys.executable).with_name("taglens")  # the console script beside this interpreter


def taglens(*args: object, env: dict[str, str] | None = None, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """``taglens ARGS...``: its exit status, stdout and stderr (text)."""
    assert TAGLENS.exists(), f"{TAGLENS}: the taglens entry point is not installed (pip install -e .)"
    return subprocess.run([str(TAGLENS), *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def popen(*args: object, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    assert TAGLENS.exists(), f"{TAGLENS}: the taglens entry point is not installed (pip install -e .)"
    return subprocess.Popen([str(TAGLENS), *map(str, args)], env=env, **kwargs)
