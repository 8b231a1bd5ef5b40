"""The library commands through click, with the fake models from tests/unit/library/fakes.py."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from taglens.cli import cli

from ..unit.library.conftest import make_photos, picture
from ..unit.library.fakes import FakeEmbedder, fake_models


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A photo folder, a library folder in $TAGLENS_LIBRARY, and the fakes in place of real models."""
    import taglens.library
    import taglens.library.models

    loaded_with = {}

    def fake_load_models(**kwargs):
        loaded_with.update(kwargs)
        chosen = tuple(t for t, k in (("tag", "tagger"), ("nsfw", "nsfw_model"), ("embed", "siglip")) if kwargs[k])
        return fake_models(tasks=chosen)[0]

    embedder = FakeEmbedder()
    monkeypatch.setattr(taglens.library.models, "load_models", fake_load_models)
    monkeypatch.setattr(taglens.library, "load_embedder", lambda model_id, revision, **kw: embedder)
    monkeypatch.setenv("TAGLENS_LIBRARY", str(tmp_path / "lib"))
    photos = tmp_path / "photos"
    make_photos(photos, 5)
    return {"photos": photos, "lib": tmp_path / "lib", "loaded_with": loaded_with, "tmp": tmp_path}


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result


def test_index_then_search_by_image(env):
    result = invoke("index", env["photos"], "--batch-size", 2)
    assert result.exit_code == 0, result.output
    assert "5 files: 0 unchanged, 0 reused, 5 computed" in result.output
    assert (env["lib"] / "library.db").exists()
    again = invoke("index", env["photos"])
    assert "5 files: 5 unchanged" in again.output
    target = sorted(env["photos"].iterdir())[3]
    result = invoke("search", "--image", target, "--format", "jsonl", "--limit", 2)
    lines = [json.loads(x) for x in result.output.splitlines()]
    assert lines[0]["path"] == str(target) and lines[0]["score"] == pytest.approx(1.0, abs=2e-3)
    assert set(lines[0]) == {"path", "score", "tags", "nsfw"} and len(lines) == 2
    paths = invoke("search", "--image", target, "--format", "paths", "--limit", 1).output.split()
    assert paths == [str(target)]
    table = invoke("search", "a sunny day", "--limit", 3).output.splitlines()
    assert len(table) == 3 and all(str(env["photos"]) in line for line in table)


def test_index_flags_reach_the_model_loader(env):
    result = invoke("index", env["photos"], "--tasks", "embed,tag", "--siglip", "some/siglip", "--tagger", "my/tagger",
                    "--tag-threshold", 0.3, "--device", "cpu", "--dtype", "bfloat16")
    assert result.exit_code == 0, result.output
    w = env["loaded_with"]
    assert (w["siglip"], w["tagger"], w["nsfw_model"], w["device"], w["dtype"], w["tag_threshold"]) == (
        "some/siglip", "my/tagger", None, "cpu", "bfloat16", 0.3)
    assert invoke("index", env["photos"], "--tasks", "nope").exit_code == 2


def test_library_option_wins_over_the_environment(env):
    other = env["tmp"] / "other"
    assert invoke("index", env["photos"], "--library", other).exit_code == 0
    assert (other / "library.db").exists() and not (env["lib"] / "library.db").exists()


def test_filters_and_duplicates(env):
    picture(0).save(env["photos"] / "copy0.jpg", quality=70)
    invoke("index", env["photos"])
    result = invoke("duplicates", "--format", "jsonl")
    groups = [json.loads(x) for x in result.stdout.splitlines()]
    assert [sorted(p.rsplit("/", 1)[1] for p in g["paths"]) for g in groups] == [["copy0.jpg", "img000.png"]]
    assert result.stderr == "duplicates: cosine >= 0.95 (the default) on fake/model-embed embeddings: 1 group\n"
    text = invoke("duplicates", "--threshold", "0.9")
    assert text.stdout.startswith("# 2 images") and "cosine >= 0.9 (--threshold)" in text.stderr
    assert invoke("duplicates", "-q").stderr == ""
    all_paths = invoke("search", "--max-nsfw", "1", "--format", "paths", "--limit", 100).output.split()
    assert len(all_paths) == 6
    none = invoke("search", "--max-nsfw", "0", "--format", "paths")
    assert none.stdout == "" and none.stderr == "taglens search: no results (with --max-nsfw 0)\n"


def test_stats_verify_prune(env):
    invoke("index", env["photos"])
    stats = json.loads(invoke("library", "stats", "--json").output)
    assert stats["files"] == 5 and stats["images"] == 5 and stats["vector_index"]["state"] == "fresh"
    assert {m["task"] for m in stats["models"]} == {"tag", "nsfw", "embed"}
    assert "files        5" in invoke("library", "stats").output
    result = invoke("library", "verify")
    assert result.exit_code == 0 and result.output.strip().endswith("ok")
    (env["photos"] / "img000.png").unlink()
    assert "1 file is gone" in invoke("library", "verify").output
    dry = invoke("library", "prune", "--dry-run").output
    assert "would remove 1 missing file, 1 unreferenced image" in dry
    assert json.loads(invoke("library", "stats", "--json").output)["files"] == 5
    assert "removed 1 missing file" in invoke("library", "prune").output
    assert json.loads(invoke("library", "stats", "--json").output)["files"] == 4


def test_errors_exit_cleanly(env):
    assert invoke("index", env["photos"], "--tasks", "tag").exit_code == 0
    result = CliRunner().invoke(cli, ["search", "x"])
    assert result.exit_code == 1 and "no embeddings yet" in result.output
    empty = env["tmp"] / "empty"
    empty.mkdir()
    result = CliRunner().invoke(cli, ["index", str(empty)])
    assert result.exit_code == 1 and "no images found" in result.output


def test_every_library_command_has_an_example():
    for name in ("index", "search", "duplicates", "library"):
        command = cli.commands[name]
        commands = [command] + list(getattr(command, "commands", {}).values())
        for c in commands:
            assert "Example:" in (c.help or ""), c.name


def test_library_subcommands():
    assert set(cli.commands["library"].commands) == {"stats", "verify", "prune", "import"}


def test_new_photos_need_no_flag_to_search(env):
    invoke("index", env["photos"])
    make_photos(env["photos"], 1, start=40)
    invoke("index", env["photos"])
    result = invoke("search", "--image", env["photos"] / "img040.png", "--format", "paths", "--limit", 1)
    assert result.output.split() == [str(env["photos"] / "img040.png")]


def test_index_keeps_the_librarys_checkpoint_without_a_flag(env):
    invoke("index", env["photos"], "--siglip", "my/siglip", "--tagger", "my/tagger")
    # the fakes name their models fake/model-<task>; the library now reports those as current
    invoke("index", env["photos"])
    w = env["loaded_with"]
    assert (w["siglip"], w["tagger"], w["nsfw_model"]) == ("fake/model-embed", "fake/model-tag", "fake/model-nsfw")
