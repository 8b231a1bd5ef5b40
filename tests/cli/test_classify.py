"""``taglens classify`` against ``transformers.pipeline("zero-shot-image-classification")``."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from taglens.cli import cli
from taglens.cli.classify import classify as classify_command
from taglens.io.decode import decode_image
from taglens.models.siglip import CONFIG

from ..conftest import photo

LABELS = ["a cat", "a dog", "a plane", "a red car", "a beach", "a bowl of fruit", "a boat"]
TEMPLATE = "a photo of {}"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Several RGB and greyscale images as files."""
    folder = tmp_path_factory.mktemp("classify-images")
    photo(97, 61, 1).save(folder / "rgb1.png")
    photo(45, 130, 2).save(folder / "rgb2.png")
    photo(56, 56, 3).save(folder / "rgb3.png")
    photo(80, 50, 4).convert("L").save(folder / "grey1.png")
    photo(33, 70, 5).convert("L").save(folder / "grey2.png")
    return sorted(str(p) for p in folder.iterdir())


@pytest.fixture(scope="module")
def pipelines(checkpoints):
    from transformers import pipeline

    return {name: pipeline("zero-shot-image-classification", model=str(checkpoints[name]))
            for name in ("siglip64", "clip")}


def classify(*args: str) -> list[dict]:
    result = CliRunner().invoke(cli, ["classify", "-q", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def assert_same_ranking(ours: list[dict], theirs: list[dict]) -> None:
    """Same labels, same scores within 1e-5, and the same order (labels whose scores tie
    within 1e-5 may swap)."""
    assert len(ours) == len(theirs)
    expected = {x["label"]: x["score"] for x in theirs}
    for position, (mine, reference) in enumerate(zip(ours, theirs)):
        assert abs(mine["score"] - expected[mine["label"]]) < 1e-5
        assert mine["label"] == reference["label"] or abs(mine["score"] - reference["score"]) < 1e-5, position
    scores = [x["score"] for x in ours]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("name", ["siglip64", "clip"])
@pytest.mark.parametrize("n_labels", [1, 2, 7])
def test_same_labels_and_scores_as_the_transformers_pipeline(checkpoints, pipelines, images, name, n_labels):
    labels = LABELS[:n_labels]
    records = classify(*images, "--model", str(checkpoints[name]), "--labels", ",".join(labels),
                       "--template", TEMPLATE)
    assert [r["path"] for r in records] == images
    for record, path in zip(records, images):
        expected = pipelines[name](path, candidate_labels=labels, hypothesis_template=TEMPLATE)
        assert_same_ranking(record["labels"], expected)


def test_default_template_is_the_pipelines_default(checkpoints, pipelines, images):
    records = classify(images[0], "--model", str(checkpoints["siglip64"]), "-l", "a cat,a dog,a plane")
    assert_same_ranking(records[0]["labels"], pipelines["siglip64"](images[0], candidate_labels=LABELS[:3]))
    defaults = {p.name: p for p in classify_command.params}
    assert defaults["model"].default == CONFIG.hub_id == "google/siglip-so400m-patch14-224"
    assert f"'{CONFIG.template}'" in defaults["templates"].help


def test_rgba_differs_from_the_pipeline_on_purpose(checkpoints, pipelines, tmp_path):
    """The pipeline drops alpha (``convert("RGB")``); taglens composites it onto white."""
    rgba = photo(70, 50, 6).convert("RGBA")
    alpha = np.zeros((50, 70), np.uint8)
    alpha[:, 35:] = 255
    rgba.putalpha(Image.fromarray(alpha))
    path = tmp_path / "rgba.png"
    rgba.save(path)
    ours = classify(str(path), "--model", str(checkpoints["clip"]), "-l", ",".join(LABELS), "--template", TEMPLATE)[0]
    pipe = pipelines["clip"]
    composited = decode_image(path)
    assert composited.getpixel((0, 0)) == (255, 255, 255)
    assert_same_ranking(ours["labels"], pipe(composited, candidate_labels=LABELS, hypothesis_template=TEMPLATE))
    dropped = {x["label"]: x["score"] for x in pipe(str(path), candidate_labels=LABELS, hypothesis_template=TEMPLATE)}
    assert max(abs(x["score"] - dropped[x["label"]]) for x in ours["labels"]) > 1e-3


def test_exif_rotated_images_are_turned_upright(checkpoints, pipelines, tmp_path):
    """taglens applies the EXIF turn. (transformers 5's ``load_image`` now applies it too, so on
    this version the pipeline agrees; fed the stored, unturned pixels it does not.)"""
    upright = photo(80, 50, 7)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what the camera wrote
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "turned.jpg"
    stored.save(path, quality=95, exif=exif)
    ours = classify(str(path), "--model", str(checkpoints["siglip64"]), "-l", ",".join(LABELS), "--template", TEMPLATE)[0]
    pipe = pipelines["siglip64"]
    shown = decode_image(path)
    assert shown.size == (80, 50)
    assert_same_ranking(ours["labels"], pipe(shown, candidate_labels=LABELS, hypothesis_template=TEMPLATE))
    assert_same_ranking(ours["labels"], pipe(str(path), candidate_labels=LABELS, hypothesis_template=TEMPLATE))
    with Image.open(path) as raw:
        pixels = Image.fromarray(np.asarray(raw.convert("RGB")))  # as stored, without the EXIF tag
    assert pixels.size == (50, 80)
    unturned = {x["label"]: x["score"] for x in pipe(pixels, candidate_labels=LABELS, hypothesis_template=TEMPLATE)}
    assert max(abs(x["score"] - unturned[x["label"]]) for x in ours["labels"]) > 1e-3


def test_siglip16_runs_where_the_pipeline_cannot(checkpoints, images):
    records = classify(*images[:2], "--model", str(checkpoints["siglip16"]), "-l", "a cat,a dog")
    assert all(len(r["labels"]) == 2 and 0 < r["labels"][0]["score"] < 1 for r in records)


def test_labels_from_flags_and_file_threshold_top_k_and_csv(checkpoints, images, tmp_path):
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("a bowl of fruit, on a table\n\na boat\n", encoding="utf-8")
    model = ["--model", str(checkpoints["siglip64"])]
    full = classify(*images, *model, "-l", "a cat, a dog", "--labels", "a plane", "--labels-file", str(labels_file))
    assert {x["label"] for x in full[0]["labels"]} == {"a cat", "a dog", "a plane", "a bowl of fruit, on a table",
                                                        "a boat"}
    cut = sorted(x["score"] for r in full for x in r["labels"])[len(full) * 5 // 2]
    limited = classify(*images, *model, "-l", "a cat,a dog,a plane", "--labels-file", str(labels_file),
                       "--threshold", str(cut), "--top-k", "2")
    for a, b in zip(full, limited):
        kept = [x for x in a["labels"] if x["score"] >= cut][:2]
        assert b["labels"] == kept

    result = CliRunner().invoke(cli, ["classify", "-q", *images[:2], *model, "-l", "a cat,a dog", "-f", "csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["path"] for r in rows] == images[:2]
    for row, record in zip(rows, full):
        scores = json.loads(row["label_scores"])
        assert list(scores) == json.loads(row["labels"])  # a JSON array of names, in score order
        assert set(scores) == {"a cat", "a dog"}


def test_errors_are_records_and_the_run_goes_on(checkpoints, images, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, ["classify", images[0], str(broken), "-m", str(checkpoints["clip"]),
                                      "-l", "a cat,a dog", "-o", str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[1] == {"path": str(broken), "error": records[1]["error"]} and records[1]["error"]
    assert "labels" in records[0]
    assert "1 error" in result.stderr
    assert not list(tmp_path.glob(".*.part"))

    only_bad = CliRunner().invoke(cli, ["classify", "-q", str(broken), "-m", str(checkpoints["clip"]), "-l", "a cat"])
    assert only_bad.exit_code == 1


def test_usage_errors(checkpoints, images):
    runner = CliRunner()
    no_labels = runner.invoke(cli, ["classify", images[0], "-m", str(checkpoints["clip"])])
    assert no_labels.exit_code == 2 and "no labels" in no_labels.output
    bad_template = runner.invoke(cli, ["classify", images[0], "-m", str(checkpoints["clip"]), "-l", "a", "--template", "x"])
    assert bad_template.exit_code == 2 and "no '{}'" in bad_template.output  # a usage error, as the issue asks
    not_siglip = runner.invoke(cli, ["classify", images[0], "-m", str(checkpoints["vit"]), "-l", "a"])
    assert not_siglip.exit_code == 1 and "not a SigLIP or CLIP" in not_siglip.output


def test_a_truncated_prompt_is_named_on_stderr(checkpoints, images):
    long = "a plane flying over the mountains at sunset near a lake"
    result = CliRunner().invoke(cli, ["classify", "-q", images[0], "-m", str(checkpoints["siglip16"]), "-l", long])
    assert result.exit_code == 0, result.output
    assert f"prompt 'This is a photo of {long}.' is longer than the model's 16 text tokens" in result.stderr
