"""The vector index is derived: rebuilt when missing, stale, of another kind or from another model."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from taglens.engine import EngineOptions
from taglens.library import Library, db, vectors

from .conftest import make_photos
from .fakes import fake_models

OPTIONS = EngineOptions(batch_size=2, workers=2)


def meta(lib):
    return vectors.read_meta(lib.vectors_folder, db.current_model(lib.conn, "embed")["id"])


def db_keys(lib):
    return db.embedding_keys(lib.conn, db.current_model(lib.conn, "embed")["id"])


def test_built_after_indexing_and_fresh(lib, photos, models):
    lib.index([photos], models[0], options=OPTIONS)
    m = meta(lib)
    assert m["kind"] == "exact" and m["count"] == 6
    model = db.current_model(lib.conn, "embed")
    assert vectors.freshness(lib.conn, lib.vectors_folder, model) == "fresh"
    assert np.array_equal(lib.vector_index().keys, db_keys(lib))
    assert lib.verify().ok


def test_rebuilt_when_missing(lib, photos, models):
    lib.index([photos], models[0], options=OPTIONS)
    for path in lib.vectors_folder.iterdir():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    model = db.current_model(lib.conn, "embed")
    assert vectors.freshness(lib.conn, lib.vectors_folder, model) == "missing"
    assert len(lib.search(image=str(sorted(photos.iterdir())[0]), limit=10)) == 6
    assert meta(lib)["count"] == 6


def test_rebuilt_when_stale(lib, photos, models):
    lib.index([photos], models[0], options=OPTIONS)
    before = meta(lib)["generation"]
    model = db.current_model(lib.conn, "embed")
    with db.transaction(lib.conn):
        lib.conn.execute("DELETE FROM embeddings WHERE content = (SELECT min(content) FROM embeddings)")
    assert vectors.freshness(lib.conn, lib.vectors_folder, model) == "stale"
    index = lib.vector_index()
    assert len(index) == 5 and np.array_equal(index.keys, db_keys(lib)) and meta(lib)["generation"] > before


def test_rebuilt_for_another_model(lib, photos, models):
    lib.index([photos], models[0], options=OPTIONS)
    model = db.current_model(lib.conn, "embed")
    path = vectors.index_files(lib.vectors_folder, model["id"])["meta"]
    m = json.loads(path.read_text())
    path.write_text(json.dumps(dict(m, revision="someone-else")))
    assert vectors.freshness(lib.conn, lib.vectors_folder, model) == "other model"
    lib.vector_index()
    assert meta(lib)["revision"] == model["revision"]
    # a new embedding model gets its own index; search uses it
    sources, _ = fake_models(revision="r2", tasks=("embed",))
    lib.index([photos], sources, options=OPTIONS)
    assert meta(lib)["revision"] == "r2"


def test_hnsw_is_updated_in_place_and_switches_kind_by_size(tmp_path, models, embedder):
    folder = tmp_path / "p"
    make_photos(folder, 4)
    lib = Library.open(tmp_path / "l", create=True, embedder_loader=lambda *a: embedder, exact_limit=5)
    lib.index([folder], models[0], options=OPTIONS)
    assert meta(lib)["kind"] == "exact"
    make_photos(folder, 3, start=10)
    lib.index([folder], models[0], options=OPTIONS)
    assert meta(lib)["kind"] == "hnsw" and meta(lib)["count"] == 7
    assert not vectors.index_files(lib.vectors_folder, meta(lib)["model"])["exact"].exists()
    (folder / "img000.png").unlink()
    make_photos(folder, 1, start=20)
    lib.index([folder], models[0], options=OPTIONS)  # one removed, one added: an update, not a rebuild
    index = lib.vector_index()
    assert index.kind == "hnsw" and np.array_equal(np.sort(index.keys), db_keys(lib))
    assert len(index.index) == 7
    for path in sorted(folder.iterdir()):
        assert lib.search(image=str(path), limit=1)[0].path == str(path)
    assert lib.verify().ok
    lib.close()


def test_verify_finds_an_index_that_disagrees_with_the_database(lib, photos, models):
    lib.index([photos], models[0], options=OPTIONS)
    model = db.current_model(lib.conn, "embed")
    files = vectors.index_files(lib.vectors_folder, model["id"])
    matrix = np.load(files["exact"])
    matrix[[0, 1]] = matrix[[1, 0]]
    with open(files["exact"], "wb") as f:
        np.save(f, matrix)
    report = lib.verify()
    assert not report.ok and "different vector" in report.problems[0]


@pytest.mark.parametrize("exact_limit", [vectors.EXACT_LIMIT, 5], ids=["exact", "hnsw"])
def test_search_never_fails_while_another_library_handle_indexes(tmp_path, embedder, exact_limit):
    """Keys, vectors and metadata are published as one generation: a reader never pairs the keys
    of one build with the matrix of another (issue 18: one IndexError in ~118,800 searches)."""
    folder = tmp_path / "p"
    make_photos(folder, 4)
    writer = Library.open(tmp_path / "l", create=True, embedder_loader=lambda *a: embedder, exact_limit=exact_limit)
    sources, _ = fake_models()
    writer.index([folder], sources, options=OPTIONS)
    reader = Library.open(tmp_path / "l", embedder_loader=lambda *a: embedder, exact_limit=exact_limit)
    done = threading.Event()
    failures: list[str] = []
    searches = [0]

    def index_rounds() -> None:
        try:
            for round_ in range(20):
                make_photos(folder, 2, start=100 + 2 * round_)
                if round_ % 3 == 2:
                    sorted(folder.iterdir())[0].unlink()
                writer.index([folder], sources, options=OPTIONS)
        finally:
            done.set()

    thread = threading.Thread(target=index_rounds)
    thread.start()
    while not done.is_set() or searches[0] < 300:
        try:
            hits = reader.search("a picture", limit=5)
            if not hits:
                failures.append("no hits")
        except Exception as exc:  # noqa: BLE001 (any failure is what this test counts)
            failures.append(f"{type(exc).__name__}: {exc}")
        searches[0] += 1
    thread.join()
    assert failures == [] and searches[0] >= 300
    generations = [p for p in writer.vectors_folder.iterdir() if p.is_dir()]
    assert 1 <= len(generations) <= 3  # the current, the one it replaced, maybe one a reader built
    assert np.array_equal(np.sort(reader.vector_index().keys), db_keys(reader))
    assert meta(reader)["kind"] == ("exact" if exact_limit > 100 else "hnsw")
    writer.close()
    reader.close()


def test_a_search_ranks_again_when_the_ranked_images_were_removed_meanwhile(tmp_path, embedder, monkeypatch):
    """The race that test found, made certain: another handle's indexing run removes every image
    the search just ranked, before the search reads their files. It ranks again on the changed
    library's index and shows images that are still there."""
    from taglens.library import search as ranking

    folder = tmp_path / "p"
    make_photos(folder, 8)
    writer = Library.open(tmp_path / "l", create=True, embedder_loader=lambda *a: embedder, exact_limit=5)
    sources, _ = fake_models()
    writer.index([folder], sources, options=OPTIONS)
    reader = Library.open(tmp_path / "l", embedder_loader=lambda *a: embedder, exact_limit=5)
    paths = {c: p for p, c in db_files(reader)}
    real_rank, calls = ranking.rank, []

    def rank_then_remove(*args, **kwargs):
        keys, scores = real_rank(*args, **kwargs)
        if not calls:
            for content in keys:
                paths[int(content)].unlink()
            writer.index([folder], sources, options=OPTIONS)
        calls.append(len(keys))
        return keys, scores

    monkeypatch.setattr(ranking, "rank", rank_then_remove)
    hits = reader.search("a picture", limit=3)
    assert calls == [3, 3]
    assert len(hits) == 3 and all(Path(h.path).exists() for h in hits)
    writer.close()
    reader.close()


def test_an_image_without_files_but_with_an_unchanged_index_is_ranked_once(lib, photos, models, monkeypatch):
    """A ranked image whose files are gone while the embeddings did not change (no indexing run
    is under way) is left out without ranking again and again."""
    from taglens.library import search as ranking

    lib.index([photos], models[0], options=OPTIONS)
    path, content = db_files(lib)[0]
    with db.transaction(lib.conn):
        lib.conn.execute("DELETE FROM files WHERE content = ?", (content,))
    real_rank, calls = ranking.rank, []

    def counted(*args, **kwargs):
        calls.append(1)
        return real_rank(*args, **kwargs)

    monkeypatch.setattr(ranking, "rank", counted)
    hits = lib.search("a picture", limit=20)
    assert len(calls) == 1
    assert len(hits) == len(db_files(lib)) and str(path) not in {str(h.path) for h in hits}


def db_files(lib) -> list[tuple[Path, int]]:
    return [(Path(db.from_db_path(r["path"])), int(r["content"])) for r in lib.conn.execute(
        "SELECT path, content FROM files WHERE status = 'ok' ORDER BY path")]
