"""`taglens index --compile` compiles the models (as `taglens analyze --compile` does) and stores
the eager numbers (within the 1e-5 that --compile documents)."""

from __future__ import annotations

import os
import sqlite3

import pytest

from ..conftest import photo
from .entry import taglens


def stored_tags(library) -> dict[tuple[str, str], float]:
    conn = sqlite3.connect(library / "library.db")
    rows = conn.execute("SELECT f.path, t.tag, t.score FROM tags t JOIN files f ON f.content = t.content").fetchall()
    conn.close()
    return {(path, tag): score for path, tag, score in rows}


@pytest.mark.slow
def test_index_compile_compiles_and_matches_eager(tmp_path, checkpoints):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        photo(64 + 8 * i, 48, seed=i).save(photos / f"p{i}.png")
    common = ("index", photos, "--tasks", "tag", "--tagger", checkpoints["joytag"], "--device", "cpu",
              "--tag-threshold", "0")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TORCH_LOGS="dynamo")
    eager = taglens(*common, "--library", tmp_path / "eager", env=env)
    assert eager.returncode == 0, eager.stderr
    assert "torchdynamo start tracing" not in eager.stderr
    compiled = taglens(*common, "--library", tmp_path / "compiled", "--compile", env=env, timeout=600)
    assert compiled.returncode == 0, compiled.stderr
    assert "torchdynamo start tracing forward" in compiled.stderr and "joytag_vit.py" in compiled.stderr
    a, b = stored_tags(tmp_path / "eager"), stored_tags(tmp_path / "compiled")
    assert a.keys() == b.keys() and len(a) >= 3
    assert max(abs(a[k] - b[k]) for k in a) < 1e-5
