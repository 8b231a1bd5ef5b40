"""``taglens nsfw``: output formats, summary, errors, quarantine (move, copy, clashes, nested
folders, resume after a real SIGKILL, undo) through click's CliRunner."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from taglens.cli import cli
from taglens.errors import ImageDecodeError
from taglens.io.decode import decode_image
from taglens.quarantine import JOURNAL_NAME

from ..trees import assert_each_file_once, moved_map, snapshot, write_images

SRC = str(Path(__file__).resolve().parents[2] / "src")
NAMES = ["a.png", "b.png", "sub/a.png", "sub/deep/c.png", "sub/deep/d.png", "e.png", "f.png", "g.png"]


def invoke(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, ["nsfw", *map(str, args)], input=input, catch_exceptions=False)


def pipeline_scores(folder, paths):
    """The transformers pipeline on the images taglens decodes (alpha onto white, as documented)."""
    from transformers import pipeline

    pipe = pipeline("image-classification", model=str(folder), top_k=None)
    return [{d["label"]: d["score"] for d in out} for out in pipe([decode_image(p) for p in paths])]


def test_jsonl_records_equal_the_pipeline_with_errors_and_a_summary(checkpoints, image_dir):
    result = invoke(image_dir, "--model", checkpoints["vit"], "-b", "2")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    paths = sorted(str(p) for p in image_dir.rglob("*") if p.is_file())
    assert sorted(r["path"] for r in records) == paths
    [broken] = [r for r in records if "error" in r]
    with pytest.raises(ImageDecodeError) as decode_error:
        decode_image(image_dir / "broken.jpg")
    assert broken == {"path": str(image_dir / "broken.jpg"), "error": decode_error.value.reason}
    good = [r for r in records if "error" not in r]
    expected = pipeline_scores(checkpoints["vit"], [r["path"] for r in good])
    for record, reference in zip(good, expected):
        assert set(record) == {"path", "nsfw"}
        nsfw = record["nsfw"]
        assert set(nsfw) == {"label", "score", "scores", "flagged"}
        assert nsfw["scores"] == pytest.approx(reference, abs=1e-5)
        assert nsfw["label"] == max(reference, key=reference.get)
        assert nsfw["flagged"] == (nsfw["scores"]["nsfw"] >= 0.5)
    flagged = sum(r["nsfw"]["flagged"] for r in good)
    assert result.stderr.strip().splitlines()[-1].startswith(f"{len(paths)} files: {flagged} flagged, 1 error")


def test_csv_output_to_a_file_and_a_threshold(checkpoints, image_dir, tmp_path):
    out = tmp_path / "nsfw.csv"
    result = invoke(image_dir, "--model", checkpoints["vit"], "-f", "csv", "-o", out, "--threshold", "0.999", "-q")
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert list(rows[0]) == ["path", "error", "nsfw_label", "nsfw_score", "nsfw_flagged", "nsfw_scores", "nsfw_error"]
    good = [r for r in rows if not r["error"]]
    assert len(good) == 4 and all(r["nsfw_flagged"] == ("true" if float(json.loads(r["nsfw_scores"])["nsfw"]) >= 0.999
                                                         else "false") for r in good)
    assert all(json.loads(r["nsfw_scores"])[r["nsfw_label"]] == float(r["nsfw_score"]) for r in good)


def test_positive_label_errors_and_usage_errors(checkpoints, image_dir, tmp_path):
    result = invoke(image_dir, "--model", checkpoints["vit"], "--positive-label", "porn,hentai")
    assert result.exit_code == 2 and "its labels are 'normal', 'nsfw'" in result.stderr
    result = invoke("--undo", image_dir, image_dir)
    assert result.exit_code == 2 and "--undo takes only the journal" in result.stderr
    result = invoke(image_dir, "--move-to", tmp_path / "a", "--copy-to", tmp_path / "b")
    assert result.exit_code == 2 and "exclude each other" in result.stderr
    result = invoke()
    assert result.exit_code == 2 and "Missing argument" in result.stderr
    result = invoke(image_dir / "sub", "--model", checkpoints["vit"], "--move-to", image_dir)
    assert result.exit_code == 2 and "inside the quarantine folder" in result.stderr


def test_cli_defaults_match_the_library():
    from taglens.cli import nsfw as command
    from taglens.models.vit_classifier import CONFIG, DEFAULT_POSITIVE_LABEL

    defaults = {p.name: p.default for p in command.nsfw.params}
    assert (defaults["model"], defaults["threshold"]) == (CONFIG.hub_id, CONFIG.threshold)
    assert defaults["positive_label"] == DEFAULT_POSITIVE_LABEL


def test_move_keeps_nested_paths_never_overwrites_and_undo_restores(checkpoints, tmp_path):
    source, q = tmp_path / "photos", tmp_path / "q"
    original = write_images(source, NAMES)
    before_q = write_images(q, ["a.png", "sub/deep/c.png"], size=60)  # names already taken
    ranked = sorted(json.loads(x)["nsfw"]["scores"]["nsfw"]
                    for x in invoke(source, "--model", checkpoints["vit"], "-q").stdout.splitlines())
    threshold = (ranked[2] + ranked[3]) / 2  # a threshold that leaves some files alone
    result = invoke(source, "--model", checkpoints["vit"], "--threshold", threshold, "--move-to", q)
    assert result.exit_code == 0, result.output
    records = {json.loads(x)["path"]: json.loads(x)["nsfw"] for x in result.stdout.splitlines()}
    flagged = {p for p, n in records.items() if n["flagged"]}
    assert 0 < len(flagged) < len(NAMES)
    assert_each_file_once(original, source, q, before_q=before_q)
    moved = moved_map(q / JOURNAL_NAME)
    assert set(moved) == {os.path.abspath(p) for p in flagged}
    for src, dst in moved.items():
        rel = os.path.relpath(src, source)
        stem, ext = os.path.splitext(rel)
        assert os.path.relpath(dst, q) in (rel, f"{stem}-1{ext}")  # its path, or the next free name
        assert snapshot(q)[os.path.relpath(dst, q)] == original[rel]
    assert f"{len(flagged)} moved to {q}" in result.stderr
    undone = invoke("--undo", q / JOURNAL_NAME)
    assert undone.exit_code == 0 and f"undo: {len(flagged)} restored" in undone.stderr
    assert snapshot(source) == original and snapshot(q) == before_q


def test_copy_to_keeps_originals_and_a_rerun_copies_nothing_twice(checkpoints, tmp_path):
    source, q = tmp_path / "photos", tmp_path / "q"
    original = write_images(source, NAMES)
    for _ in range(2):
        result = invoke(source, "--model", checkpoints["vit"], "--threshold", 0, "--copy-to", q)
        assert result.exit_code == 0, result.output
    assert "8 already copied" in result.stderr
    assert_each_file_once(original, source, q, copies=True)
    assert sorted(snapshot(q)) == sorted(NAMES)
    assert invoke("--undo", q).exit_code == 0  # a folder stands for its journal
    assert snapshot(source) == original and snapshot(q) == {}


def test_files_given_alone_and_from_stdin_and_a_quarantine_inside_the_input(checkpoints, tmp_path):
    source = tmp_path / "photos"
    original = write_images(source, NAMES)
    q = source / "quarantine"  # inside the input folder: never rescanned
    stdin = f"{source / 'sub'}\n"
    result = invoke(source / "a.png", "-", "--model", checkpoints["vit"], "--threshold", 0, "--move-to", q, input=stdin)
    assert result.exit_code == 0, result.output
    now = snapshot(q)
    assert set(now) == {"a.png", "a-1.png", "deep/c.png", "deep/d.png"}  # sub/ is the root of its files
    assert now["a.png"] == original["a.png"] and now["a-1.png"] == original["sub/a.png"]
    again = invoke(source, "--model", checkpoints["vit"], "--threshold", 0, "--move-to", q)
    assert again.exit_code == 0
    assert not [x for x in again.stdout.splitlines() if "quarantine" in json.loads(x)["path"]]
    assert len(snapshot(q)) == len(NAMES)
    assert invoke("--undo", q).exit_code == 0
    assert snapshot(source) == original


def test_a_file_that_cannot_be_moved_is_reported_and_fails_the_run(checkpoints, tmp_path):
    source, q = tmp_path / "photos", tmp_path / "q"
    write_images(source, ["a.png"])
    (source / "link.png").symlink_to(source / "a.png")
    result = invoke(source, "--model", checkpoints["vit"], "--threshold", 0, "--move-to", q)
    assert result.exit_code == 1
    assert f"not moved {source / 'link.png'}: is a symbolic link" in result.stderr
    assert "1 moved" in result.stderr and "1 failed" in result.stderr


SLOW_FSYNC = """
import os, sys, time
real = os.fsync
def slow(fd):
    time.sleep(0.03)
    return real(fd)
os.fsync = slow
from taglens.cli import main
main()
"""


@pytest.mark.parametrize("kill_after,delay", [(1, 0.0), (3, 0.045), (5, 0.075)], ids=["intent1", "intent3", "intent5"])
def test_sigkill_mid_run_then_resume_and_undo(checkpoints, tmp_path, kill_after, delay):
    """Kill the real command with SIGKILL while it moves files (each fsync slowed by 30 ms so
    the kill lands mid-run: ``delay`` after the k-th intent appears), run the same command
    again to resume, then undo."""
    source, q = tmp_path / "photos", tmp_path / "q"
    original = write_images(source, NAMES)
    before_q = write_images(q, ["sub/a.png"], size=60)
    args = [source, "--model", checkpoints["vit"], "--threshold", 0, "--move-to", q, "-b", "1", "-q"]
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen([sys.executable, "-c", SLOW_FSYNC, "nsfw", *map(str, args)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    journal = q / JOURNAL_NAME
    deadline = time.monotonic() + 60
    while sum(x["op"] == "intent" for x in safe_lines(journal)) < kill_after:
        assert child.poll() is None, child.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.002)
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    child.stderr.close()
    present = set(snapshot(source).values()) | set(snapshot(q).values())
    assert set(original.values()) <= present  # nothing lost at the moment of the kill
    assert snapshot(source)  # the kill came before the end

    resumed = invoke(*args[:-1])
    assert resumed.exit_code == 0, resumed.output
    assert_each_file_once(original, source, q, before_q=before_q)
    assert snapshot(source) == {}
    assert len(moved_map(journal)) == len(NAMES)
    assert invoke("--undo", journal).exit_code == 0
    assert snapshot(source) == original and snapshot(q) == before_q


def safe_lines(journal: Path) -> list[dict]:
    """The complete lines of a journal being written."""
    try:
        text = journal.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]

