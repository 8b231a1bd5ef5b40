"""One job failing on one image loses nothing else: the other jobs' fields stay in the record, and
the failed job is named with its reason (``<task>_error``) in JSONL, CSV and Parquet, through the
installed ``taglens`` entry point, and on into the library (`taglens library import`), where the
next ``taglens index`` computes just the failed task again. The NSFW classifier is made to raise on
one poison image (tests/faults.py)."""

from __future__ import annotations

import csv
import io
import json
import sqlite3

import pyarrow.parquet as pq
import pytest

from ..conftest import photo
from ..faults import subprocess_env, write_poison
from .entry_point import taglens


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        photo(40 + i, 30, seed=i).save(images / f"good{i}.png")
    write_poison(images / "poison.png")
    return images


@pytest.fixture
def env(tmp_path):
    return subprocess_env(tmp_path / "faults", TAGLENS_TEST_POISON="nsfw")


def models(checkpoints, tasks="tag,nsfw,embed"):
    """The checkpoint flags of the tasks run (a flag for a task not run is a usage error)."""
    run = set(tasks.split(","))
    return (["--tagger", checkpoints["joytag"]] if "tag" in run else []) + (
        ["--siglip", checkpoints["siglip64"]] if run & {"classify", "embed"} else []) + (
        ["--nsfw-model", checkpoints["vit"]] if "nsfw" in run else [])


def analyze(checkpoints, folder, out, env, tasks="tag,nsfw,embed"):
    result = taglens("analyze", folder, "--tasks", tasks, *models(checkpoints, tasks), "--tag-threshold", "0.2",
                     "-b", "4", "-o", out, env=env)
    assert result.returncode == 0, result.stderr  # three images done, one partial: a success
    assert "4 images: 3 done, 1 partial, 0 errors" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    return result


def test_jsonl_keeps_the_other_jobs_fields_and_names_the_failed_one(checkpoints, folder, env, tmp_path):
    out = tmp_path / "all.jsonl"
    analyze(checkpoints, folder, out, env)
    records = {r["path"].rsplit("/", 1)[-1]: r for r in map(json.loads, out.read_text().splitlines())}
    poison = records.pop("poison.png")
    assert "error" not in poison and "nsfw" not in poison
    assert poison["tags"] and len(poison["embedding"]) == 32
    assert poison["nsfw_error"].startswith("nsfw failed on this image (RuntimeError: injected")
    assert not any(k.endswith("_error") for k in poison if k != "nsfw_error")
    for record in records.values():  # batched with the poison, retried alone: complete
        assert {"tags", "nsfw", "embedding"} <= set(record) and not any(k.endswith("error") for k in record)


def test_csv_has_a_column_per_job_error(checkpoints, folder, env, tmp_path):
    out = tmp_path / "all.csv"
    analyze(checkpoints, folder, out, env, tasks="tag,nsfw")
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in csv.DictReader(io.StringIO(out.read_text()))}
    assert list(rows["poison.png"]) == ["path", "error", "tags", "tag_scores", "nsfw_label", "nsfw_score",
                                        "nsfw_flagged", "nsfw_scores", "tag_error", "nsfw_error"]
    poison = rows.pop("poison.png")
    assert json.loads(poison["tags"]) and poison["nsfw_label"] == "" and poison["error"] == ""
    assert "injected" in poison["nsfw_error"] and poison["tag_error"] == ""
    assert all(r["nsfw_label"] and r["nsfw_error"] == "" for r in rows.values())


def test_parquet_then_library_import_keeps_the_results_and_index_retries_the_failed_task(
        checkpoints, folder, env, tmp_path):
    out = tmp_path / "all.parquet"
    analyze(checkpoints, folder, out, env)
    table = pq.read_table(out)
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in table.to_pylist()}
    poison = rows["poison.png"]
    assert poison["error"] is None and poison["nsfw"] is None and poison["tags"] and poison["embedding"]
    assert "injected" in poison["nsfw_error"] and poison["tag_error"] is None and poison["embed_error"] is None
    assert all(r["nsfw_error"] is None and r["nsfw"] for name, r in rows.items() if name != "poison.png")

    library = tmp_path / "lib"
    imported = taglens("library", "import", out, "--library", library)
    assert imported.returncode == 0, imported.stderr
    assert "4 stored" in imported.stderr
    db = sqlite3.connect(library / "library.db")
    failed = db.execute("SELECT f.path, m.task, e.error FROM task_errors e JOIN models m ON m.id = e.model "
                        "JOIN files f ON f.content = e.content").fetchall()
    assert [(p.rsplit("/", 1)[-1], task) for p, task, _ in failed] == [("poison.png", "nsfw")]
    assert "injected" in failed[0][2]
    counts = dict(db.execute("SELECT m.task, count(*) FROM models m JOIN (SELECT model FROM tag_sets UNION ALL "
                             "SELECT model FROM nsfw UNION ALL SELECT model FROM embeddings) r ON r.model = m.id "
                             "GROUP BY m.task").fetchall())
    assert counts == {"tag": 4, "embed": 4, "nsfw": 3}  # the poison's tags and embedding are kept
    db.close()

    # the classifier works now: the next index computes only the poison's NSFW result
    again = taglens("index", folder, "--library", library, "--tagger", checkpoints["joytag"], "--siglip",
                    checkpoints["siglip64"], "--nsfw-model", checkpoints["vit"], "--tag-threshold", "0.2")
    assert again.returncode == 0, again.stderr
    assert "4 files: 3 unchanged, 0 reused, 1 computed" in again.stderr, again.stderr
    db = sqlite3.connect(library / "library.db")
    assert db.execute("SELECT count(*) FROM task_errors").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM nsfw").fetchone() == (4,)


def test_a_single_job_failing_on_every_image_is_a_failure(checkpoints, folder, env, tmp_path):
    only = tmp_path / "only"
    only.mkdir()
    write_poison(only / "poison.png")
    result = taglens("nsfw", only, "--model", checkpoints["vit"], env=env)
    assert result.returncode == 1, result.stderr
    [record] = map(json.loads, result.stdout.splitlines())
    assert record["error"] == record["nsfw_error"] and "injected" in record["error"]
    assert "1 file: 0 flagged, 1 error" in result.stderr
