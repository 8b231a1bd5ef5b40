"""``taglens analyze``: one pass equals the single-job commands, decodes once, streams, resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from taglens.engine import prepare as engine_module
from taglens.cli import cli

from ..conftest import photo

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture
def folder(image_dir):
    """Four good images of different kinds and one corrupt file (tests/conftest.py)."""
    return image_dir


def model_args(checkpoints, tasks: str = "tag,classify,nsfw,embed"):
    """The checkpoint flags of the tasks run (a flag for a task not run is a usage error)."""
    run = set(tasks.split(","))
    return (["--tagger", str(checkpoints["joytag"])] if "tag" in run else []) + (
        ["--siglip", str(checkpoints["siglip64"])] if run & {"classify", "embed"} else []) + (
        ["--nsfw-model", str(checkpoints["vit"])] if "nsfw" in run else [])


def run_cli(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result


def jsonl(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def by_path(records):
    return {r["path"]: r for r in records}


def test_analyze_equals_the_single_job_commands(checkpoints, folder):
    labels = "a cat,a dog,a plane"
    result = run_cli("analyze", folder, "--tasks", "tag,classify,nsfw,embed", "--labels", labels,
                     *model_args(checkpoints), "--tag-threshold", "0.2", "-b", "3", "-q")
    assert result.exit_code == 0, result.output
    combined = by_path(jsonl(result.output))
    assert len(combined) == 5

    tags = by_path(jsonl(run_cli("tag", folder, "--model", checkpoints["joytag"], "--threshold", "0.2", "-q").output))
    classes = by_path(jsonl(run_cli("classify", folder, "--model", checkpoints["siglip64"], "--labels", labels,
                                    "-q").output))
    nsfw = by_path(jsonl(run_cli("nsfw", folder, "--model", checkpoints["vit"], "-q").output))
    out = folder.parent / "emb.jsonl"
    assert run_cli("embed", folder, "--model", checkpoints["siglip64"], "-o", out, "-q").exit_code == 0
    embeds = by_path(jsonl(out.read_text()))

    for path, record in combined.items():
        if path.endswith("broken.jpg"):
            assert set(record) == {"path", "error"}
            for single in (tags, classes, nsfw, embeds):
                assert single[path]["error"] == record["error"]
            continue
        assert [t["tag"] for t in record["tags"]] == [t["tag"] for t in tags[path]["tags"]]
        assert np.allclose([t["score"] for t in record["tags"]], [t["score"] for t in tags[path]["tags"]], atol=1e-6)
        assert [x["label"] for x in record["labels"]] == [x["label"] for x in classes[path]["labels"]]
        assert np.allclose([x["score"] for x in record["labels"]], [x["score"] for x in classes[path]["labels"]],
                           atol=1e-6)
        assert record["nsfw"]["label"] == nsfw[path]["nsfw"]["label"]
        assert record["nsfw"]["flagged"] == nsfw[path]["nsfw"]["flagged"]
        assert abs(record["nsfw"]["score"] - nsfw[path]["nsfw"]["score"]) < 1e-6
        assert np.allclose(record["embedding"], embeds[path]["embedding"], atol=1e-6)


def test_each_image_is_decoded_once_however_many_tasks(checkpoints, folder, monkeypatch):
    calls: list[str] = []
    lock = threading.Lock()
    real = engine_module.decode_bytes

    def counting(data, options, *, name):
        with lock:
            calls.append(name)
        return real(data, options, name=name)

    monkeypatch.setattr(engine_module, "decode_bytes", counting)
    result = run_cli("analyze", folder, "--tasks", "tag,classify,nsfw,embed", "--labels", "a,b",
                     *model_args(checkpoints), "-q")
    assert result.exit_code == 0
    files = sorted(str(p) for p in folder.rglob("*") if p.is_file())
    assert sorted(calls) == files  # every file once, the broken one too


def test_a_corrupt_file_gives_one_error_record_and_the_rest_complete(checkpoints, folder):
    result = run_cli("analyze", folder, "--tasks", "tag,nsfw", *model_args(checkpoints, "tag,nsfw"), "-q")
    records = jsonl(result.output)
    errors = [r for r in records if "error" in r]
    assert len(records) == 5 and len(errors) == 1 and errors[0]["path"].endswith("broken.jpg")
    assert all("tags" in r and "nsfw" in r and "labels" not in r and "embedding" not in r
               for r in records if "error" not in r)
    assert result.exit_code == 0


def test_parquet_output_has_every_field_and_the_error_row(checkpoints, folder, tmp_path):
    out = tmp_path / "all.parquet"
    result = run_cli("analyze", folder, "--tasks", "tag,classify,nsfw,embed", "--labels", "a cat,a dog",
                     *model_args(checkpoints), "-f", "parquet", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.column_names == ["path", "error", "sha256", "size", "mtime", "width", "height",
                                  "tags", "labels", "nsfw", "embedding",
                                  "tag_error", "classify_error", "nsfw_error", "embed_error"]
    rows = {r["path"]: r for r in table.to_pylist()}
    broken = rows[str(folder / "broken.jpg")]
    assert broken["error"] and broken["embedding"] is None and broken["tags"] is None
    good = rows[str(folder / "a.jpg")]
    assert good["width"] == 64 and good["height"] == 48 and len(good["sha256"]) == 64
    assert len(good["embedding"]) == 32 and abs(np.linalg.norm(good["embedding"]) - 1) < 1e-5
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert meta["taglens.tag.model_id"] == str(checkpoints["joytag"].resolve())


def test_usage_errors(checkpoints, folder):
    assert run_cli("analyze", folder, "--tasks", "tag,wat").exit_code != 0
    missing_labels = run_cli("analyze", folder, "--tasks", "classify", *model_args(checkpoints, "classify"))
    assert missing_labels.exit_code != 0 and "labels" in missing_labels.output
    assert run_cli("analyze", folder, "--resume", *model_args(checkpoints, "tag,nsfw")).exit_code == 2
    assert run_cli("analyze", folder, "--tasks", "nsfw", "--captions", *model_args(checkpoints, "nsfw")).exit_code == 2


def test_captions_from_analyze(checkpoints, folder):
    result = run_cli("analyze", folder, "--tasks", "tag,nsfw", *model_args(checkpoints, "tag,nsfw"), "--captions",
                     "--tag-top-k", "2", "-q")
    assert result.exit_code == 0
    caption = (folder / "a.txt").read_text()
    assert caption.endswith("\n") and len(caption.strip().split(", ")) == 2


# --- killed and resumed ----------------------------------------------------------------------------

def start_analyze(args, env=None):
    return subprocess.Popen([sys.executable, "-m", "taglens", "analyze", *map(str, args)],
                            env=dict(os.environ, PYTHONPATH=SRC, **(env or {})),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.parametrize("kill_after", [3, 17, 41])
def test_resume_after_kill_ends_with_each_image_exactly_once(checkpoints, tmp_path, kill_after):
    images = tmp_path / "many"
    images.mkdir()
    for i in range(60):
        photo(24 + i % 7, 20 + i % 5, seed=i).save(images / f"{i:03d}.png")
    (images / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "out.jsonl"
    args = [images, "--tasks", "tag,nsfw", *model_args(checkpoints, "tag,nsfw"), "-o", out, "--resume", "-b", "1", "-q"]
    child = start_analyze(args)
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= kill_after:
            break
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    written = out.read_bytes().count(b"\n")
    assert kill_after <= written < 61, "the kill should land mid-run"
    done = subprocess.run([sys.executable, "-m", "taglens", "analyze", *map(str, args)],
                          env=dict(os.environ, PYTHONPATH=SRC), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    paths = [json.loads(line)["path"] for line in out.read_text().splitlines()]
    assert sorted(paths) == sorted(str(p) for p in images.iterdir())
    assert len(paths) == len(set(paths)) == 61


# --- memory does not grow with the number of inputs ---------------------------------------------------

MEASURE = """
import resource, sys
from taglens.cli import cli
status = cli.main(sys.argv[1:], prog_name="taglens", standalone_mode=False)
assert status in (0, None), status
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_kb(checkpoints, image: Path, count: int, out: Path) -> int:
    listing = out.with_suffix(".txt")
    listing.write_text((str(image) + "\n") * count)
    args = ["analyze", "-", "--tasks", "tag,nsfw", *model_args(checkpoints, "tag,nsfw"), "-o", str(out), "-b", "8", "-q"]
    with open(listing) as stdin:
        result = subprocess.run([sys.executable, "-c", MEASURE, *args], stdin=stdin, capture_output=True, text=True,
                                env=dict(os.environ, PYTHONPATH=SRC), timeout=600)
    assert result.returncode == 0, result.stderr
    assert out.read_text().count("\n") == count
    return int(result.stdout.strip().splitlines()[-1])


def test_peak_memory_does_not_grow_with_input_count(checkpoints, tmp_path):
    image = tmp_path / "one.png"
    photo(96, 64).save(image)
    small = peak_rss_kb(checkpoints, image, 100, tmp_path / "small.jsonl")
    large = peak_rss_kb(checkpoints, image, 3000, tmp_path / "large.jsonl")
    assert large <= small * 1.10, (small, large)
