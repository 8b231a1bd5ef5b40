"""Incremental indexing with fake jobs: what is computed, hashed, decoded and kept, counted."""

from __future__ import annotations

import os
import shutil
import threading

import numpy as np
import pytest

from taglens.engine import prepare as engine_module
from taglens.engine import EngineOptions
from taglens.library import LazyModel, Library, db

from .conftest import make_photos, picture
from .fakes import fake_models

OPTIONS = EngineOptions(batch_size=2, workers=2)


@pytest.fixture
def counters(monkeypatch):
    """Counts the engine's file reads, hashes and decodes, by path (the library reads nothing itself)."""
    counts = {"decode": [], "hash": [], "read": []}
    lock = threading.Lock()
    names: dict[int, str] = {}  # id of the bytes read -> the file they came from
    real_decode, real_hash, real_read = engine_module.decode_bytes, engine_module.content_hash, engine_module.read_source_bytes

    def decode(data, options, *, name):
        with lock:
            counts["decode"].append(name)
        return real_decode(data, options, name=name)

    def read(source, options, name):
        data = real_read(source, options, name)
        with lock:
            counts["read"].append(name)
            names[id(data)] = name
        return data

    def hash_(data):
        with lock:
            counts["hash"].append(names[id(data)])
        return real_hash(data)

    monkeypatch.setattr(engine_module, "decode_bytes", decode)
    monkeypatch.setattr(engine_module, "content_hash", hash_)
    monkeypatch.setattr(engine_module, "read_source_bytes", read)

    def reset():
        for key in ("decode", "hash", "read"):
            counts[key].clear()

    counts["reset"] = reset
    return counts


def calls(jobs):
    return {t: j.calls for t, j in jobs.items()}


def reset_calls(jobs):
    for j in jobs.values():
        j.calls = 0


def rows(lib):
    return {r["path"]: r for r in lib.conn.execute("SELECT * FROM files")}


def test_first_run_computes_every_image_once_in_one_pass(lib, photos, models, counters):
    sources, jobs = models
    report = lib.index([photos], sources, options=OPTIONS)
    assert report.computed == 6 and report.errors == 0 and report.unchanged == 0
    assert calls(jobs) == {"tag": 6, "nsfw": 6, "embed": 6}
    assert len(counters["decode"]) == 6  # decoded once for all three jobs
    assert sorted(counters["read"]) == sorted(counters["hash"]) == sorted(str(p) for p in photos.iterdir())  # once each
    files = rows(lib)
    assert sorted(files) == sorted(str(p) for p in photos.iterdir())
    assert all(r["status"] == "ok" and r["content"] for r in files.values())
    contents = lib.conn.execute("SELECT * FROM contents").fetchall()
    assert len(contents) == 6 and all((c["width"], c["height"]) == (64, 48) for c in contents)
    assert lib.conn.execute("SELECT count(*) AS n FROM embeddings").fetchone()["n"] == 6
    blob = lib.conn.execute("SELECT vector FROM embeddings LIMIT 1").fetchone()["vector"]
    assert len(blob) == 768 * 2  # float16


def test_unchanged_folder_reads_nothing_and_loads_no_model(lib, photos, models, counters):
    sources, jobs = models
    lib.index([photos], sources, options=OPTIONS)
    counters["reset"]()
    loads = []
    lazy = [LazyModel(s.task, "unused", None, lambda s=s: loads.append(s.task) or s.job()) for s in sources]
    for source, lazy_source in zip(sources, lazy):
        lazy_source._identity = source.identity()  # what resolve_model would say, without touching the hub
    reset_calls(jobs)
    report = lib.index([photos], lazy, options=OPTIONS)
    assert report.unchanged == 6 and report.computed == 0 and report.hashed == 0
    assert counters["decode"] == [] and counters["hash"] == [] and loads == []
    assert calls(jobs) == {"tag": 0, "nsfw": 0, "embed": 0}


def test_added_changed_deleted_and_touched_files(lib, photos, models, counters):
    sources, jobs = models
    lib.index([photos], sources, options=OPTIONS)
    before = rows(lib)
    reset_calls(jobs)
    counters["reset"]()
    make_photos(photos, 1, start=100)  # added
    picture(200).save(photos / "img001.png")  # changed bytes
    (photos / "img002.png").unlink()  # deleted
    os.utime(photos / "img003.png", ns=(1_000_000_000, 1_000_000_000))  # touched: same bytes, new mtime
    report = lib.index([photos], sources, options=OPTIONS)
    assert calls(jobs) == {"tag": 2, "nsfw": 2, "embed": 2}
    assert sorted(counters["decode"]) == sorted([str(photos / "img100.png"), str(photos / "img001.png")])
    assert sorted(counters["hash"]) == sorted(str(photos / f"img{i}.png") for i in ("100", "001", "003"))
    assert sorted(counters["read"]) == sorted(counters["hash"])  # hashed from the one read that decodes
    assert report.deleted == 1 and report.computed == 2 and report.reused == 1 and report.unchanged == 3
    after = rows(lib)
    assert str(photos / "img002.png") not in after
    assert after[str(photos / "img003.png")]["content"] == before[str(photos / "img003.png")]["content"]
    assert after[str(photos / "img003.png")]["mtime"] == 1.0
    assert after[str(photos / "img001.png")]["content"] != before[str(photos / "img001.png")]["content"]
    # the replaced and the deleted images' results are gone with their contents
    assert lib.conn.execute("SELECT count(*) AS n FROM contents").fetchone()["n"] == 6
    assert lib.conn.execute("SELECT count(*) AS n FROM embeddings").fetchone()["n"] == 6


def test_renamed_and_moved_files_keep_their_results_without_recomputing(lib, photos, models, counters):
    sources, jobs = models
    lib.index([photos], sources, options=OPTIONS)
    old = rows(lib)
    reset_calls(jobs)
    counters["reset"]()
    (photos / "sub").mkdir()
    os.rename(photos / "img000.png", photos / "renamed.png")
    os.rename(photos / "img004.png", photos / "sub" / "moved.png")
    report = lib.index([photos], sources, options=OPTIONS)
    assert calls(jobs) == {"tag": 0, "nsfw": 0, "embed": 0} and counters["decode"] == []
    assert report.loaded == []  # every changed file's bytes were known: no model was even loaded
    assert report.reused == 2 and report.deleted == 2
    new = rows(lib)
    assert new[str(photos / "renamed.png")]["content"] == old[str(photos / "img000.png")]["content"]
    assert new[str(photos / "sub" / "moved.png")]["content"] == old[str(photos / "img004.png")]["content"]
    assert str(photos / "img000.png") not in new
    hits = lib.search(image=str(photos / "renamed.png"), limit=1)
    assert hits[0].path == str(photos / "renamed.png") and hits[0].score == pytest.approx(1.0, abs=1e-3)


def test_identical_copies_in_one_run_are_computed_once(lib, tmp_path, models, counters):
    sources, jobs = models
    folder = tmp_path / "copies"
    make_photos(folder, 2)
    shutil.copy(folder / "img000.png", folder / "zcopy.png")
    report = lib.index([folder], sources, options=OPTIONS)
    assert calls(jobs) == {"tag": 2, "nsfw": 2, "embed": 2}
    assert report.reused == 1
    files = rows(lib)
    assert files[str(folder / "zcopy.png")]["content"] == files[str(folder / "img000.png")]["content"]
    assert sorted(counters["read"]) == sorted(str(p) for p in folder.iterdir()) and len(counters["decode"]) == 2


def test_a_new_embedding_model_re_embeds_only(lib, photos, models, counters):
    sources, jobs = models
    lib.index([photos], sources, options=OPTIONS)
    mixed = [s for s in sources if s.task != "embed"] + [fake_models(revision="r2", tasks=("embed",))[0][0]]
    new_embed = mixed[-1].job()
    reset_calls(jobs)
    counters["reset"]()
    report = lib.index([photos], mixed, options=OPTIONS)
    assert jobs["tag"].calls == 0 and jobs["nsfw"].calls == 0 and new_embed.calls == 6
    assert report.loaded == ["embed"] and counters["hash"] == []
    current = db.current_model(lib.conn, "embed")
    assert current["revision"] == "r2"
    assert lib.conn.execute("SELECT count(*) AS n FROM embeddings WHERE model = ?", (current["id"],)).fetchone()["n"] == 6
    # the next run has nothing to do
    new_embed.calls = 0
    assert lib.index([photos], mixed, options=OPTIONS).computed == 0 and new_embed.calls == 0


def test_bad_files_are_recorded_once_and_retried_on_request(lib, photos, models, counters):
    sources, jobs = models
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    report = lib.index([photos], sources, options=OPTIONS)
    assert report.errors == 1 and report.computed == 6
    row = rows(lib)[str(photos / "broken.jpg")]
    assert row["status"] == "error" and row["error"] and row["content"] is None
    counters["reset"]()
    assert lib.index([photos], sources, options=OPTIONS).unchanged == 7
    assert counters["decode"] == []
    again = lib.index([photos], sources, options=OPTIONS, retry_errors=True)
    assert again.errors == 1 and counters["decode"] == [str(photos / "broken.jpg")]


def test_no_recursive_leaves_subfolders_alone(lib, photos, models):
    sources, _ = models
    make_photos(photos / "sub", 2, start=50)
    lib.index([photos], sources, options=OPTIONS)
    assert len(rows(lib)) == 8
    shutil.rmtree(photos / "sub")
    report = lib.index([photos], sources, options=OPTIONS, recursive=False)
    assert report.deleted == 0 and len(rows(lib)) == 8
    assert lib.index([photos], sources, options=OPTIONS).deleted == 2


def test_other_roots_are_untouched(lib, tmp_path, models):
    sources, _ = models
    a, b = make_photos(tmp_path / "a", 2), make_photos(tmp_path / "ab", 2, start=10)
    lib.index([tmp_path / "a", tmp_path / "ab"], sources, options=OPTIONS)
    for p in b:
        p.unlink()
    report = lib.index([tmp_path / "a"], sources, options=OPTIONS)  # "ab" shares the prefix "a" but is not under it
    assert report.deleted == 0 and len(rows(lib)) == 4
    assert len(a) == 2


def test_embeddings_round_trip_through_float16(lib, photos, models):
    sources, _ = models
    lib.index([photos], sources, options=OPTIONS)
    from taglens.io.decode import decode_image

    from .fakes import Pixels, embed_pixels

    path = sorted(photos.iterdir())[0]
    expected = embed_pixels(Pixels()(decode_image(str(path))))
    content = rows(lib)[str(path)]["content"]
    model = db.current_model(lib.conn, "embed")["id"]
    stored = db.embedding_of(lib.conn, content, model)
    np.testing.assert_allclose(stored, expected, atol=1e-3)


def test_library_open_refuses_a_newer_database(tmp_path):
    lib = Library.open(tmp_path / "lib", create=True)
    lib.conn.execute(f"PRAGMA user_version = {db.VERSION + 1}")
    lib.close()
    from taglens.errors import LibraryVersionError

    with pytest.raises(LibraryVersionError, match="newer"):
        Library.open(tmp_path / "lib")


def test_a_missing_root_is_refused_not_read_as_deleted(lib, photos, models, tmp_path):
    from taglens.errors import LibraryError

    sources, _ = models
    lib.index([photos], sources, options=OPTIONS)
    moved = tmp_path / "unmounted"
    photos.rename(moved)
    with pytest.raises(LibraryError, match="no such file or folder"):
        lib.index([photos], sources, options=OPTIONS)
    assert len(rows(lib)) == 6


def test_content_ids_are_never_reused(lib, photos, models):
    sources, _ = models
    lib.index([photos], sources, options=OPTIONS)
    top = max(r["content"] for r in rows(lib).values())
    newest = max(rows(lib).values(), key=lambda r: r["content"])["path"]
    os.unlink(newest)
    lib.index([photos], sources, options=OPTIONS)
    make_photos(photos, 1, start=300)
    lib.index([photos], sources, options=OPTIONS)
    assert rows(lib)[str(photos / "img300.png")]["content"] > top


def test_a_file_name_that_is_not_utf8_is_indexed_searched_and_kept(lib, photos, models, counters):
    """A name's bytes that are not UTF-8 (legal on Linux) round-trip through the database: the
    path comes back as ``os.fsdecode`` gives it, so ``os.fsencode`` gives the very bytes."""
    sources, jobs = models
    raw = os.fsencode(photos) + b"/bad\xff\xfe.png"
    picture(77).save(os.fsdecode(raw))
    name = os.fsdecode(raw)
    report = lib.index([photos], sources, options=OPTIONS)
    assert report.computed == 7 and report.errors == 0
    assert db.file_by_path(lib.conn, name)["status"] == "ok"
    stored = lib.conn.execute("SELECT path FROM files WHERE path LIKE '%bad%'").fetchone()["path"]
    assert stored.encode("utf-8") and db.from_db_path(stored) == name  # valid text in SQLite, lossless back

    [tagged] = [h for h in lib.search(tags=["bright"], limit=20) if h.path == name] or [None]
    assert tagged is not None and os.fsencode(tagged.path) == raw
    assert name in {h.path for h in lib.search("anything", limit=20)}
    assert lib.search(image=name, limit=1)[0].path == name
    assert any(name in g.paths for g in lib.duplicates(threshold=-1.0))
    assert lib.verify().ok and not lib.verify().notes[1:]  # not "gone from disk", not "changed"

    counters["reset"]()
    again = lib.index([photos], sources, options=OPTIONS)
    assert again.unchanged == 7 and counters["read"] == []  # found again by its stored path
    assert lib.prune().missing_files == 0
    moved = os.fsencode(photos) + b"/also\xfe.png"
    os.rename(raw, moved)
    renamed = lib.index([photos], sources, options=OPTIONS)
    assert renamed.reused == 1 and renamed.deleted == 1 and counters["decode"] == []
    assert db.file_by_path(lib.conn, os.fsdecode(moved))["content"] is not None


def test_a_copy_hashed_before_its_first_file_waits_for_it(lib, tmp_path, models, counters, monkeypatch):
    """The first file in order is read last (slow disk): its bytes were claimed by the later copy,
    so it is filed once that copy's results are stored, in the same pass, without decoding."""
    import time

    sources, jobs = models
    folder = tmp_path / "order"
    folder.mkdir()
    picture(5).save(folder / "a.png")
    shutil.copy(folder / "a.png", folder / "b.png")
    slow_read = engine_module.read_source_bytes

    def read(source, options, name):
        if name.endswith("a.png"):
            time.sleep(0.3)
        return slow_read(source, options, name)

    monkeypatch.setattr(engine_module, "read_source_bytes", read)
    report = lib.index([folder], sources, options=OPTIONS)
    assert calls(jobs) == {"tag": 1, "nsfw": 1, "embed": 1} and counters["decode"] == [str(folder / "b.png")]
    assert report.reused == 1 and report.computed == 1
    files = rows(lib)
    assert files[str(folder / "a.png")]["content"] == files[str(folder / "b.png")]["content"] is not None


def test_copies_of_undecodable_bytes_are_each_recorded_as_errors(lib, tmp_path, models, counters):
    sources, _ = models
    folder = tmp_path / "broken"
    folder.mkdir()
    for name in ("x.jpg", "y.jpg"):
        (folder / name).write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    report = lib.index([folder], sources, options=OPTIONS)
    assert report.errors == 2 and report.ok == 0 and len(counters["decode"]) == 1
    assert {r["status"] for r in rows(lib).values()} == {"error"} and all(r["error"] for r in rows(lib).values())
