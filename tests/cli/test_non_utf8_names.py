"""A file name that is not UTF-8 (``bad\\xff\\xfe.jpg``, legal on Linux) through every output of the
installed ``taglens``: JSON lines keep it exactly (``\\udcXX`` escapes), CSV, Parquet, text and
``.paths.txt`` in the documented ``\\xNN`` form; captions are written beside it; the quarantine moves
it, journals it and puts it back."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from ..conftest import photo
from .entry import taglens

BAD = b"bad\xff\xfe.jpg"
SHOWN = "bad\\xff\\xfe.jpg"  # its printable form in text columns

pytestmark = pytest.mark.skipif(os.name != "posix" or os.fsencode("\udcff") != b"\xff",
                                reason="needs a file system that takes any bytes in a name")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    photo(64, 48, 1).save(os.fsdecode(os.fsencode(images) + b"/" + BAD), format="JPEG")
    photo(64, 48, 2).save(images / "good.png")
    return images


def bad_path(folder: Path) -> str:
    return os.fsdecode(os.fsencode(folder) + b"/" + BAD)


def test_json_lines_keep_the_exact_bytes(checkpoints, folder, tmp_path):
    for args in ([], ["--no-scores"]):
        out = tmp_path / f"tags{len(args)}.jsonl"
        result = taglens("tag", folder, "--model", checkpoints["joytag"], "-o", out, "-q", *args)
        assert result.returncode == 0, result.stderr
        out.read_bytes().decode("utf-8")  # valid UTF-8 throughout
        paths = [json.loads(line)["path"] for line in out.read_text(encoding="utf-8").splitlines()]
        assert sorted(os.fsencode(p) for p in paths) == sorted([os.fsencode(bad_path(folder)),
                                                                 os.fsencode(folder / "good.png")])
        assert all("tags" in json.loads(line) for line in out.read_text().splitlines())


def test_csv_text_parquet_and_npy_keys_write_the_printable_form(checkpoints, folder, tmp_path):
    import pyarrow.parquet as pq

    for fmt in ("csv", "txt"):
        out = tmp_path / f"tags.{fmt}"
        result = taglens("tag", folder, "--model", checkpoints["joytag"], "-o", out, "-q")
        assert result.returncode == 0, result.stderr
        text = out.read_bytes().decode("utf-8")
        assert f"{folder}/{SHOWN}" in text
    rows = list(csv.DictReader((tmp_path / "tags.csv").open(encoding="utf-8")))
    assert sorted(r["path"] for r in rows) == sorted([f"{folder}/{SHOWN}", str(folder / "good.png")])
    assert all(r["tags"] and not r["error"] for r in rows)

    out = tmp_path / "all.parquet"
    result = taglens("analyze", folder, "--tasks", "tag,embed", "--tagger", checkpoints["joytag"],
                     "--siglip", checkpoints["siglip16"], "-o", out, "-q")
    assert result.returncode == 0, result.stderr
    table = pq.read_table(out)
    assert sorted(table.column("path").to_pylist()) == sorted([f"{folder}/{SHOWN}", str(folder / "good.png")])
    assert table.column("error").null_count == 2

    out = tmp_path / "emb.npy"
    result = taglens("embed", folder, "--model", checkpoints["siglip16"], "-o", out, "-q")
    assert result.returncode == 0, result.stderr
    assert sorted((tmp_path / "emb.paths.txt").read_text(encoding="utf-8").splitlines()) == sorted(
        [f"{folder}/{SHOWN}", str(folder / "good.png")])


def test_a_resumed_csv_does_not_redo_the_file(checkpoints, folder, tmp_path):
    out = tmp_path / "all.csv"
    args = ["analyze", folder, "--tasks", "tag", "--tagger", checkpoints["joytag"], "-o", out]
    assert taglens(*args, "-q").returncode == 0
    again = taglens(*args, "--resume")
    assert again.returncode == 0, again.stderr
    assert len(list(csv.DictReader(out.open(encoding="utf-8")))) == 2


def test_captions_are_written_beside_it(checkpoints, folder):
    result = taglens("tag", folder, "--model", checkpoints["joytag"], "--captions", "-q")
    assert result.returncode == 0, result.stderr
    caption = Path(os.fsdecode(os.fsencode(folder) + b"/bad\xff\xfe.txt"))
    assert caption.is_file() and caption.read_text(encoding="utf-8").strip()


def test_the_quarantine_moves_journals_and_puts_it_back(checkpoints, folder, tmp_path):
    q = tmp_path / "q"
    result = taglens("nsfw", folder, "--model", checkpoints["vit"], "--threshold", 0, "--move-to", q, "-q")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(os.fsencode(q))) == sorted([BAD, b"good.png", b"taglens-journal.jsonl"])
    assert os.listdir(folder) == []
    journal = [json.loads(line) for line in (q / "taglens-journal.jsonl").read_bytes().decode("utf-8").splitlines()]
    assert {os.fsencode(line["src"]) for line in journal if line["op"] == "intent"} == {
        os.fsencode(bad_path(folder)), os.fsencode(folder / "good.png")}
    undo = taglens("nsfw", "--undo", q / "taglens-journal.jsonl")
    assert undo.returncode == 0, undo.stderr
    assert sorted(os.listdir(os.fsencode(folder))) == sorted([BAD, b"good.png"])
