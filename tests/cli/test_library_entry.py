"""The library through the installed entry point with the tiny real checkpoints: only index and
import create a library; tag names are bound the same way in search filters and the tag command;
a search that finds nothing says so; index shows its total and an ETA."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
from pathlib import Path

import pytest

from ..conftest import photo
from .entry import TAGLENS, one_clean_line, taglens

READ_ONLY = [("search", "x"), ("search", "--tag", "dog"), ("duplicates",), ("library", "stats"),
             ("library", "verify"), ("library", "prune"), ("library", "prune", "--dry-run")]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, checkpoints) -> dict[str, Path]:
    """Six photos indexed (tag, nsfw, embed) by `taglens index` into a new library."""
    root = tmp_path_factory.mktemp("indexed")
    photos = root / "photos"
    photos.mkdir()
    for i in range(6):
        photo(64 + 8 * i, 48, seed=i).save(photos / f"p{i}.png")
    library = root / "lib"
    result = taglens("index", photos, "--library", library, "--tagger", checkpoints["joytag"], "--siglip",
                     checkpoints["siglip16"], "--nsfw-model", checkpoints["vit"], "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert (library / "library.db").is_file()
    return {"photos": photos, "library": library}


@pytest.mark.parametrize("command", READ_ONLY, ids=" ".join)
def test_a_path_without_a_library_is_refused_and_left_as_it_was(command, tmp_path):
    typo = tmp_path / "my-librray"
    result = taglens(*command, "--library", typo)
    assert result.returncode == 2
    assert f"no library at {typo} (no library.db in it)" in one_clean_line(result)
    assert not typo.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    from_env = taglens(*command, library=empty)  # $TAGLENS_LIBRARY naming a folder without one
    assert from_env.returncode == 2 and f"no library at {empty}" in from_env.stderr
    assert list(empty.iterdir()) == []


def test_verify_does_not_call_a_missing_library_ok(tmp_path):
    result = taglens("library", "verify", "--library", tmp_path / "nothing")
    assert result.returncode == 2 and "ok" not in result.stdout


def test_index_and_import_create_the_library(indexed, checkpoints, tmp_path):
    parquet = tmp_path / "all.parquet"
    analyzed = taglens("analyze", indexed["photos"], "--tasks", "tag,embed", "--tagger", checkpoints["joytag"],
                       "--siglip", checkpoints["siglip16"], "-f", "parquet", "-o", parquet)
    assert analyzed.returncode == 0, analyzed.stderr
    imported = taglens("library", "import", parquet, "--library", tmp_path / "new-lib")
    assert imported.returncode == 0, imported.stderr
    assert "6 rows from 1 file: 6 stored (0 URIs), 0 errors skipped" in imported.stderr
    assert (tmp_path / "new-lib" / "library.db").is_file()


def tags_in(indexed) -> set[str]:
    listed = taglens("search", "--format", "jsonl", "--limit", 100, library=indexed["library"])
    assert listed.returncode == 0, listed.stderr
    import json

    return {t["tag"] for line in listed.stdout.splitlines() for t in json.loads(line)["tags"]}


def test_tag_filters_match_with_spaces_and_any_case(indexed):
    carried = tags_in(indexed)
    tag = sorted(t for t in carried if "_" in t and t.replace("_", "").isalpha())[0]
    exact = taglens("search", "--tag", tag, "--format", "paths", library=indexed["library"])
    assert exact.returncode == 0 and exact.stdout.strip()
    for typed in (tag.replace("_", " "), tag.upper(), f"  {tag.replace('_', '  ').title()} "):
        again = taglens("search", "--tag", typed, "--format", "paths", library=indexed["library"])
        assert (again.returncode, again.stdout) == (0, exact.stdout), typed
    without = taglens("search", "--no-tag", tag.replace("_", " "), "--format", "paths", library=indexed["library"])
    assert set(without.stdout.split()).isdisjoint(exact.stdout.split())
    assert len(without.stdout.split()) + len(exact.stdout.split()) == 6


def test_an_unknown_tag_is_a_usage_error_naming_it_and_a_known_absent_one_finds_nothing(indexed):
    result = taglens("search", "a cat", "--tag", "lnog_hair", "--no-tag", "dgo", library=indexed["library"])
    assert result.returncode == 2 and result.stdout == ""
    line = one_clean_line(result)
    assert "has no tags named 'lnog_hair' (did you mean 'long_hair'?), 'dgo' (did you mean 'dog'?)" in line
    absent = sorted(set((Path(__file__).parents[1] / "fixtures/joytag-tiny/top_tags.txt").read_text().split())
                    - tags_in(indexed))[0]
    nothing = taglens("search", "--tag", absent, library=indexed["library"])
    assert nothing.returncode == 0 and nothing.stdout == ""
    assert nothing.stderr.strip() == f"taglens search: no results (with --tag {absent})"
    scored = taglens("search", "a cat", "--min-score", "0.99999", "--max-nsfw", "0", library=indexed["library"])
    assert scored.returncode == 0 and scored.stdout == ""
    assert "no results (with --max-nsfw 0, --min-score 0.99999)" in scored.stderr


def test_the_tag_command_binds_names_the_same_way(indexed, checkpoints):
    image = sorted(indexed["photos"].iterdir())[0]
    model = ["-m", checkpoints["joytag"], "--format", "txt"]
    plain = taglens("tag", image, *model)
    tags = plain.stdout.split("\t")[1].strip().split(", ")
    tag = next(t for t in tags if "_" in t and t.replace("_", "").isalpha())
    excluded = taglens("tag", image, *model, "--exclude", tag.replace("_", " ").upper())
    assert excluded.returncode == 0 and tag not in excluded.stdout.split("\t")[1].strip().split(", ")
    assert len(excluded.stdout.split("\t")[1].split(", ")) == len(tags) - 1
    typo = taglens("tag", image, *model, "--exclude", tag[1:])
    assert typo.returncode == 2 and f"the model has no tag named '{tag[1:]}'" in one_clean_line(typo)


def test_index_shows_a_total_and_an_eta_on_a_terminal(checkpoints, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(5):
        photo(50, 40, seed=10 + i).save(photos / f"q{i}.png")
    parent, child = pty.openpty()  # stderr a terminal of 120 columns, as when a person runs it
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([str(TAGLENS), "index", str(photos), "--library", str(tmp_path / "lib"), "--tasks",
                                "tag", "--tagger", str(checkpoints["joytag"]), "--batch-size", "1"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=child, env=env)
    os.close(child)
    seen = b""
    while True:
        ready, _, _ = select.select([parent], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(parent, 4096)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        seen += chunk
    os.close(parent)
    assert process.wait(timeout=120) == 0, seen.decode(errors="replace")
    text = seen.decode(errors="replace")
    assert "computing: 100%" in text and "5/5 [" in text, text
    assert "<00:00" in text, text  # tqdm's "elapsed<remaining": an ETA, which needs the total
