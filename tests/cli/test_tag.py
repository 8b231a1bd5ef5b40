"""``taglens tag`` end to end with the reference fixture's checkpoint and images."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from taglens.cli import cli
from taglens.models.joytag_vit import load_tags

from ..conftest import JOYTAG_TINY

EXPECTED = json.loads((JOYTAG_TINY / "expected.json").read_text())
# The files as taglens decodes them: the RGBA file's alpha is composited onto white.
SCORES = {
    "photo_70x50.png": "photo_70x50",
    "gray_45x30.png": "gray_45x30",
    "rgba_40x90.png": "rgba_40x90__alpha_on_white",
}
TAGS = load_tags(JOYTAG_TINY)


def expected_scores(name: str) -> dict[str, float]:
    entry = next(e for e in EXPECTED["images"] if e["id"] == SCORES[name])
    return dict(zip(TAGS, entry["scores"]))


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(JOYTAG_TINY / "photo_70x50.png", folder / "photo_70x50.png")
    shutil.copy(JOYTAG_TINY / "gray_45x30.png", folder / "sub" / "gray_45x30.png")
    shutil.copy(JOYTAG_TINY / "rgba_40x90.png", folder / "rgba_40x90.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def tag(*args: str):
    return CliRunner().invoke(cli, ["tag", *args], catch_exceptions=False)


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_jsonl_at_threshold_zero_gives_every_tag_with_the_reference_scores(checkpoints, images):
    result = tag(str(images), "--model", str(checkpoints["joytag"]), "--threshold", "0", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    records = jsonl(result.stdout)
    assert [Path(r["path"]).name for r in records] == ["broken.jpg", "photo_70x50.png", "rgba_40x90.png",
                                                       "gray_45x30.png"]
    broken, *good = records
    assert set(broken) == {"path", "error"} and broken["error"]
    for r in good:
        assert set(r) == {"path", "tags"} and len(r["tags"]) == 37
        scores = [t["score"] for t in r["tags"]]
        assert scores == sorted(scores, reverse=True)
        expected = expected_scores(Path(r["path"]).name)
        for t in r["tags"]:
            assert t["score"] == pytest.approx(expected[t["tag"]], abs=1e-6)
    assert "3 done, 1 error" in result.stderr


def test_default_threshold_keeps_the_reference_tags(checkpoints, images):
    result = tag(str(images / "photo_70x50.png"), "-m", str(checkpoints["joytag"]))
    (record,) = jsonl(result.stdout)
    entry = next(e for e in EXPECTED["images"] if e["id"] == "photo_70x50")
    assert {t["tag"] for t in record["tags"]} == set(entry["tags_above_threshold"])
    assert [t["tag"] for t in record["tags"][:5]] == [name for name, _ in entry["top5"]]


def test_exit_status_is_non_zero_only_when_nothing_succeeded(checkpoints, images, tmp_path):
    model = ["-m", str(checkpoints["joytag"])]
    assert tag(str(images / "broken.jpg"), *model).exit_code == 1
    assert tag(str(images / "broken.jpg"), str(images / "photo_70x50.png"), *model).exit_code == 0
    assert tag(str(images / "missing.png"), *model).exit_code == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    result = tag(str(empty), *model)
    assert result.exit_code == 1 and "no images found" in result.stderr


def test_csv_and_txt_formats(checkpoints, images):
    model = ["-m", str(checkpoints["joytag"]), "--top-k", "3"]
    rows = list(csv.DictReader(io.StringIO(tag(str(images), *model, "-f", "csv").stdout)))
    assert [Path(r["path"]).name for r in rows][0] == "broken.jpg" and rows[0]["error"] and not rows[0]["tags"]
    photo = next(r for r in rows if r["path"].endswith("photo_70x50.png"))
    assert json.loads(photo["tags"]) == ["smile", "dog", ">_<"] == list(json.loads(photo["tag_scores"]))

    lines = tag(str(images), *model, "-f", "txt").stdout.splitlines()
    assert lines[0].startswith(str(images / "broken.jpg") + "\terror: ")
    assert lines[1].endswith("photo_70x50.png\tsmile, dog, >_<")
    with_scores = tag(str(images / "photo_70x50.png"), *model, "-f", "txt", "--scores").stdout
    assert with_scores.strip().endswith("\tsmile (0.981), dog (0.973), >_< (0.960)")


def test_no_scores(checkpoints, images):
    model = ["-m", str(checkpoints["joytag"]), "--top-k", "2", str(images / "photo_70x50.png")]
    assert jsonl(tag(*model, "--no-scores").stdout)[0]["tags"] == ["smile", "dog"]
    rows = list(csv.reader(io.StringIO(tag(*model, "--no-scores", "-f", "csv").stdout)))
    assert rows[0] == ["path", "error", "tags", "tag_error"] and rows[1][1:] == ["", '["smile", "dog"]', ""]


def test_selection_options(checkpoints, images, tmp_path):
    (tmp_path / "t.csv").write_text("tag,threshold\nsmile,0.99\nsky,0.01\n")
    (tmp_path / "x.txt").write_text(">_<\n")
    result = tag(str(images / "photo_70x50.png"), "-m", str(checkpoints["joytag"]), "--threshold", "0.9",
                 "--thresholds-file", str(tmp_path / "t.csv"), "--exclude", "dog, c:", "--exclude-file",
                 str(tmp_path / "x.txt"), "--no-scores")
    tags = jsonl(result.stdout)[0]["tags"]
    scores = expected_scores("photo_70x50.png")
    expected = [t for t in TAGS if scores[t] > {"smile": 0.99, "sky": 0.01}.get(t, 0.9)
                and t not in {"dog", "c:", ">_<"}]
    assert sorted(tags) == sorted(expected) and "sky" in tags and "smile" not in tags


def test_unknown_tags_and_bad_values_are_clear_errors(checkpoints, images):
    model = ["-m", str(checkpoints["joytag"]), str(images)]
    result = tag(*model, "--exclude", "dgo")
    assert result.exit_code == 2 and "no tag named 'dgo'" in result.stderr
    assert tag(*model, "--threshold", "1.5").exit_code == 2
    assert tag(*model, "--top-k", "0").exit_code == 2
    result = tag(*model, "--device", "tpu")
    assert result.exit_code == 2 and "device" in result.stderr


def test_a_missing_model_folder_is_a_clear_error(images, tmp_path):
    result = tag(str(images), "-m", str(tmp_path / "nowhere"))
    assert result.exit_code == 1 and "does not exist" in result.stderr
    (tmp_path / "half").mkdir()
    shutil.copy(JOYTAG_TINY / "model.safetensors", tmp_path / "half")
    result = tag(str(images), "-m", str(tmp_path / "half"))
    assert result.exit_code == 1 and "config.json: missing" in result.stderr


def test_output_file(checkpoints, images, tmp_path):
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "tags.jsonl"
    result = tag(str(images), "-m", str(checkpoints["joytag"]), "-o", str(out), "-q")
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""
    assert len(jsonl(out.read_text())) == 4 and sorted(p.name for p in out.parent.iterdir()) == ["tags.jsonl"]


# ----------------------------------------------------------------------------- captions


def test_captions_beside_each_image(checkpoints, images):
    result = tag(str(images), "-m", str(checkpoints["joytag"]), "--captions", "--top-k", "4")
    assert result.exit_code == 0 and result.stdout == ""  # caption runs print records only when asked
    assert (images / "photo_70x50.txt").read_text() == "smile, dog, >_<, text_focus\n"
    assert (images / "sub" / "gray_45x30.txt").exists() and (images / "rgba_40x90.txt").exists()
    assert not (images / "broken.txt").exists()
    assert "captions: 3 written" in result.stderr


def test_caption_formatting_options(checkpoints, images):
    result = tag(str(images / "photo_70x50.png"), "-m", str(checkpoints["joytag"]), "--captions",
                 "--threshold", "0", "--replace-underscores", "--escape-parens", "--prefix", "mychar, my style",
                 "--caption-ext", "caption")
    assert result.exit_code == 0
    text = (images / "photo_70x50.caption").read_text()
    entries = text.rstrip("\n").split(", ")
    assert entries[:2] == ["mychar", "my style"] and len(entries) == 2 + 37
    for kept in ("^_^", ">_<", "o_o", "+_+", "=_=", ":d", "long hair", "tag with underscores",
                 r"photoshop \(medium\)", "looking at viewer"):
        assert kept in entries
    assert "long_hair" not in entries


def test_caption_dir_keeps_relative_paths_and_records_go_to_output(checkpoints, images, tmp_path):
    out = tmp_path / "captions"
    result = tag(str(images), "-m", str(checkpoints["joytag"]), "--caption-dir", str(out), "-o", "-", "-k", "1")
    assert result.exit_code == 0 and len(jsonl(result.stdout)) == 4
    assert (out / "photo_70x50.txt").read_text() == "smile\n"
    assert (out / "sub" / "gray_45x30.txt").exists() and not (images / "photo_70x50.txt").exists()


def test_existing_skip_overwrite_append(checkpoints, images):
    model = [str(images), "-m", str(checkpoints["joytag"]), "--captions", "-k", "2"]
    (images / "photo_70x50.txt").write_text("hand written\n")
    result = tag(*model)  # default: skip
    assert (images / "photo_70x50.txt").read_text() == "hand written\n"
    assert "2 written, 1 skipped" in result.stderr and "2 done, 1 error" in result.stderr  # not even decoded

    again = tag(*model)  # only the broken file is tried again, and fails
    assert again.exit_code == 0 and "captions: 3 skipped" in again.stderr and "0 done, 1 error" in again.stderr
    (images / "broken.jpg").unlink()
    assert tag(*model).exit_code == 0  # nothing left to do is a success too

    tag(*model, "--existing", "append")
    assert (images / "photo_70x50.txt").read_text() == "hand written, smile, dog\n"
    tag(*model, "--existing", "append")  # appending the same tags again adds nothing
    assert (images / "photo_70x50.txt").read_text() == "hand written, smile, dog\n"

    tag(*model, "--existing", "overwrite", "-k", "1")
    assert (images / "photo_70x50.txt").read_text() == "smile\n"


def test_caption_options_need_captions(checkpoints, images):
    result = tag(str(images), "-m", str(checkpoints["joytag"]), "--replace-underscores")
    assert result.exit_code == 2 and "--replace-underscores only applies with --captions" in result.stderr


def test_unwritable_captions_fail_the_run(checkpoints, images, monkeypatch):
    from taglens.io import captions

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(captions.tempfile, "mkstemp", refuse)
    result = tag(str(images), "-m", str(checkpoints["joytag"]), "--captions")
    assert result.exit_code == 1
    assert "cannot write caption (Permission denied)" in result.stderr and "3 failed" in result.stderr


def test_help_has_an_example():
    result = CliRunner().invoke(cli, ["tag", "--help"])
    assert result.exit_code == 0 and "Example:" in result.output and "taglens tag photos/" in result.output


def test_default_model_and_threshold_are_the_familys():
    from taglens.cli.tag import tag
    from taglens.models.joytag import CONFIG

    defaults = {p.name: p.default for p in tag.params}
    assert defaults["model"] == CONFIG.hub_id == "fancyfeast/joytag"
    assert defaults["threshold"] == CONFIG.threshold == 0.4
