"""Schema migrations: fresh, upgrade from an older version, a failing step, and a newer DB refused."""

from __future__ import annotations

import os
import sqlite3

import pytest

from taglens.errors import LibraryVersionError
from taglens.library import db


def tables(conn):
    return {r["name"] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_fresh_database_is_at_the_latest_version_in_wal_mode(tmp_path):
    conn = db.connect(tmp_path / "l.db")
    assert db.schema_version(conn) == db.VERSION
    assert {"files", "contents", "models", "tag_sets", "tags", "nsfw", "embeddings"} <= tables(conn)
    assert conn.execute("PRAGMA journal_mode").fetchone()["journal_mode"] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()["foreign_keys"] == 1


def test_upgrade_from_an_older_version_keeps_the_data(tmp_path):
    path = tmp_path / "l.db"
    conn = db.connect(path)
    with db.transaction(conn):
        db.upsert_file(conn, "/x.png", 3, 1.0, None, "error", "bad")
    conn.close()
    step = db.Migration(db.VERSION + 1, "add a note column", ("ALTER TABLE files ADD COLUMN note TEXT",
                                                             "UPDATE files SET note = 'migrated'"))
    conn = db.connect(path, migrations=[*db.MIGRATIONS, step])
    assert db.schema_version(conn) == db.VERSION + 1
    assert conn.execute("SELECT path, error, note FROM files").fetchall() == [
        {"path": "/x.png", "error": "bad", "note": "migrated"}]


def test_a_failing_migration_leaves_the_database_as_it_was(tmp_path):
    path = tmp_path / "l.db"
    db.connect(path).close()
    broken = db.Migration(db.VERSION + 1, "half done", ("CREATE TABLE half (x)", "THIS IS NOT SQL"))
    with pytest.raises(sqlite3.OperationalError):
        db.connect(path, migrations=[*db.MIGRATIONS, broken])
    conn = db.connect(path)
    assert db.schema_version(conn) == db.VERSION and "half" not in tables(conn)


def test_a_database_from_a_newer_taglens_is_refused(tmp_path):
    path = tmp_path / "l.db"
    conn = db.connect(path)
    conn.execute(f"PRAGMA user_version = {db.VERSION + 5}")
    conn.close()
    with pytest.raises(LibraryVersionError, match=f"version {db.VERSION + 5}"):
        db.connect(path)


def test_migrating_an_empty_file_from_zero(tmp_path):
    path = tmp_path / "l.db"
    sqlite3.connect(path).close()  # an empty database: version 0
    conn = db.connect(path)
    assert db.schema_version(conn) == db.VERSION


def test_embeddings_are_never_rewritten_and_bump_the_generation(tmp_path):
    import numpy as np

    conn = db.connect(tmp_path / "l.db")
    with db.transaction(conn):
        model = db.model_row(conn, "embed", "m", "r")["id"]
        content = db.content_id(conn, "ab" * 32, 2, 2)
        g0 = db.generation(conn, model)
        db.write_embedding(conn, content, model, np.ones(4, np.float32) / 2)
        db.write_embedding(conn, content, model, np.zeros(4, np.float32))  # kept as it was
    assert db.generation(conn, model) == g0 + 1
    np.testing.assert_array_equal(db.embedding_of(conn, content, model), np.full(4, 0.5, np.float32))
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE embeddings SET vector = x'00'")


def test_unsafe_score():
    from taglens.records import NsfwResult

    assert db.unsafe_score(NsfwResult("normal", 0.9, {"normal": 0.9, "nsfw": 0.1}, False)) == 0.1
    multi = NsfwResult("porn", 0.7, {"normal": 0.2, "porn": 0.7, "hentai": 0.05, "sexy": 0.3}, True)
    assert db.unsafe_score(multi) == 0.7
    assert db.unsafe_score(NsfwResult("neutral", 1.0, {"neutral": 1.0, "drawings": 0.0}, False)) == 0.0


@pytest.mark.parametrize("raw", [b"/p/plain.jpg", b"/p/bad\xff\xfe.jpg", b"/p/\xef\xbf\xbe-literal-fffe\xff.jpg",
                                 b"/p/caf\xc3\xa9.jpg", b"/p/\xef\xbf\xbe\xef\xbf\xbeab.jpg", b"/\x80/x.png"])
def test_paths_round_trip_through_their_stored_form(raw):
    path = os.fsdecode(raw)
    stored = db.to_db_path(path)
    stored.encode("utf-8")  # SQLite holds it as text
    assert os.fsencode(db.from_db_path(stored)) == raw
    folder = path.rsplit("/", 1)[0] + "/"
    assert stored.startswith(db.to_db_path(folder))  # a folder's stored path prefixes its files'
