"""``taglens library import``: Parquet from ``taglens analyze`` (or the Ray job) into the library,
stored exactly as ``taglens index`` stores the same images."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from taglens.io.arrow import record_schema, records_to_table
from taglens.cli import cli
from taglens.errors import LibraryError
from taglens.library import Library
from taglens.library.scan import file_sha256
from taglens.records import NsfwResult, Record, TagScore

from ..unit.library.conftest import make_photos, picture


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def dump(folder) -> dict:
    """Everything the library holds per path, with model identities instead of row ids."""
    lib = Library.open(folder)
    q = lib.conn.execute
    models = {r["id"]: (r["task"], r["model_id"], r["revision"], r["dim"]) for r in q("SELECT * FROM models")}
    out = {}
    for f in q("SELECT f.*, c.sha256, c.width, c.height FROM files f JOIN contents c ON c.id = f.content"):
        c = f["content"]
        out[f["path"]] = {
            "file": (f["size"], f["mtime"], f["status"], f["sha256"], f["width"], f["height"]),
            "tags": sorted((models[t["model"]], t["tag"], t["score"]) for t in q("SELECT * FROM tags WHERE content = ?", (c,))),
            "nsfw": sorted((models[n["model"]], n["label"], n["score"], n["unsafe"], n["flagged"], n["scores"])
                           for n in q("SELECT * FROM nsfw WHERE content = ?", (c,))),
            "embedding": sorted((models[e["model"]], e["vector"]) for e in q("SELECT * FROM embeddings WHERE content = ?",
                                                                               (c,))),
        }
    lib.close()
    return out


def test_analyze_parquet_then_import_stores_what_index_stores(checkpoints, tmp_path):
    photos = tmp_path / "photos"
    make_photos(photos, 5)
    (photos / "broken.png").write_bytes(b"not a picture")
    flags = ["--tagger", checkpoints["joytag"], "--siglip", checkpoints["siglip64"], "--nsfw-model", checkpoints["vit"],
             "--device", "cpu", "--batch-size", 4]
    out = tmp_path / "photos.parquet"
    result = invoke("analyze", photos, "--tasks", "tag,nsfw,embed", *flags, "-f", "parquet", "-o", out, "-q")
    assert out.exists(), result.output
    result = invoke("library", "import", out, "--library", tmp_path / "imported")
    assert result.exit_code == 0, result.output
    assert "6 rows from 1 file: 5 stored (0 URIs), 1 error skipped, 0 absent here, 0 changed" in result.output
    assert invoke("index", photos, *flags, "--library", tmp_path / "indexed").exit_code == 0
    imported, indexed = dump(tmp_path / "imported"), dump(tmp_path / "indexed")
    assert len(imported) == 5 and imported.keys() == indexed.keys()
    for path in imported:
        assert imported[path] == indexed[path], path
        assert imported[path]["tags"] and imported[path]["nsfw"] and imported[path]["embedding"]

    target = sorted(photos.glob("img*.png"))[2]
    hits = [json.loads(x) for x in invoke("search", "--image", target, "--library", tmp_path / "imported",
                                          "-f", "jsonl", "--limit", 3).output.splitlines()]
    assert hits[0]["path"] == str(target) and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert hits[0]["tags"] and hits[0]["nsfw"]
    by_text = [invoke("search", "a cat", "--library", tmp_path / lib, "-f", "jsonl").output for lib in ("imported", "indexed")]
    assert by_text[0] == by_text[1] and len(by_text[0].splitlines()) == 5
    # the imported library is an index like any other: only the error row is left for index to try
    again = invoke("index", photos, *flags, "--library", tmp_path / "imported")
    assert "6 files: 5 unchanged, 0 reused, 0 computed, 1 error" in again.output


def embed_only_file(path, records, *, model=("fake/embed", "r1"), job="classify+embed", dim=8, metadata=None):
    schema = record_schema(("tags", "nsfw", "embedding"), dim, facts=True, metadata=metadata if metadata is not None else {
        f"taglens.{job}.model_id": model[0], f"taglens.{job}.revision": model[1],
        "taglens.tag.model_id": "fake/tag", "taglens.tag.revision": "t1",
        "taglens.nsfw.model_id": "fake/nsfw", "taglens.nsfw.revision": "n1"})
    pq.write_table(records_to_table(records, schema), path)
    return path


def unit(seed, dim=8):
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def record_for(path, seed, **over):
    st = os.stat(path) if os.path.exists(path) else None
    fields = dict(sha256=file_sha256(path) if st else f"{seed:064x}", size=st.st_size if st else 10,
                  mtime=st.st_mtime if st else 1.0, width=64, height=48,
                  tags=(TagScore("cat", 0.9), TagScore("sky", 0.5)),
                  nsfw=NsfwResult("normal", 0.8, {"normal": 0.8, "nsfw": 0.2}, False), embedding=unit(seed))
    fields.update(over)
    return Record(str(path), **fields)


def test_errors_uris_absent_and_changed_rows(tmp_path):
    photos = tmp_path / "photos"
    here, moved, changed = make_photos(photos, 3)
    records = [record_for(here, 1), record_for(moved, 2), record_for(changed, 3),
               Record(str(photos / "bad.png"), error="cannot identify image file"),
               record_for("s3://bucket/remote.jpg", 4),
               record_for(tmp_path / "elsewhere" / "gone.png", 5)]
    parquet = embed_only_file(tmp_path / "r.parquet", records)
    shutil.move(moved, tmp_path / "moved.png")
    picture(99).save(changed)  # other bytes since analyzed
    lib = Library.open(tmp_path / "lib", create=True)
    report = lib.import_parquet([parquet])
    assert (report.rows, report.stored, report.remote, report.errors, report.absent, report.changed) == (6, 2, 1, 1, 2, 1)
    assert report.models == {"embed": ("fake/embed", "r1"), "tag": ("fake/tag", "t1"), "nsfw": ("fake/nsfw", "n1")}
    paths = {r["path"] for r in lib.conn.execute("SELECT path FROM files")}
    assert paths == {str(here), "s3://bucket/remote.jpg"}
    # search by the URI itself (its stored vector) and by the local file
    hits = lib.search(image="s3://bucket/remote.jpg", limit=2)
    assert hits[0].path == "s3://bucket/remote.jpg" and hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert hits[1].score == pytest.approx(float(unit(1) @ unit(4)), abs=2e-3)
    assert [t.tag for t in hits[0].tags] == ["cat", "sky"] and hits[0].nsfw.scores["nsfw"] == pytest.approx(0.2)
    assert [h.path for h in lib.search(tags=["cat"], max_nsfw=0.3)] == sorted(paths)
    # URIs are not "gone from disk"
    assert not any("gone" in note for note in lib.verify().notes) and lib.verify().ok
    assert lib.prune().missing_files == 0 and lib.stats()["remote"] == 1
    # importing again changes nothing
    lib.import_parquet([parquet])
    assert {r["path"] for r in lib.conn.execute("SELECT path FROM files")} == paths
    assert lib.conn.execute("SELECT count(*) AS n FROM embeddings").fetchone()["n"] == 2
    lib.close()


def test_files_that_cannot_be_imported(tmp_path):
    photos = tmp_path / "photos"
    [one] = make_photos(photos, 1)
    lib = Library.open(tmp_path / "lib", create=True)
    no_meta = embed_only_file(tmp_path / "m.parquet", [record_for(one, 1)], metadata={})
    with pytest.raises(LibraryError, match="names no model"):
        lib.import_parquet([no_meta])
    texts = tmp_path / "t.parquet"
    pq.write_table(records_to_table([Record("a cat", embedding=unit(1))],
                                    record_schema(("embedding",), 8, key="text")), texts)
    with pytest.raises(LibraryError, match="text embeddings"):
        lib.import_parquet([texts])
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 nope")
    with pytest.raises(LibraryError, match="not a readable Parquet"):
        lib.import_parquet([junk])
    good = embed_only_file(tmp_path / "g.parquet", [record_for(one, 1)])
    with pytest.raises(LibraryError):  # every file is checked before anything is written
        lib.import_parquet([good, junk])
    assert lib.conn.execute("SELECT count(*) AS n FROM files").fetchone()["n"] == 0
    lib.close()
    result = CliRunner().invoke(cli, ["library", "import", str(junk), "--library", str(tmp_path / "lib")])
    assert result.exit_code == 1 and "not a readable Parquet" in result.output
