"""``--dtype int8`` end to end through every command that loads a model (the installed entry
point) and the HTTP service: records come out, each with its fields, nothing is an error; and
``--verbose`` says which matmul route each model took."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..conftest import photo
from .entry import taglens


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("int8-photos")
    for i in range(3):
        photo(64 + 8 * i, 48, seed=i).save(folder / f"p{i}.png")
    return folder


def records(stdout: str) -> list[dict]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    assert lines and all(not r.get("error") for r in lines), lines
    return lines


def commands(checkpoints) -> dict[str, tuple[tuple, str]]:
    """command -> (its arguments before the photos folder, the field every record must have)."""
    return {
        "tag": (("tag", "--model", checkpoints["joytag"], "--format", "jsonl"), "tags"),
        "classify": (("classify", "--model", checkpoints["siglip16"], "--labels", "a cat,a dog"), "labels"),
        "embed": (("embed", "--model", checkpoints["siglip16"]), "embedding"),
        "nsfw": (("nsfw", "--model", checkpoints["vit"]), "nsfw"),
        "analyze": (("analyze", "--tasks", "tag,classify,nsfw,embed", "--tagger", checkpoints["joytag"],
                     "--siglip", checkpoints["siglip16"], "--nsfw-model", checkpoints["vit"],
                     "--labels", "a cat,a dog", "--format", "jsonl"), "nsfw"),
    }


@pytest.mark.parametrize("command", ["tag", "classify", "embed", "nsfw", "analyze"])
def test_each_command_runs_in_int8(command, checkpoints, photos):
    arguments, field = commands(checkpoints)[command]
    result = taglens(*arguments, photos, "--device", "cpu", "--dtype", "int8", "--verbose")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    got = records(result.stdout)
    assert len(got) == 3 and all(r.get(field) is not None for r in got), got
    assert "matmul route for" in result.stderr and "dynamic int8" in result.stderr, result.stderr


def test_verbose_says_the_float32_route(checkpoints, photos):
    for forced, said in (("onednn", "oneDNN float32"), ("default", "torch default float32")):
        result = taglens("tag", "--model", checkpoints["joytag"], photos, "--device", "cpu", "--verbose",
                         env={"TAGLENS_FLOAT32_ROUTE": forced})
        assert result.returncode == 0, result.stderr
        assert said in result.stderr, result.stderr
    quiet = taglens("tag", "--model", checkpoints["joytag"], photos, "--device", "cpu")
    assert "matmul route" not in quiet.stderr


def test_index_and_search_run_in_int8(checkpoints, photos, tmp_path):
    library = tmp_path / "lib"
    indexed = taglens("index", photos, "--library", library, "--tagger", checkpoints["joytag"], "--siglip",
                      checkpoints["siglip16"], "--nsfw-model", checkpoints["vit"], "--device", "cpu",
                      "--dtype", "int8")
    assert indexed.returncode == 0, indexed.stderr
    found = taglens("search", "a cat", "--format", "jsonl", "--dtype", "int8", "--device", "cpu", library=library)
    assert found.returncode == 0, found.stderr
    hits = [json.loads(line) for line in found.stdout.splitlines() if line.strip()]
    assert len(hits) == 3


def test_int8_on_a_gpu_is_one_clean_line(checkpoints, photos):
    result = taglens("tag", "--model", checkpoints["joytag"], photos, "--device", "cuda", "--dtype", "int8")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cuda" in result.stderr.lower()
