"""``taglens analyze --engine ray`` on a local Ray instance (2 CPUs): its rows equal the local
engine's records for the same images, a corrupt file is an error row, a worker that dies is
retried, and ``--resume`` adds only the images the output folder lacks."""

from __future__ import annotations

import json
import os
import shutil
import time
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from taglens import distributed, engine
from taglens.io.arrow import fields_for_tasks, job_metadata, records_from_table
from taglens.cli import cli
from taglens.engine import EngineOptions
from taglens.errors import TaglensError
from taglens.io.inputs import iter_image_paths
from taglens.records import Record
from taglens.io.sinks import ParquetSink
from taglens.models.tag_selection import TagSelection
from taglens.models.modelset import ModelSet, TaskRequest

from ..conftest import photo, write_image_folder

TASKS = ("tag", "classify", "nsfw", "embed")
LABELS = ("a cat", "a dog", "a plane")


def models_for(checkpoints) -> ModelSet:
    return ModelSet(tagger=checkpoints["joytag"], siglip=checkpoints["siglip64"], nsfw_model=checkpoints["vit"])


def the_request() -> TaskRequest:
    """What the CLI below asks for (``--tag-threshold 0.2``, the other options at their defaults)."""
    return TaskRequest(tasks=TASKS, tag_selection=TagSelection(threshold=0.2), labels=LABELS,
                       nsfw_threshold=0.5, positive_labels=("nsfw",))


def local_records(checkpoints, paths) -> dict[str, Record]:
    jobs = models_for(checkpoints).jobs(the_request())
    return {r.path: r for r in engine.run(paths, jobs, EngineOptions(batch_size=3))}


def assert_same_record(got: Record, want: Record) -> None:
    """Equal file facts and errors; equal names and numbers within 1e-6."""
    assert (got.path, got.error, got.sha256, got.size, got.width, got.height) == \
        (want.path, want.error, want.sha256, want.size, want.width, want.height)
    assert got.mtime == pytest.approx(want.mtime, abs=1e-5) if want.mtime is not None else got.mtime is None
    if want.error is not None:
        assert got.tags is got.labels is got.nsfw is got.embedding is None
        return
    assert [t.tag for t in got.tags] == [t.tag for t in want.tags]
    assert np.allclose([t.score for t in got.tags], [t.score for t in want.tags], rtol=0, atol=1e-6)
    assert [x.label for x in got.labels] == [x.label for x in want.labels]
    assert np.allclose([x.score for x in got.labels], [x.score for x in want.labels], rtol=0, atol=1e-6)
    assert (got.nsfw.label, got.nsfw.flagged, sorted(got.nsfw.scores)) == \
        (want.nsfw.label, want.nsfw.flagged, sorted(want.nsfw.scores))
    assert np.allclose([got.nsfw.scores[k] for k in want.nsfw.scores], list(want.nsfw.scores.values()),
                       rtol=0, atol=1e-6)
    assert got.embedding.dtype == np.float32
    assert np.allclose(got.embedding, want.embedding, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def first_run(ray_cluster, checkpoints, tmp_path_factory):
    """One CLI run over a folder with good images of several kinds, a corrupt file and a file
    whose first worker dies."""
    root = tmp_path_factory.mktemp("ray")
    folder = write_image_folder(root / "images")
    photo(33, 21, 5).save(folder / "die-once.png")
    out = root / "out"
    started = time.perf_counter()
    result = CliRunner().invoke(cli, [
        "analyze", str(folder), "--engine", "ray", "--tasks", ",".join(TASKS), "--labels", ",".join(LABELS),
        "--tagger", str(checkpoints["joytag"]), "--siglip", str(checkpoints["siglip64"]),
        "--nsfw-model", str(checkpoints["vit"]), "--tag-threshold", "0.2", "-b", "2", "-o", str(out),
    ], catch_exceptions=False)
    seconds = time.perf_counter() - started
    files = sorted(out.glob("*.parquet"))
    rows = {r.path: r for f in files for r in records_from_table(pq.read_table(f))}
    return SimpleNamespace(root=root, folder=folder, out=out, result=result, files=files, rows=rows, seconds=seconds)


def test_rows_equal_the_local_engines_records(first_run, checkpoints):
    assert first_run.result.exit_code == 0, first_run.result.output
    assert "6 images: 5 done, 1 error" in first_run.result.stderr
    paths = list(iter_image_paths([str(first_run.folder)]))
    want = local_records(checkpoints, paths)
    assert sorted(first_run.rows) == sorted(want) and len(paths) == 6
    for path, record in want.items():
        assert_same_record(first_run.rows[path], record)
    broken = first_run.rows[str(first_run.folder / "broken.jpg")]
    assert broken.error and broken.error == want[broken.path].error


def test_library_import_of_the_output_folder_then_search(first_run, tmp_path):
    """``taglens library import DIR`` takes the job's folder; search then finds an image by itself."""
    library = tmp_path / "library"
    result = CliRunner().invoke(cli, ["library", "import", str(first_run.out), "--library", str(library)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "6 rows from" in result.stderr and "5 stored (0 URIs), 1 error skipped" in result.stderr
    target = first_run.folder / "sub" / "c.webp"
    found = CliRunner().invoke(cli, ["search", "--image", str(target), "--library", str(library), "-f", "jsonl",
                                     "--limit", "3"], catch_exceptions=False)
    hits = [json.loads(line) for line in found.stdout.splitlines()]
    assert hits[0]["path"] == str(target) and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert [t["tag"] for t in hits[0]["tags"]] == [t.tag for t in first_run.rows[str(target)].tags]
    by_text = CliRunner().invoke(cli, ["search", "a cat", "--library", str(library), "-f", "jsonl"])
    assert len(by_text.stdout.splitlines()) == 5


def test_a_worker_that_dies_is_retried(first_run):
    died = first_run.folder / "die-once.png.died"
    assert died.exists()  # the hook in tests/distributed/hooks.py ended the first worker that read it
    row = first_run.rows[str(first_run.folder / "die-once.png")]
    assert row.error is None and row.tags is not None


def test_files_have_the_schema_of_the_local_parquet_output(first_run, checkpoints, tmp_path):
    """Every file reads back with exactly the schema (and model identities) that
    ``taglens analyze -f parquet`` writes through `ParquetSink`."""
    jobs = models_for(checkpoints).jobs(the_request())
    local = ParquetSink(tmp_path / "local.parquet", 32, fields=fields_for_tasks(TASKS), facts=True,
                        metadata=job_metadata(jobs))
    local.commit()
    want = pq.read_schema(tmp_path / "local.parquet")
    assert first_run.files
    for path in first_run.files:
        assert pq.read_schema(path).equals(want, check_metadata=True)
    assert want.metadata[b"taglens.tag.model_id"] == str(checkpoints["joytag"].resolve()).encode()


def test_resume_adds_only_what_the_folder_lacks_and_reads_uris(first_run, checkpoints, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(first_run.out, out)
    (out / "cut-short.parquet").write_bytes(b"PAR1 a file whose writer was killed")
    late = tmp_path / "late"
    late.mkdir()
    photo(45, 30, 6).save(late / "late.png")
    photo(20, 20, 7).save(late / ".hidden.png")
    late_uri = "file://" + str(late)
    run = distributed.analyze([str(first_run.folder), late_uri], the_request(), models_for(checkpoints), out,
                              options=EngineOptions(batch_size=2), resume=True,
                              ray_options=distributed.RayOptions(quiet=True))
    assert (run.skipped, run.done, run.errors, len(run.files)) == (6, 1, 0, 1)
    assert not (out / "cut-short.parquet").exists() and (out / ".cut-short.parquet.incomplete").exists()
    rows = [r for f in sorted(out.glob("*.parquet")) for r in records_from_table(pq.read_table(f))]
    assert len(rows) == 7 and len({r.path for r in rows}) == 7
    new = {r.path: r for r in records_from_table(pq.read_table(run.files[0]))}
    assert list(new) == [late_uri + "/late.png"]
    want = local_records(checkpoints, [str(late / "late.png")])[str(late / "late.png")]
    assert_same_record(new[late_uri + "/late.png"], want.with_fields(path=late_uri + "/late.png"))
    assert os.stat(late / "late.png").st_mtime == pytest.approx(new[late_uri + "/late.png"].mtime, abs=1e-5)


def test_a_folder_with_results_needs_resume(first_run, checkpoints):
    with pytest.raises(TaglensError, match="already holds Parquet files"):
        distributed.analyze([str(first_run.folder)], the_request(), models_for(checkpoints), first_run.out)

