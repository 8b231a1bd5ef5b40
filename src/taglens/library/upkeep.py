"""Looking after a library: statistics, integrity checks and clean-up (``taglens library ...``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from taglens.counts import counted
from taglens.library import db, vectors
from taglens.library.reports import PruneReport, VerifyReport
from taglens.io.locations import is_uri

if TYPE_CHECKING:
    from taglens.library import Library


def stats(lib: Library) -> dict[str, Any]:
    """Counts of files, images and results per model, sizes on disk, and the vector index state."""
    counts = db.counts(lib.conn)
    out: dict[str, Any] = {
        "library": str(lib.folder),
        "schema_version": db.schema_version(lib.conn),
        "files": counts["files"],
        "indexed": counts["indexed"],
        "errors": counts["errors"],
        "remote": sum(1 for path in db.uri_like_paths(lib.conn) if is_uri(path)),
        "images": counts["images"],
        "database_bytes": sum(p.stat().st_size for p in lib.folder.glob(db.FILE_NAME + "*") if p.is_file()),
        "models": [],
    }
    for model in db.models(lib.conn):
        current = db.current_model(lib.conn, model["task"])
        out["models"].append({
            "task": model["task"], "model_id": model["model_id"], "revision": model["revision"],
            "current": current is not None and current["id"] == model["id"], **db.model_counts(lib.conn, model),
        })
    embed = db.current_model(lib.conn, "embed")
    if embed is not None and embed["dim"] is not None:
        meta = vectors.read_meta(lib.vectors_folder, embed["id"]) or {}
        out["vector_index"] = {
            "state": vectors.freshness(lib.conn, lib.vectors_folder, embed, lib.exact_limit),
            "kind": meta.get("kind"), "count": meta.get("count"), "dim": embed["dim"],
            "bytes": vectors.index_bytes(lib.vectors_folder, embed["id"]),
        }
    return out


def verify(lib: Library, *, check_files: bool = True) -> VerifyReport:
    """Database integrity, references, and the vector index against the database."""
    report = VerifyReport(problems=db.integrity_problems(lib.conn))
    embed = db.current_model(lib.conn, "embed")
    if embed is not None and embed["dim"] is not None:
        state = vectors.freshness(lib.conn, lib.vectors_folder, embed, lib.exact_limit)
        if state != "fresh":
            report.notes.append(f"vector index: {state} (rebuilt on the next search)")
        else:
            index = vectors.load(lib.vectors_folder, embed["id"])
            keys = db.embedding_keys(lib.conn, embed["id"])
            if not np.array_equal(np.asarray(index.keys), keys):
                report.problems.append("vector index keys differ from the database's embeddings")
            else:
                sample = keys[np.linspace(0, len(keys) - 1, num=min(len(keys), 64)).astype(int)] if len(keys) else keys
                for key in sample:
                    stored = vectors.normalise(db.embedding_of(lib.conn, int(key), embed["id"]))
                    got = index.vectors(np.array([key]))[0]
                    if float(np.dot(stored, vectors.normalise(got))) < 0.999:
                        report.problems.append(f"vector index holds a different vector for image {int(key)}")
                        break
                report.notes.append(f"vector index: fresh, {counted(len(keys), 'vector')} ({index.kind})")
    if check_files:
        missing = changed = 0
        for row in db.all_files(lib.conn):
            if is_uri(row["path"]):
                continue  # imported from elsewhere: nothing on this disk to compare with
            try:
                st = os.stat(row["path"])
            except OSError:
                missing += 1
                continue
            if (st.st_size, st.st_mtime) != (row["size"], row["mtime"]):
                changed += 1
        if missing:
            report.notes.append(f"{counted(missing, 'file is', 'files are')} gone from disk "
                                "(`taglens library prune` removes them)")
        if changed:
            report.notes.append(f"{counted(changed, 'file')} changed since indexed (`taglens index` updates them)")
    return report


def prune(lib: Library, *, dry_run: bool = False) -> PruneReport:
    """Remove files gone from disk (URIs imported from elsewhere are kept), images no file points
    at, and results of superseded models."""
    report = PruneReport(dry_run=dry_run)
    gone = [r["id"] for r in db.all_files(lib.conn) if not is_uri(r["path"]) and not os.path.exists(r["path"])]
    current = {m["task"]: m["id"] for m in (db.current_model(lib.conn, t) for t in db.TASKS) if m}
    old = [m["id"] for m in db.models(lib.conn) if current.get(m["task"]) != m["id"]]
    report.missing_files, report.old_models = len(gone), len(old)
    try:
        with db.transaction(lib.conn):
            db.delete_files(lib.conn, gone)
            report.orphan_contents = db.delete_orphan_contents(lib.conn)
            db.delete_models(lib.conn, old)
            if dry_run:
                raise _Rollback  # count what would go, keep it all
    except _Rollback:
        pass
    if not dry_run:
        for model in old:
            vectors.remove(lib.vectors_folder, model)
    return report


class _Rollback(Exception):
    pass
