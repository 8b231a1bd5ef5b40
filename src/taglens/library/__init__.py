"""The library: folders indexed once and kept current, searchable by text, image, tag and NSFW score.

    lib = Library.open(create=True)             # --library DIR, else $TAGLENS_LIBRARY, else the user data dir
    lib.index(["~/Pictures"])                   # tag, nsfw and embed in one pass over what is new or changed
    hits = lib.search("a dog on a beach", tags=["outdoors"], max_nsfw=0.2)
    groups = lib.duplicates()

The SQLite database (`db`) is the single source of truth; the vector index (`vectors`) is derived
from it. Change detection is in `scan`, scoring in `search`, grouping in `duplicates`, and the one
place real models are named in `models`. Each ``taglens`` library command mirrors a method here.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from taglens.engine import EngineOptions, run
from taglens.errors import InvalidRequestError, LibraryError, NoLibraryError
from taglens.io.decode import ImageSource
from taglens.library import db, imports, scan, upkeep, vectors
from taglens.library import duplicates as dup
from taglens.library import search as ranking
from taglens.library.imports import ImportReport
from taglens.library.models import (LazyModel, LoadedModel, ModelSource, load_embedder, load_models, loaded,
                                    tagger_tag_names)
from taglens.library.reports import DuplicateGroup, Hit, IndexReport, PruneReport, VerifyReport
from taglens.io.locations import is_uri
from taglens.records import Record
from taglens.models.tagnames import TagNames, candidates

DB_NAME = db.FILE_NAME
ENV_VAR = "TAGLENS_LIBRARY"

__all__ = [
    "DB_NAME", "ENV_VAR", "DuplicateGroup", "Hit", "ImportReport", "IndexReport", "LazyModel", "Library", "LoadedModel",
    "ModelSource", "PruneReport", "VerifyReport", "default_library_dir", "load_models", "loaded",
]


def default_library_dir(explicit: str | os.PathLike | None = None) -> Path:
    """``explicit`` (``--library DIR``), else ``$TAGLENS_LIBRARY``, else the platform's user data
    folder for taglens (e.g. ``~/.local/share/taglens`` on Linux)."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("taglens"))


EmbedderLoader = Callable[[str, str], Any]


class Library:
    """A library folder: ``library.db`` and the ``vectors/`` it derives. Open with `Library.open`."""

    def __init__(self, folder: Path, conn: sqlite3.Connection, *, embedder_loader: EmbedderLoader,
                 exact_limit: int = vectors.EXACT_LIMIT):
        self.folder = folder
        self.conn = conn
        self.exact_limit = exact_limit
        self._embedder_loader = embedder_loader
        self._embedder: Any = None

    @classmethod
    def open(cls, path: str | os.PathLike | None = None, *, create: bool = False,
             embedder_loader: EmbedderLoader | None = None, device: str = "auto", dtype: str = "float32",
             exact_limit: int = vectors.EXACT_LIMIT) -> Library:
        """Open the library at ``path`` (see `default_library_dir`). A folder without one raises
        `NoLibraryError` and is left as it was (a mistyped path must not become an empty library),
        unless ``create`` (indexing, importing) makes it.

        ``embedder_loader(model_id, revision)`` loads the text/image embedder that search needs; by
        default the SigLIP/CLIP checkpoint the library was indexed with.
        """
        folder = default_library_dir(path)
        if not (folder / DB_NAME).is_file():
            if not create:
                raise NoLibraryError(f"no library at {folder} (no {DB_NAME} in it); indexing or importing "
                                     "images creates one")
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LibraryError(f"cannot create the library folder {folder}: {exc.strerror or exc}") from None
        if embedder_loader is None:
            def embedder_loader(model_id: str, revision: str) -> Any:
                return load_embedder(model_id, revision, device=device, dtype=dtype)
        try:
            conn = db.connect(folder / DB_NAME)
        except sqlite3.DatabaseError as exc:
            raise LibraryError(f"{folder / DB_NAME}: not a usable SQLite database ({exc})") from None
        return cls(folder, conn, embedder_loader=embedder_loader, exact_limit=exact_limit)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def vectors_folder(self) -> Path:
        return self.folder / "vectors"

    # ---- index ----------------------------------------------------------------------------------

    def index(
        self,
        paths: Iterable[str | os.PathLike],
        models: Sequence[ModelSource] | None = None,
        *,
        recursive: bool = True,
        options: EngineOptions | None = None,
        retry_errors: bool = False,
        on_record: Callable[[Record], None] | None = None,
        on_total: Callable[[int], None] | None = None,
    ) -> IndexReport:
        """Bring the library up to date with the images under ``paths``; see `taglens.library.scan`.

        Models (default: `load_models()`) are loaded only when some image needs them. Results are
        committed every ``options.batch_size`` images, so a killed run loses at most one batch.
        ``on_record`` sees each record computed; ``on_total`` is told how many images go through
        the models once the folders are compared with the library (before the first record), and
        again should copies met later need computing after all.
        """
        started = time.perf_counter()
        options = options or EngineOptions()
        sources = {m.task: m for m in (load_models() if models is None else models)}
        unknown = set(sources) - set(db.TASKS)
        if unknown:
            raise LibraryError(f"unknown task(s) {', '.join(sorted(unknown))}; tasks are {', '.join(db.TASKS)}")
        roots = scan.normalise_roots(paths)
        for root in roots:  # a missing root (an unmounted drive) must not read as "every file deleted"
            if not os.path.exists(root):
                raise LibraryError(f"{root}: no such file or folder")
        with db.transaction(self.conn):
            model_ids = {task: db.model_row(self.conn, task, *source.identity())["id"]
                         for task, source in sources.items()}
        plan = scan.plan(self.conn, roots, model_ids, recursive=recursive, retry_errors=retry_errors,
                         workers=options.workers)
        report = IndexReport(seen=plan.seen, unchanged=plan.unchanged, failed_before=plan.failed_before,
                             hashed=plan.hashed, reused=len(plan.attach))
        if on_total is not None:
            on_total(plan.to_compute)
        for start in range(0, len(plan.attach), 500):
            with db.transaction(self.conn):
                for item in plan.attach[start:start + 500]:
                    db.upsert_file(self.conn, item.path, item.size, item.mtime, item.content)
        for tasks, group in sorted(plan.compute.items(), key=lambda kv: sorted(kv[0])):
            jobs = []
            for task in db.TASKS:
                if task in tasks:
                    jobs.append(sources[task].job())
                    if task not in report.loaded:
                        report.loaded.append(task)
            self._compute(group, jobs, {t: model_ids[t] for t in tasks}, options, report, on_record)
        # copies of a new image met in the same run: computed once above, attached now
        late = []
        with db.transaction(self.conn):
            for item in plan.copies:
                content = db.content_by_sha(self.conn, item.sha256)
                if content is None:
                    late.append(item.path)
                else:
                    db.upsert_file(self.conn, item.path, item.size, item.mtime, content["id"])
                    report.reused += 1
        if late:
            if on_total is not None:
                on_total(plan.to_compute + len(late))
            jobs = [sources[t].job() for t in db.TASKS if t in model_ids]
            self._compute(late, jobs, model_ids, options, report, on_record)
        with db.transaction(self.conn):
            report.deleted = db.delete_files(self.conn, plan.deleted)
            db.delete_orphan_contents(self.conn)
        if "embed" in model_ids:
            self._refresh_vectors(model_ids["embed"])
        report.seconds = time.perf_counter() - started
        return report

    def _compute(self, paths: list[str], jobs: list, model_ids: dict[str, int], options: EngineOptions,
                 report: IndexReport, on_record: Callable[[Record], None] | None) -> None:
        pending: list[Record] = []

        def commit() -> None:
            with db.transaction(self.conn):
                for record in pending:
                    self._store(record, model_ids)
            pending.clear()

        for record in run(paths, jobs, options):
            pending.append(record)
            report.count(record)
            if on_record is not None:
                on_record(record)
            if len(pending) >= options.batch_size:
                commit()
        if pending:
            commit()

    def _store(self, record: Record, model_ids: dict[str, int], *, path: str | None = None, size: int | None = None,
               mtime: float | None = None, every_task: bool = True) -> None:
        """Write one record's results and point its file at its content. ``path``/``size``/``mtime``
        replace the record's (import); ``every_task=False`` skips a task whose field is empty.

        A task whose job failed on the image gets a ``task_errors`` row instead of a result, and
        the image's other results are kept: the next index run computes only that task again.
        Only an image that could not be read or decoded is filed as a failed file."""
        path = record.path if path is None else path
        size = record.size if size is None else size
        mtime = record.mtime if mtime is None else mtime
        if size is None or mtime is None:
            return  # vanished before it could be read: nothing to remember
        if (record.error is not None and not record.task_errors) or record.sha256 is None:
            db.upsert_file(self.conn, path, size, mtime, None, "error", record.error or "no content hash")
            return
        content = db.content_id(self.conn, record.sha256, record.width or 0, record.height or 0)
        for task, model in model_ids.items():
            if task == "tag" and record.tags is not None:
                db.write_tags(self.conn, content, model, record.tags)
            elif task == "nsfw" and record.nsfw is not None:
                db.write_nsfw(self.conn, content, model, record.nsfw)
            elif task == "embed" and record.embedding is not None:
                db.write_embedding(self.conn, content, model, record.embedding)
            elif task in record.task_errors:
                db.write_task_error(self.conn, task, content, model, record.task_errors[task])
                continue
            elif every_task:
                raise LibraryError(f"the {task} job did not fill its field for {record.path}")
            else:
                continue
            db.clear_task_error(self.conn, content, model)
        db.upsert_file(self.conn, path, size, mtime, content)

    def _refresh_vectors(self, model: int) -> None:
        row = self.conn.execute("SELECT * FROM models WHERE id = ?", (model,)).fetchone()
        if row["dim"] is None:
            return
        if vectors.freshness(self.conn, self.vectors_folder, row, self.exact_limit) != "fresh":
            vectors.open_index(self.conn, self.vectors_folder, row, exact_limit=self.exact_limit)

    # ---- import ---------------------------------------------------------------------------------

    def import_parquet(self, files: Iterable[str | os.PathLike], *, batch_rows: int = imports.BATCH_ROWS
                       ) -> ImportReport:
        """Bring in the results of ``taglens analyze -f parquet`` (or the Ray job) without recomputing
        them; see `taglens.library.imports` for what happens to each row. Every file is checked
        before anything is written."""
        started = time.perf_counter()
        sources = [imports.open_parquet(f) for f in files]
        report = ImportReport(files=len(sources))
        for source in sources:
            self.import_records((r for batch in source.batches(batch_rows) for r in batch), source.models,
                                report=report)
        report.seconds = time.perf_counter() - started
        return report

    def import_records(self, records: Iterable[Record], models: dict[str, tuple[str, str]], *,
                       report: ImportReport | None = None, batch_size: int = 1000) -> ImportReport:
        """Store records computed elsewhere, their results filed under ``models`` (task -> (model_id,
        revision), tasks being tag, nsfw, embed), committed every ``batch_size`` records."""
        started = time.perf_counter()
        report = report if report is not None else ImportReport()
        unknown = set(models) - set(db.TASKS)
        if unknown:
            raise LibraryError(f"unknown task(s) {', '.join(sorted(unknown))}; tasks are {', '.join(db.TASKS)}")
        with db.transaction(self.conn):
            model_ids = {task: db.model_row(self.conn, task, *models[task])["id"] for task in db.TASKS
                         if task in models}
        report.models.update(models)
        pending: list[tuple[Record, str, int, float]] = []

        def commit() -> None:
            with db.transaction(self.conn):
                for record, path, size, mtime in pending:
                    self._store(record, model_ids, path=path, size=size, mtime=mtime, every_task=False)
            report.stored += len(pending)
            pending.clear()

        for record in records:
            report.rows += 1
            placed = imports.place(record, report)
            if placed is not None:
                pending.append(placed)
            if len(pending) >= batch_size:
                commit()
        commit()
        with db.transaction(self.conn):
            db.delete_orphan_contents(self.conn)  # paths that now point at other bytes
        if "embed" in model_ids:
            self._refresh_vectors(model_ids["embed"])
        report.seconds += time.perf_counter() - started
        return report

    def current_models(self) -> dict[str, str]:
        """task -> model id of the checkpoint last used for it (what ``taglens index`` keeps by default)."""
        return {task: row["model_id"] for task in db.TASKS if (row := db.current_model(self.conn, task))}

    # ---- search ---------------------------------------------------------------------------------

    def embed_model(self) -> db.ModelRow:
        """The embedding model search uses: the one the library was last indexed with."""
        row = db.current_model(self.conn, "embed")
        if row is None or row["dim"] is None:
            raise LibraryError(f"the library at {self.folder} has no embeddings yet; run `taglens index PATH` first")
        return row

    def vector_index(self) -> vectors.VectorIndex:
        """The vector index of `embed_model`, rebuilt first if missing, stale or from another model."""
        return vectors.open_index(self.conn, self.vectors_folder, self.embed_model(), exact_limit=self.exact_limit)

    def embedder(self) -> Any:
        """The loaded text/image embedder of `embed_model` (loaded on first use)."""
        if self._embedder is None:
            model = self.embed_model()
            embedder = self._embedder_loader(model["model_id"], model["revision"])
            if (embedder.model_id, embedder.revision) != (model["model_id"], model["revision"]):
                raise LibraryError(
                    f"the library was indexed with {model['model_id']} at revision {model['revision']}, but that "
                    f"checkpoint now loads as revision {embedder.revision}; run `taglens index` again to re-embed"
                )
            self._embedder = embedder
        return self._embedder

    def search(
        self,
        text: str | Sequence[str | tuple[float, str]] = (),
        *,
        image: ImageSource | Sequence[ImageSource | tuple[float, ImageSource]] = (),
        minus: str | Sequence[str | tuple[float, str]] = (),
        minus_image: ImageSource | Sequence[ImageSource | tuple[float, ImageSource]] = (),
        tags: Sequence[str] = (),
        no_tags: Sequence[str] = (),
        max_nsfw: float | None = None,
        min_score: float | None = None,
        limit: int = 20,
        exclude: Collection[int] = (),
    ) -> list[Hit]:
        """The best ``limit`` files for a query; see `taglens.library.search` for how parts combine.

        Texts may carry a weight as ``"2:beach"`` or ``(2.0, "beach")``; images are paths (or
        any engine source, or an embedding already computed: a 1-D array), weighted the same way.
        ``exclude`` leaves out contents by id (the HTTP service's image ids). With no query part
        at all, the files that pass the filters come back in path order with ``score`` None.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        tag_model, nsfw_model = db.current_model(self.conn, "tag"), db.current_model(self.conn, "nsfw")
        if (tags or no_tags) and tag_model is None:
            raise LibraryError("the library has no tags; index with the tag task to filter by tag")
        if tags or no_tags:
            bound = self.tag_names([*tags, *no_tags]).resolve([*tags, *no_tags])
            tags, no_tags = bound[:len(tags)], bound[len(tags):]
        if max_nsfw is not None and nsfw_model is None:
            raise LibraryError("the library has no NSFW scores; index with the nsfw task to filter by them")
        filtered = bool(tags or no_tags or max_nsfw is not None or exclude)
        allowed = db.filtered_contents(self.conn, tags=tags, no_tags=no_tags, max_nsfw=max_nsfw,
                                       tag_model=tag_model and tag_model["id"],
                                       nsfw_model=nsfw_model and nsfw_model["id"]) if filtered else None
        if exclude:
            allowed = allowed[~np.isin(allowed, np.fromiter(exclude, np.int64))]
        texts = [(w, t, True) for w, t in _weighted(text)] + [(-w, t, True) for w, t in _weighted(minus)]
        images = [(w, x, False) for w, x in _weighted(image)] + [(-w, x, False) for w, x in _weighted(minus_image)]
        if not texts and not images:
            if min_score is not None:
                raise InvalidRequestError("a minimum score needs a text or an image to score against; "
                                          "filters alone list files without scores")
            return self._filter_only(allowed, limit, tag_model, nsfw_model)
        if not any(w > 0 for w, _, _ in texts + images):
            raise LibraryError("a search needs at least one text or image to look for, "
                               "not only ones to push away from")
        parts = self._parts(texts, images)
        calibration = None
        if texts:
            embedder = self.embedder()
            if getattr(embedder, "logit_bias", None) is not None:
                calibration = ranking.Calibration(float(embedder.logit_scale), float(embedder.logit_bias))
        index = self.vector_index()
        keys, scores = ranking.rank(index, parts, calibration, limit=limit, allowed=allowed, min_score=min_score,
                                    exact_limit=self.exact_limit)
        return self._hits([int(k) for k in keys], [float(s) for s in scores], limit, tag_model, nsfw_model)

    def tag_names(self, names: Sequence[str] = ()) -> TagNames:
        """The tag names search filters are bound to (see `taglens.models.tagnames`): every tag of the
        library's tagger when its tag list is on this machine; else the spellings of ``names``
        that some image in the library carries."""
        model = db.current_model(self.conn, "tag")
        if model is None:
            return TagNames((), source="the library", note="it holds no tags")
        listed = tagger_tag_names(model["model_id"], model["revision"])
        if listed is not None:
            return TagNames(listed, source=f"the library's tagger {model['model_id']}")
        carried = [c for name in names for c in candidates(name) if db.has_tag(self.conn, model["id"], c)]
        return TagNames(carried, source="the library", note=f"none of its images carries such a tag, and the tag "
                        f"list of its tagger {model['model_id']} is not on this machine to say more")

    def _parts(self, texts: list[tuple[float, str, bool]], images: list[tuple[float, Any, bool]]) -> list[ranking.Part]:
        parts: list[ranking.Part] = []
        if texts:
            embedded = np.asarray(self.embedder().embed_texts([t for _, t, _ in texts]), dtype=np.float32)
            parts += [ranking.Part(vectors.normalise(v), w, True) for (w, _, _), v in zip(texts, embedded)]
        for w, source, _ in images:
            parts.append(ranking.Part(vectors.normalise(self._image_vector(source)), w, False))
        dim = self.embed_model()["dim"]
        for part in parts:
            if part.vector.shape != (dim,):
                raise LibraryError(f"query embedding has shape {part.vector.shape}, the library's is ({dim},)")
        return parts

    def _image_vector(self, source: ImageSource) -> np.ndarray:
        """``source`` itself when it is an embedding (1-D); a stored embedding when it is an
        indexed, unchanged file; else computed now."""
        if isinstance(source, np.ndarray) and source.ndim == 1:
            return source.astype(np.float32, copy=False)
        model = self.embed_model()
        if isinstance(source, str) and is_uri(source):
            row = db.file_by_path(self.conn, source)  # imported from elsewhere: only its stored vector exists
            stored = db.embedding_of(self.conn, row["content"], model["id"]) if row and row["content"] else None
            if stored is None:
                raise LibraryError(f"query image {source}: a URI the library holds no embedding for")
            return stored
        if isinstance(source, (str, os.PathLike)):
            path = os.path.abspath(os.fspath(source))
            row = db.file_by_path(self.conn, path)
            try:
                st = os.stat(path)
            except OSError:
                raise LibraryError(f"query image {source}: no such file") from None
            if row and row["content"] and row["size"] == st.st_size and row["mtime"] == st.st_mtime:
                stored = db.embedding_of(self.conn, row["content"], model["id"])
                if stored is not None:
                    return stored
            source = path
        record = next(run([source], [self.embedder().job(embedding=True)], EngineOptions(batch_size=1, workers=1)))
        if record.error is not None or record.embedding is None:
            raise LibraryError(f"query image {record.path}: {record.error or 'no embedding'}")
        return np.asarray(record.embedding, dtype=np.float32)

    def _hits(self, contents: list[int], scores: list[float | None], limit: int,
              tag_model: db.ModelRow | None, nsfw_model: db.ModelRow | None) -> list[Hit]:
        info = db.describe_contents(self.conn, contents, tag_model and tag_model["id"],
                                    nsfw_model and nsfw_model["id"])
        hits: list[Hit] = []
        for content, score in zip(contents, scores):
            entry = info[content]
            tags = None if entry["tags"] is None else tuple(entry["tags"])
            for path in entry["paths"]:
                hits.append(Hit(path, score, tags, entry["nsfw"]))
                if len(hits) >= limit:
                    return hits
        return hits

    def _filter_only(self, allowed: np.ndarray | None, limit: int, tag_model: db.ModelRow | None,
                     nsfw_model: db.ModelRow | None) -> list[Hit]:
        if allowed is None:
            allowed = db.filtered_contents(self.conn)
        rows = self.conn.execute(
            "SELECT path, content FROM files WHERE status = 'ok' AND content IS NOT NULL ORDER BY path").fetchall()
        keep = set(allowed.tolist())
        chosen = [r for r in rows if r["content"] in keep][:limit]
        info = db.describe_contents(self.conn, list({r["content"] for r in chosen}),
                                    tag_model and tag_model["id"], nsfw_model and nsfw_model["id"])
        return [Hit(r["path"], None, None if info[r["content"]]["tags"] is None else tuple(info[r["content"]]["tags"]),
                    info[r["content"]]["nsfw"]) for r in chosen]

    # ---- duplicates -----------------------------------------------------------------------------

    def duplicates(self, threshold: float = dup.DEFAULT_THRESHOLD) -> list[DuplicateGroup]:
        """Groups of near-duplicate files (cosine >= ``threshold``), largest first."""
        if not -1.0 <= threshold <= 1.0:
            raise ValueError("threshold is a cosine, between -1 and 1")
        index = self.vector_index()
        edges = dup.similar_pairs(index, threshold)
        content_groups = dup.groups(edges)
        paths_of: dict[int, list[str]] = {}
        for row in self.conn.execute("SELECT content, path FROM files WHERE status = 'ok' AND content IS NOT NULL "
                                     "ORDER BY path"):
            paths_of.setdefault(row["content"], []).append(row["path"])
        grouped = set()
        result = []
        for members, similarity in content_groups:
            grouped.update(members)
            paths = tuple(sorted(p for c in members for p in paths_of.get(c, [])))
            if len(paths) > 1:
                result.append(DuplicateGroup(paths, similarity))
        for content, paths in paths_of.items():  # byte-identical copies
            if content not in grouped and len(paths) > 1:
                result.append(DuplicateGroup(tuple(paths), 1.0))
        result.sort(key=lambda g: (-len(g.paths), -g.similarity, g.paths))
        return result

    # ---- upkeep ---------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts of files, images and results per model, sizes on disk, and the vector index state."""
        return upkeep.stats(self)

    def verify(self, *, check_files: bool = True) -> VerifyReport:
        """Database integrity, references, and the vector index against the database."""
        return upkeep.verify(self, check_files=check_files)

    def prune(self, *, dry_run: bool = False) -> PruneReport:
        """Remove files gone from disk, images no file points at, and results of superseded models."""
        return upkeep.prune(self, dry_run=dry_run)


def _weighted(values: Any) -> list[tuple[float, Any]]:
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

