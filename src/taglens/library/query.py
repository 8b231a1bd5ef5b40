"""A library search end to end: filters bound to tag names, query parts embedded, ranked, shown.

`taglens.library.search` scores parts against the vector index; this module turns a
`taglens.library.Library.search` call into those parts (texts through the embedder's text
tower, images as stored or computed embeddings) and the ranked contents into `Hit`s.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from taglens.engine import EngineOptions, run
from taglens.errors import InvalidRequestError, LibraryError
from taglens.io.decode import ImageSource
from taglens.io.locations import is_uri
from taglens.library import db, vectors
from taglens.library import search as ranking
from taglens.library.models import tagger_tag_names
from taglens.library.reports import Hit
from taglens.models.tagnames import TagNames, candidates

if TYPE_CHECKING:
    from taglens.library import Library


RANK_ATTEMPTS = 3
"""Rankings per search. The vector index and the database are read at different moments, so an
indexing run elsewhere may remove ranked images in between (a search that ranked on a
generation whose six images were all gone by then found nothing: 1 run in ~8 of the concurrent
search test). Where ranked images are gone and the embeddings changed meanwhile, the search
ranks again on the index of the changed library; the last attempt keeps what it has."""


def search(
    lib: Library,
    text: Any = (),
    *,
    image: Any = (),
    minus: Any = (),
    minus_image: Any = (),
    tags: Sequence[str] = (),
    no_tags: Sequence[str] = (),
    max_nsfw: float | None = None,
    min_score: float | None = None,
    limit: int = 20,
    exclude: Collection[int] = (),
) -> list[Hit]:
    """`taglens.library.Library.search`."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    conn = lib.conn
    tag_model, nsfw_model = db.current_model(conn, "tag"), db.current_model(conn, "nsfw")
    if (tags or no_tags) and tag_model is None:
        raise LibraryError("the library has no tags; index with the tag task to filter by tag")
    if tags or no_tags:
        bound = tag_names(lib, [*tags, *no_tags]).resolve([*tags, *no_tags])
        tags, no_tags = bound[:len(tags)], bound[len(tags):]
    if max_nsfw is not None and nsfw_model is None:
        raise LibraryError("the library has no NSFW scores; index with the nsfw task to filter by them")
    filtered = bool(tags or no_tags or max_nsfw is not None or exclude)
    allowed = db.filtered_contents(conn, tags=tags, no_tags=no_tags, max_nsfw=max_nsfw,
                                   tag_model=tag_model and tag_model["id"],
                                   nsfw_model=nsfw_model and nsfw_model["id"]) if filtered else None
    if exclude:
        allowed = allowed[~np.isin(allowed, np.fromiter(exclude, np.int64))]
    texts = [(w, t) for w, t in weighted(text)] + [(-w, t) for w, t in weighted(minus)]
    images = [(w, x) for w, x in weighted(image)] + [(-w, x) for w, x in weighted(minus_image)]
    if not texts and not images:
        if min_score is not None:
            raise InvalidRequestError("a minimum score needs a text or an image to score against; "
                                      "filters alone list files without scores")
        return _filter_only(lib, allowed, limit, tag_model, nsfw_model)
    if not any(w > 0 for w, _ in texts + images):
        raise LibraryError("a search needs at least one text or image to look for, not only ones to push away from")
    parts = _parts(lib, texts, images)
    calibration = None
    if texts:
        embedder = lib.embedder()
        if getattr(embedder, "logit_bias", None) is not None:
            calibration = ranking.Calibration(float(embedder.logit_scale), float(embedder.logit_bias))
    model = lib.embed_model()["id"]
    for _ in range(RANK_ATTEMPTS):
        before = db.generation(conn, model)
        keys, scores = ranking.rank(lib.vector_index(), parts, calibration, limit=limit, allowed=allowed,
                                    min_score=min_score, exact_limit=lib.exact_limit)
        found, vanished = _hits(lib, [int(k) for k in keys], [float(s) for s in scores], limit)
        if not vanished or db.generation(conn, model) == before:
            break
    return found


def tag_names(lib: Library, names: Sequence[str] = ()) -> TagNames:
    """`taglens.library.Library.tag_names`."""
    model = db.current_model(lib.conn, "tag")
    if model is None:
        return TagNames((), source="the library", note="it holds no tags")
    listed = tagger_tag_names(model["model_id"], model["revision"])
    if listed is not None:
        return TagNames(listed, source=f"the library's tagger {model['model_id']}")
    carried = [c for name in names for c in candidates(name) if db.has_tag(lib.conn, model["id"], c)]
    return TagNames(carried, source="the library", note=f"none of its images carries such a tag, and the tag "
                    f"list of its tagger {model['model_id']} is not on this machine to say more")


def hits(lib: Library, contents: list[int], scores: list[float | None], limit: int) -> list[Hit]:
    """The files of ``contents`` (each content's paths in order) with their tags and NSFW result,
    at most ``limit``."""
    return _hits(lib, contents, scores, limit)[0]


def _hits(lib: Library, contents: list[int], scores: list[float | None], limit: int) -> tuple[list[Hit], list[int]]:
    """`hits`, and the contents that no indexed file holds any more (removed since they were ranked)."""
    tag_model, nsfw_model = db.current_model(lib.conn, "tag"), db.current_model(lib.conn, "nsfw")
    info = db.describe_contents(lib.conn, contents, tag_model and tag_model["id"], nsfw_model and nsfw_model["id"])
    vanished = [content for content in contents if not info[content]["paths"]]
    out: list[Hit] = []
    for content, score in zip(contents, scores):
        entry = info[content]
        tags = None if entry["tags"] is None else tuple(entry["tags"])
        for path in entry["paths"]:
            out.append(Hit(path, score, tags, entry["nsfw"], image=content))
            if len(out) >= limit:
                return out, vanished
    return out, vanished


def weighted(values: Any) -> list[tuple[float, Any]]:
    """Query parts as (weight, value): ``"2:beach"``, ``(2.0, x)`` or a bare value (weight 1)."""
    if isinstance(values, (str, os.PathLike, bytes)) or not isinstance(values, (list, tuple)):
        values = [values] if values is not None and values != () else []
    out = []
    for value in values:
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], (int, float)):
            out.append((float(value[0]), value[1]))
        elif isinstance(value, str):
            out.append(ranking.split_weight(value))
        else:
            out.append((1.0, value))
    return out


def _parts(lib: Library, texts: list[tuple[float, str]], images: list[tuple[float, Any]]) -> list[ranking.Part]:
    parts: list[ranking.Part] = []
    if texts:
        embedded = np.asarray(lib.embedder().embed_texts([t for _, t in texts]), dtype=np.float32)
        parts += [ranking.Part(vectors.normalise(v), w, True) for (w, _), v in zip(texts, embedded)]
    for w, source in images:
        parts.append(ranking.Part(vectors.normalise(_image_vector(lib, source)), w, False))
    dim = lib.embed_model()["dim"]
    for part in parts:
        if part.vector.shape != (dim,):
            raise LibraryError(f"query embedding has shape {part.vector.shape}, the library's is ({dim},)")
    return parts


def _image_vector(lib: Library, source: ImageSource) -> np.ndarray:
    """``source`` itself when it is an embedding (1-D); a stored embedding when it is an
    indexed, unchanged file; else computed now."""
    if isinstance(source, np.ndarray) and source.ndim == 1:
        return source.astype(np.float32, copy=False)
    model = lib.embed_model()
    if isinstance(source, str) and is_uri(source):
        row = db.file_by_path(lib.conn, source)  # imported from elsewhere: only its stored vector exists
        stored = db.embedding_of(lib.conn, row["content"], model["id"]) if row and row["content"] else None
        if stored is None:
            raise LibraryError(f"query image {source}: a URI the library holds no embedding for")
        return stored
    if isinstance(source, (str, os.PathLike)):
        path = os.path.abspath(os.fsdecode(source))
        row = db.file_by_path(lib.conn, path)
        try:
            st = os.stat(path)
        except OSError:
            raise LibraryError(f"query image {source}: no such file") from None
        if row and row["content"] and row["size"] == st.st_size and row["mtime"] == st.st_mtime:
            stored = db.embedding_of(lib.conn, row["content"], model["id"])
            if stored is not None:
                return stored
        source = path
    record = next(run([source], [lib.embedder().job(embedding=True)], EngineOptions(batch_size=1, workers=1)))
    if record.error is not None or record.embedding is None:
        raise LibraryError(f"query image {record.path}: {record.error or 'no embedding'}")
    return np.asarray(record.embedding, dtype=np.float32)


def _filter_only(lib: Library, allowed: np.ndarray | None, limit: int, tag_model: db.ModelRow | None,
                 nsfw_model: db.ModelRow | None) -> list[Hit]:
    if allowed is None:
        allowed = db.filtered_contents(lib.conn)
    keep = set(allowed.tolist())
    chosen = [r for r in db.files_listing(lib.conn) if r["content"] in keep][:limit]
    info = db.describe_contents(lib.conn, list({r["content"] for r in chosen}),
                                tag_model and tag_model["id"], nsfw_model and nsfw_model["id"])
    out = []
    for r in chosen:
        entry = info[r["content"]]
        out.append(Hit(r["path"], None, None if entry["tags"] is None else tuple(entry["tags"]), entry["nsfw"],
                       image=r["content"]))
    return out
