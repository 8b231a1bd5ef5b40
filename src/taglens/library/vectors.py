"""The vector index: derived from the database's embeddings, never the source of truth.

Up to `EXACT_LIMIT` vectors the index is a float32 matrix scanned exactly (one BLAS product per
query: recall 1 by construction); above it, an HNSW graph (usearch, float16 storage, cosine)
searched approximately, with candidates rescored exactly. Both live in ``<library>/vectors/``:
each build writes a new **generation folder** ``model-<id>-g<generation>-<random>/`` (``keys.npy``
and ``exact.npy`` or ``hnsw.usearch``), and only then replaces the pointer ``model-<id>.json``
(one atomic rename) that names the folder, the model, the kind and the database ``generation``
it was built from. A reader reads the pointer once and loads that folder, so keys and vectors
always come from the same build, whatever another process publishes meanwhile; the folder the
pointer named before is kept (a reader may be opening it), older ones are removed. On open the
index is rebuilt when the pointer is missing or unreadable, names another model or kind, or its
generation is behind the database; a stale HNSW graph is brought up to date (only the added and
removed vectors, written as a new generation), since building one from scratch takes minutes at
a million vectors.

Why these (benchmarks/vector_search.py, docs/library.md "Speed"): the exact scan is recall 1 and
stays under about 20 ms per query up to `EXACT_LIMIT` vectors on the 2-core reference machine.
Above it, real image embeddings are structured, and there an HNSW graph finds the 20 nearest in
about a millisecond at recall 0.97-0.99 (clustered stand-in vectors, M=32, ef 32-256). On *random* vectors no
index measured meets 20 ms at recall 0.95 for 1,000,000: HNSW needs most of the graph visited
(recall 0.95 at ef 4096 already at 50,000, hundreds of ms), while the best scan measured, faiss
RaBitQ (1 bit per dimension, fast scan) plus an exact rerank, reaches recall 0.97 only by
rescoring 10,000 candidates (65 ms and more under load), and its 2-bit form 0.94 / 0.996 at
300 / 1,000 candidates with a 308 MB scan per query. A scan costs the same on every library, so
HNSW stays, for the libraries people have. usearch rather than faiss's HNSW: about the same recall
per millisecond, but usearch stores float16 (exactly the database's values, half of float32),
removes keys (faiss's HNSW cannot, so every deletion would mean a rebuild), memory-maps a saved
index (a CLI search starts without reading it all), and is one small wheel.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from taglens.io.atomic import TempPath
from taglens.errors import LibraryError
from taglens.library import db

# Largest library searched exactly: a float32 scan of this many 1152-d vectors takes about 8 ms
# per query on the quiet 2-core reference machine (16-59 ms under load); above it an HNSW graph
# answers structured embeddings in about a millisecond (benchmarks/vector_search.py).
EXACT_LIMIT = 50_000
# M=32 over 16: recall at the same expansion rises on random vectors (20,000: ef 256 0.46 -> 0.72,
# ef 1024 0.87 -> 0.98) and on clustered ones (ef 64: 0.96 -> 0.98) for ~1.4x the build time;
# M=64 gains little more (ef 1024: 0.998) for larger links. Saved graphs keep their own M.
HNSW_CONNECTIVITY = 32
HNSW_EXPANSION_ADD = 128
HNSW_EXPANSION_SEARCH = 256
BUILDING = ".building-"  # prefix of a generation folder still being written
LOCK_FILE = ".lock"
ABANDONED_BUILD_SECONDS = 24 * 3600
FORMAT = 2  # 2: generation folders behind a pointer; 1: loose files replaced one by one


class VectorIndex(Protocol):
    kind: str
    keys: np.ndarray  # content ids, int64, sorted

    def __len__(self) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(P, D) unit queries -> (keys (P, k), cosines (P, k)), best first; keys -1 pad."""
        ...

    def vectors(self, keys: np.ndarray) -> np.ndarray:
        """float32 (n, D) for the given keys (every key must be present)."""
        ...

    def cosines(self, queries: np.ndarray, keys: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact cosines of every (or the given) vector with each query: (keys (n,), (n, P))."""
        ...


@dataclass
class ExactIndex:
    """A (N, D) float32 matrix (memory-mapped) and its sorted keys."""

    keys: np.ndarray
    matrix: np.ndarray
    kind: str = "exact"

    def __len__(self) -> int:
        return len(self.keys)

    def rows(self, keys: np.ndarray) -> np.ndarray:
        rows = np.searchsorted(self.keys, keys)
        if len(keys) and (rows.max(initial=0) >= len(self.keys) or not np.array_equal(self.keys[rows], keys)):
            raise KeyError("some keys are not in the vector index")
        return rows

    def vectors(self, keys: np.ndarray) -> np.ndarray:
        return np.asarray(self.matrix[self.rows(np.asarray(keys, dtype=np.int64))], dtype=np.float32)

    def cosines(self, queries: np.ndarray, keys: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if keys is None:
            return self.keys, self.matrix @ queries.T
        keys = np.asarray(keys, dtype=np.int64)
        return keys, self.vectors(keys) @ queries.T

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        keys, scores = self.cosines(queries)
        return top_k(keys, scores.T, k)


@dataclass
class HnswIndex:
    """A usearch HNSW graph over float16 vectors (cosine), keys = content ids."""

    index: Any
    keys: np.ndarray
    kind: str = "hnsw"

    def __len__(self) -> int:
        return len(self.keys)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        k = min(k, len(self.keys))
        self.index.expansion_search = max(HNSW_EXPANSION_SEARCH, k)
        matches = self.index.search(queries, k)
        keys = np.full((len(queries), k), -1, np.int64)
        cos = np.full((len(queries), k), -np.inf, np.float32)
        if len(queries) == 1:  # usearch answers one query with a trimmed 1-D match list
            found = np.asarray(matches.keys).reshape(-1)[:k]
            keys[0, :len(found)] = found
            cos[0, :len(found)] = 1.0 - np.asarray(matches.distances, np.float32).reshape(-1)[:len(found)]
        else:
            all_keys = np.asarray(matches.keys).reshape(len(queries), -1)
            all_distances = np.asarray(matches.distances, np.float32).reshape(len(queries), -1)
            for i, n in enumerate(np.asarray(matches.counts).reshape(-1)):
                keys[i, :n] = all_keys[i, :n]
                cos[i, :n] = 1.0 - all_distances[i, :n]
        return keys, cos

    def vectors(self, keys: np.ndarray) -> np.ndarray:
        keys = np.asarray(keys, dtype=np.uint64)
        if len(keys) == 0:
            return np.zeros((0, self.index.ndim), np.float32)
        got = self.index.get(keys, dtype=np.float32)
        got = [got] if len(keys) == 1 and isinstance(got, np.ndarray) and got.ndim == 1 else got
        if any(v is None for v in got):
            raise KeyError("some keys are not in the vector index")
        return np.stack(got).astype(np.float32)

    def cosines(self, queries: np.ndarray, keys: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        keys = self.keys if keys is None else np.asarray(keys, dtype=np.int64)
        out = np.empty((len(keys), len(queries)), np.float32)
        for start in range(0, len(keys), 65536):
            chunk = keys[start:start + 65536]
            vectors = self.vectors(chunk)
            out[start:start + len(chunk)] = normalise(vectors) @ queries.T
        return keys, out


def top_k(keys: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` per row of ``scores`` (P, n): (keys (P, k'), scores (P, k')), best first."""
    scores = np.atleast_2d(scores)
    k = min(k, scores.shape[1])
    if k == 0:
        return np.zeros((len(scores), 0), np.int64), np.zeros((len(scores), 0), np.float32)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, 1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    chosen = np.take_along_axis(part, order, 1)
    return keys[chosen], np.take_along_axis(part_scores, order, 1)


def normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


# ---- building, checking, opening ---------------------------------------------------------------


def pointer_file(folder: Path, model: int) -> Path:
    """The file naming the current generation folder of ``model``'s index (with its metadata)."""
    return folder / f"model-{model}.json"


def index_files(folder: Path, model: int, meta: dict[str, Any] | None = None) -> dict[str, Path]:
    """The pointer (``meta``) and the files of the generation it names (or of ``meta``'s)."""
    meta = read_meta(folder, model) if meta is None else meta
    generation = folder / (meta["folder"] if meta else f"model-{model}-missing")
    return {"meta": pointer_file(folder, model), "keys": generation / "keys.npy",
            "exact": generation / "exact.npy", "hnsw": generation / "hnsw.usearch"}


def read_meta(folder: Path, model: int) -> dict[str, Any] | None:
    try:
        meta = json.loads(pointer_file(folder, model).read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(meta, dict) and meta.get("format") == FORMAT and isinstance(meta.get("folder"), str)
    return meta if ok and "/" not in meta["folder"] and meta["folder"].startswith(f"model-{model}-g") else None


def index_bytes(folder: Path, model: int) -> int:
    """Bytes on disk of ``model``'s index: its pointer and every generation folder."""
    paths = [pointer_file(folder, model), *folder.glob(f"model-{model}-g*/*")]
    return sum(p.stat().st_size for p in paths if p.is_file())


def remove(folder: Path, model: int) -> None:
    """Delete ``model``'s index (pointer and every generation)."""
    pointer_file(folder, model).unlink(missing_ok=True)
    for old in folder.glob(f"model-{model}-g*"):
        shutil.rmtree(old, ignore_errors=True)
    for legacy in folder.glob(f"model-{model}.*"):  # format 1: loose files beside the pointer
        legacy.unlink(missing_ok=True)


def wanted_kind(count: int, exact_limit: int = EXACT_LIMIT) -> str:
    return "exact" if count <= exact_limit else "hnsw"


def freshness(conn: sqlite3.Connection, folder: Path, model: db.ModelRow, exact_limit: int = EXACT_LIMIT) -> str:
    """``fresh``, or why the index must be (re)built: ``missing``, ``other model``, ``other kind``, ``stale``."""
    meta = read_meta(folder, model["id"])
    files = index_files(folder, model["id"], meta)
    if meta is None or not files["keys"].exists() or not files[meta.get("kind", "exact")].exists():
        return "missing"
    if (meta.get("model_id"), meta.get("revision"), meta.get("dim")) != (model["model_id"], model["revision"], model["dim"]):
        return "other model"
    count = db.embedding_count(conn, model["id"])
    if meta.get("kind") != wanted_kind(count, exact_limit):
        return "other kind"
    if meta.get("generation") != db.generation(conn, model["id"]):
        return "stale"
    return "fresh"


def open_index(conn: sqlite3.Connection, folder: Path, model: db.ModelRow, *,
               exact_limit: int = EXACT_LIMIT) -> VectorIndex:
    """The index for ``model``'s embeddings, built or brought up to date first when needed."""
    state = freshness(conn, folder, model, exact_limit)
    if state == "stale" and (read_meta(folder, model["id"]) or {}).get("kind") == "hnsw":
        update_hnsw(conn, folder, model)
    elif state != "fresh":
        build(conn, folder, model, exact_limit=exact_limit)
    return load(folder, model["id"])


def load(folder: Path, model: int, *, attempts: int = 3) -> VectorIndex:
    """The index the pointer names now. A generation removed between reading the pointer and
    opening its files (two newer ones published meanwhile) is read again from the new pointer."""
    meta = read_meta(folder, model)
    if meta is None:
        raise LibraryError(f"the vector index of model {model} in {folder} is missing")
    files = index_files(folder, model, meta)
    try:
        keys = np.asarray(np.load(files["keys"], mmap_mode="r"))
        if meta["kind"] == "exact":
            return ExactIndex(keys, np.load(files["exact"], mmap_mode="r"))
        return HnswIndex(_usearch().restore(str(files["hnsw"]), view=True), keys)
    except FileNotFoundError:
        if attempts <= 1:
            raise
        return load(folder, model, attempts=attempts - 1)


def build(conn: sqlite3.Connection, folder: Path, model: db.ModelRow, *, exact_limit: int = EXACT_LIMIT) -> str:
    """Build the index from scratch from one consistent snapshot of the database; returns its kind."""
    folder.mkdir(parents=True, exist_ok=True)
    with db.read_snapshot(conn):  # the generation and the vectors agree
        generation = db.generation(conn, model["id"])
        dim = db.model_by_id(conn, model["id"])["dim"] or 0
        count = db.embedding_count(conn, model["id"])
        kind = wanted_kind(count, exact_limit)
        target = _new_generation(folder, model["id"], generation)
        keys = np.empty(count, np.int64)
        if kind == "exact":
            matrix = np.lib.format.open_memmap(target / "exact.npy", mode="w+", dtype=np.float32, shape=(count, dim))
            filled = 0
            for batch_keys, vectors in db.embeddings_for(conn, model["id"], dim):
                keys[filled:filled + len(batch_keys)] = batch_keys
                matrix[filled:filled + len(batch_keys)] = normalise(vectors.astype(np.float32))
                filled += len(batch_keys)
            matrix.flush()
            del matrix
        else:
            index = _new_hnsw(dim)
            filled = 0
            for batch_keys, vectors in db.embeddings_for(conn, model["id"], dim):
                keys[filled:filled + len(batch_keys)] = batch_keys
                index.add(batch_keys.astype(np.uint64), normalise(vectors.astype(np.float32)))
                filled += len(batch_keys)
            index.save(str(target / "hnsw.usearch"))
    _publish(folder, model, target, keys, kind, generation, dim)
    return kind


def update_hnsw(conn: sqlite3.Connection, folder: Path, model: db.ModelRow) -> tuple[int, int]:
    """Add the vectors the graph lacks and remove those the database no longer has, as a new
    generation; (added, removed)."""
    Index = _usearch()
    files = index_files(folder, model["id"])
    old_keys = np.load(files["keys"])
    index = Index.restore(str(files["hnsw"]))
    with db.read_snapshot(conn):
        generation = db.generation(conn, model["id"])
        keys = db.embedding_keys(conn, model["id"])
        # vectors are never rewritten under a key (results are a function of content and model),
        # so the key sets alone say what changed
        removed = np.setdiff1d(old_keys, keys, assume_unique=True)
        added = np.setdiff1d(keys, old_keys, assume_unique=True)
        if len(removed):
            index.remove(removed.astype(np.uint64))
        for start in range(0, len(added), 10_000):
            chunk = added[start:start + 10_000]
            vectors = np.stack([db.embedding_of(conn, int(c), model["id"]) for c in chunk])
            index.add(chunk.astype(np.uint64), normalise(vectors))
    target = _new_generation(folder, model["id"], generation)
    index.save(str(target / "hnsw.usearch"))
    _publish(folder, model, target, keys, "hnsw", generation, index.ndim)
    return len(added), len(removed)


def _usearch() -> Any:
    try:
        from usearch.index import Index
    except ImportError:
        raise LibraryError(
            f"libraries above {EXACT_LIMIT:,} images use an HNSW index from the usearch package: "
            "pip install 'taglens[library]'"
        ) from None
    return Index


def _new_hnsw(dim: int) -> Any:
    return _usearch()(ndim=dim, metric="cos", dtype="f16", connectivity=HNSW_CONNECTIVITY,
                 expansion_add=HNSW_EXPANSION_ADD, expansion_search=HNSW_EXPANSION_SEARCH)


def _new_generation(folder: Path, model: int, generation: int) -> Path:
    """A private folder for one build, renamed into its published name by `_publish` (unique even
    for builds of one generation racing; cleanup never touches a folder still being built)."""
    target = folder / f"{BUILDING}model-{model}-g{generation}-{secrets.token_hex(4)}"
    target.mkdir()
    return target


def _publish(folder: Path, model: db.ModelRow, built: Path, keys: np.ndarray, kind: str, generation: int,
             dim: int) -> None:
    """Make the ``built`` folder the current generation: its keys, its published name, then the
    pointer (one atomic rename); then remove every generation but this one and the one it
    replaces. Publishing and cleaning up hold the folder's lock, so one publisher never removes
    another's folder before its pointer names it."""
    from filelock import FileLock

    with open(built / "keys.npy", "wb") as f:
        np.save(f, keys)  # a file object: np.save would add ".npy" to a name
    with FileLock(folder / LOCK_FILE):
        target = built.with_name(built.name.removeprefix(BUILDING))
        os.replace(built, target)
        previous = read_meta(folder, model["id"])
        meta = {"format": FORMAT, "folder": target.name, "kind": kind, "model": model["id"],
                "model_id": model["model_id"], "revision": model["revision"], "dim": dim,
                "count": int(len(keys)), "generation": generation}
        with TempPath(pointer_file(folder, model["id"])) as pointer:
            pointer.tmp.write_text(json.dumps(meta, indent=1))
        keep = {target.name} | ({previous["folder"]} if previous else set())
        for old in folder.glob(f"model-{model['id']}-g*"):
            if old.name not in keep and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)  # a reader that still maps its files keeps them
        for legacy in folder.glob(f"model-{model['id']}.*"):
            if legacy.suffix != ".json":
                legacy.unlink(missing_ok=True)  # format 1 loose files
        for stale in folder.glob(f"{BUILDING}model-{model['id']}-g*"):
            if time.time() - stale.stat().st_mtime > ABANDONED_BUILD_SECONDS:
                shutil.rmtree(stale, ignore_errors=True)  # a build killed half way
