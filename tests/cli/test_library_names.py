"""A file name whose bytes are not UTF-8 (legal on Linux) through the installed entry point:
indexed, found by text and by tag, printed as its own bytes (``-f paths``, the table) and as a
``\\udcXX`` escape in JSON lines (valid UTF-8; ``os.fsencode(json.loads(line)["path"])`` gives
the bytes back), and in the library's reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ..conftest import photo
from .entry import TAGLENS

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="names that are not UTF-8 are a POSIX matter")


def run(*args: object, library) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TAGLENS_LIBRARY=str(library))
    argv = [os.fsencode(a if isinstance(a, (str, os.PathLike)) else str(a)) for a in args]
    return subprocess.run([os.fsencode(TAGLENS), *argv], capture_output=True, env=env, timeout=300)


def test_a_name_that_is_not_utf8_is_indexed_searched_and_shown(tmp_path, checkpoints):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        photo(64 + 8 * i, 48, seed=i).save(photos / f"p{i}.png")
    raw = os.fsencode(photos) + b"/bad\xff\xfe.png"
    photo(80, 60, seed=7).save(os.fsdecode(raw))
    library = tmp_path / "lib"
    indexed = run("index", photos, "--tagger", checkpoints["joytag"], "--siglip", checkpoints["siglip16"],
                  "--nsfw-model", checkpoints["vit"], "--device", "cpu", "--tag-threshold", "0", library=library)
    assert indexed.returncode == 0, indexed.stderr
    assert b"4 files: 0 unchanged, 0 reused, 4 computed, 0 errors" in indexed.stderr

    paths = run("search", "a photo", "-f", "paths", "--limit", "10", library=library)
    assert paths.returncode == 0, paths.stderr
    assert raw in paths.stdout.splitlines()
    table = run("search", "a photo", "--limit", "10", library=library)
    assert raw in table.stdout

    lines = run("search", "a photo", "-f", "jsonl", "--limit", "10", library=library)
    hits = [json.loads(line.decode("utf-8")) for line in lines.stdout.splitlines()]  # strict UTF-8
    [bad] = [h for h in hits if os.fsencode(h["path"]) == raw]
    assert b"\\udcff\\udcfe" in lines.stdout
    tag = bad["tags"][0]["tag"]
    by_tag = run("search", "--tag", tag, "-f", "jsonl", "--limit", "10", library=library)
    assert raw in {os.fsencode(json.loads(line)["path"]) for line in by_tag.stdout.splitlines()}

    groups = run("duplicates", "--threshold", "-1", "-f", "jsonl", library=library)
    assert raw in {os.fsencode(p) for line in groups.stdout.splitlines() for p in json.loads(line.decode())["paths"]}
    assert run("library", "verify", library=library).returncode == 0
    stats = json.loads(run("library", "stats", "--json", library=library).stdout.decode("utf-8"))
    assert (stats["files"], stats["indexed"]) == (4, 4)
    again = run("index", photos, "--tagger", checkpoints["joytag"], "--siglip", checkpoints["siglip16"],
                "--nsfw-model", checkpoints["vit"], "--device", "cpu", "--tag-threshold", "0", library=library)
    assert b"4 files: 4 unchanged" in again.stderr
