"""Resuming outputs: complete records are found, a torn last line is cut before appending."""

from __future__ import annotations

import json

import pytest

from taglens.errors import TaglensError
from taglens.io.resume import completed_paths, open_for_append


def test_jsonl_with_torn_last_line(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"path": "a.jpg", "tags": []}) + "\n" + json.dumps({"path": "b.jpg", "error": "x"})
                   + "\n" + '{"path": "c.jp')
    assert completed_paths(out, "jsonl") == {"a.jpg", "b.jpg"}
    appended = open_for_append(out)
    appended.stream.write(json.dumps({"path": "c.jpg"}) + "\n")
    appended.commit()
    lines = out.read_text().splitlines()
    assert [json.loads(x)["path"] for x in lines] == ["a.jpg", "b.jpg", "c.jpg"]


def test_csv_and_missing_file(tmp_path):
    out = tmp_path / "out.csv"
    assert completed_paths(out, "csv") == set()
    out.write_text("path,error\na.jpg,\n\"b,1.jpg\",bad\nc.j")
    assert completed_paths(out, "csv") == {"a.jpg", "b,1.jpg"}
    assert out.read_text().endswith("bad\n")


def test_a_file_that_is_not_ours_is_refused(tmp_path):
    out = tmp_path / "notes.jsonl"
    out.write_text("hello\n")
    with pytest.raises(TaglensError, match="not a taglens JSONL record"):
        completed_paths(out, "jsonl")


def test_torn_file_without_any_newline_is_emptied(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"path": "a')
    assert completed_paths(out, "jsonl") == set()
    assert out.read_text() == ""


def test_a_csv_with_other_columns_is_not_appended_to(tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("path,error,tags,tag_scores\na.jpg,,[],{}\n")  # another run's tasks (or an older taglens)
    with pytest.raises(TaglensError, match="resume with the same --tasks"):
        completed_paths(out, "csv", ["path", "error", "tags", "tag_scores", "tag_error"])
    assert completed_paths(out, "csv", ["path", "error", "tags", "tag_scores"]) == {"a.jpg"}
