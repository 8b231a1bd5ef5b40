"""Exit statuses, the same for every command, through the installed entry point: 0 when at least one
image is done, 1 when the run failed, 2 for a usage error (click's own, and every error about the
values asked for: unknown tasks, tags, labels, templates, ranges, options of a task not run,
a folder without a library). Each usage error is one ``Error:`` line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import photo
from .entry import one_clean_line, taglens


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    photo(64, 48, 1).save(folder / "a.jpg")
    photo(40, 60, 2).save(folder / "b.png")
    return folder


@pytest.fixture(scope="module")
def bad_only(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad")
    (folder / "one.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (folder / "two.png").write_bytes(b"")
    return folder


# (command line, what the one error line must say); {p} photos, {j} JoyTag, {s} SigLIP, {v} ViT, {t} tmp
USAGE_ERRORS = [
    ("tag {p} -m {j} --exclude dgo", "no tag named 'dgo' (did you mean 'dog'?)"),
    ("tag {p} -m {j} --threshold 2", "Invalid value for '--threshold'"),
    ("tag {p} -m {j} --caption-ext .cap", "--caption-ext only applies with --captions"),
    ("classify {p} -m {s} -l cat --template no_placeholder", "has no '{{}}' where the label goes"),
    ("classify {p} -m {s}", "no labels"),
    ("embed", "nothing to embed"),
    ("embed {p} -o {t}/x.bin", "cannot tell the format"),
    ("nsfw {p} -m {v} --positive-label nope", "has no label 'nope'"),
    ("nsfw {p} -m {v} --threshold nan", "not a finite number"),
    ("analyze {p} --tasks tag,foo", "unknown: foo"),
    ("analyze {p} --nsfw-threshold 2", "Invalid value for '--nsfw-threshold'"),
    ("analyze {p} --tasks tag,nsfw --labels a,b", "--labels is for the classify task"),
    ("analyze {p} --tasks classify,embed --tagger {j}", "--tagger is for the tag task"),
    ("analyze {p} --tasks tag --tagger {j} --exclude dgo", "no tag named 'dgo'"),
    ("index {p} --library {t}/lib --tasks nope", "choose from tag, nsfw, embed"),
    ("index {p} --library {t}/lib --tasks embed --tag-threshold 0.5", "--tag-threshold is for the tag task"),
    ("search x --library {t}/typo", "no library at {t}/typo"),
    ("search x --library {t}/typo --limit 0", "Invalid value for '--limit'"),
    ("duplicates --library {t}/typo", "no library at {t}/typo"),
    ("duplicates --threshold 1.5", "Invalid value for '--threshold'"),
    ("library stats --library {t}/typo", "no library at {t}/typo"),
    ("library verify --library {t}/typo", "no library at {t}/typo"),
    ("library prune --dry-run --library {t}/typo", "no library at {t}/typo"),
    ("library import {t} --library {t}/typo", "no .parquet files"),
    ("serve --library {t}/typo", "no library at {t}/typo"),
    ("serve --port 70000", "Invalid value for '--port'"),
    ("serve --max-images 500", "--max-images (500) cannot exceed --queue-size (128)"),
]


def command_of(line: str) -> str:
    words = line.split()
    return " ".join(words[:2]) if words[0] == "library" else words[0]


@pytest.mark.parametrize("line,says", USAGE_ERRORS, ids=[f"{command_of(u[0])}: {u[1]}" for u in USAGE_ERRORS])
def test_every_usage_error_exits_2_with_one_line(line, says, photos, checkpoints, tmp_path):
    values = {"p": photos, "j": checkpoints["joytag"], "s": checkpoints["siglip16"], "v": checkpoints["vit"],
              "t": tmp_path}
    # serve without --library looks for one in $TAGLENS_LIBRARY, else the user data folder: neither here
    env = {"TAGLENS_LIBRARY": "", "XDG_DATA_HOME": str(tmp_path / "data")} if line.startswith("serve") else None
    result = taglens(*[part.format(**values) for part in line.split()], library=tmp_path / "default-lib", env=env)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert says.format(**values) in one_clean_line(result)
    assert "Usage: taglens" in result.stderr  # said as a usage error, with the command's usage line
    assert not (tmp_path / "typo").exists() and not (tmp_path / "default-lib").exists()
    assert not (tmp_path / "data").exists()


def test_every_command_has_a_usage_error_above():
    from taglens.cli import cli

    from .test_cli_basics import every_command

    covered = {command_of(line) for line, _ in USAGE_ERRORS}
    leaves = {name for name, command in every_command() if not hasattr(command, "commands")}
    assert leaves <= covered, f"no usage error listed for: {sorted(leaves - covered)}"
    assert cli.commands  # the walk found the commands


def test_a_run_where_no_image_is_done_exits_1(bad_only, checkpoints, tmp_path):
    tagged = taglens("tag", bad_only, "-m", checkpoints["joytag"])
    assert tagged.returncode == 1 and "2 images: 0 done, 2 errors" in tagged.stderr
    library = tmp_path / "lib"
    first = taglens("index", bad_only, "--library", library, "--tasks", "tag", "--tagger", checkpoints["joytag"])
    assert first.returncode == 1, first.stderr
    assert "2 files: 0 unchanged, 0 reused, 0 computed, 2 errors" in first.stderr
    # run again: nothing tried, and still nothing indexed
    again = taglens("index", bad_only, "--library", library, "--tasks", "tag", "--tagger", checkpoints["joytag"])
    assert again.returncode == 1 and "2 unchanged (2 failed before)" in again.stderr and "--retry-errors" in again.stderr


def test_a_run_where_some_image_is_done_exits_0(bad_only, photos, checkpoints, tmp_path):
    library = tmp_path / "lib"
    result = taglens("index", bad_only, photos, "--library", library, "--tasks", "tag", "--tagger", checkpoints["joytag"])
    assert result.returncode == 0, result.stderr
    assert "4 files: 0 unchanged, 0 reused, 2 computed, 2 errors" in result.stderr


def test_a_wrong_model_folder_says_what_it_lacks(photos, tmp_path):
    result = taglens("tag", photos, "--model", photos)
    assert result.returncode == 1
    assert (f"{photos.resolve()} is not a checkpoint folder: it has no config.json and no *.safetensors weights; "
            "a checkpoint folder, as the hub serves it, holds config.json and model.safetensors") in one_clean_line(result)
    missing = taglens("tag", photos, "--model", "nosuchdir", cwd=tmp_path)
    assert missing.returncode == 1
    assert "model folder 'nosuchdir' does not exist (a hub id has the form org/name" in one_clean_line(missing)
    assert "Hugging Face" not in missing.stderr  # said before asking the hub
