"""kill -9 at random moments during indexing, then run again: every image present exactly once,
the database intact, and nothing recomputed that was committed."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from taglens.io.decode import decode_image

from .conftest import make_photos
from .fakes import Pixels

ROOT = Path(__file__).resolve().parents[3]
N = 24


def pixel_key(path) -> str:
    import hashlib

    return hashlib.sha256(Pixels()(decode_image(str(path))).tobytes()).hexdigest()[:16]


def start(library, folder, log):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    return subprocess.Popen([sys.executable, "-m", "tests.unit.library.index_script", str(library), str(folder),
                             str(log), "0.04"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def committed(library) -> set[str]:
    """The paths committed so far; none when the kill came before the schema was written."""
    conn = sqlite3.connect(library / "library.db")
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'files'").fetchone() is None:
            return set()
        return {r[0] for r in conn.execute("SELECT path FROM files WHERE status = 'ok'")}
    finally:
        conn.close()


def computed(log: Path) -> Counter:
    return Counter(log.read_text().split("\n")) if log.exists() else Counter()


@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(4))
def test_killed_indexing_resumes_without_loss_or_recomputation(tmp_path, attempt):
    folder = tmp_path / "photos"
    paths = make_photos(folder, N)
    keys = {str(p): pixel_key(p) for p in paths}
    library, log1, log2 = tmp_path / "lib", tmp_path / "calls1.log", tmp_path / "calls2.log"
    proc = start(library, folder, log1)
    # wait until the database exists, then shoot at a random moment of the run
    deadline = time.monotonic() + 60
    while not (library / "library.db").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(random.Random(attempt).uniform(0.0, 1.2))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done_before = committed(library) if (library / "library.db").exists() else set()
    print("committed before the kill:", len(done_before), "of", N)

    proc = start(library, folder, log2)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()

    conn = sqlite3.connect(library / "library.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    paths_in_db = [r[0] for r in conn.execute("SELECT path FROM files WHERE status = 'ok'")]
    assert sorted(paths_in_db) == sorted(keys)  # every image, exactly once
    for table in ("tag_sets", "nsfw", "embeddings"):
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == N
    conn.close()
    second = computed(log2)
    for path in done_before:  # committed before the kill: not computed again
        for task in ("tag", "nsfw", "embed"):
            assert second[f"{task} {keys[path]}"] == 0, path
    for path in set(keys) - done_before:  # the rest: computed exactly once by the second run
        for task in ("tag", "nsfw", "embed"):
            assert second[f"{task} {keys[path]}"] == 1, path
