"""The library: folders indexed once and kept current, searchable by text, image, tag and NSFW score.

    lib = Library.open(create=True)             # --library DIR, else $TAGLENS_LIBRARY, else the user data dir
    lib.index(["~/Pictures"])                   # tag, nsfw and embed in one pass over what is new or changed
    hits = lib.search("a dog on a beach", tags=["outdoors"], max_nsfw=0.2)
    groups = lib.duplicates()

The SQLite database (`db`, the only module with SQL) is the single source of truth; the vector
index (`vectors`) is derived from it. `Library` is a facade over one module per concern: change
detection in `scan`, the index pass in `indexing`, imports in `imports`, a search end to end in
`query` (scoring in `search`), grouping in `duplicates`, statistics and clean-up in `upkeep`, and
the one place real models are named in `models`. Each ``taglens`` library command mirrors a
method here.

Paths are ``str`` in memory as ``os.fsdecode`` gives them (a name's bytes that are not UTF-8 are
lone surrogates, ``surrogateescape``); ``os.fsencode(path)`` gives the file system's bytes back.
The database stores such a name escaped (`taglens.library.db.to_db_path`).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from taglens.engine import EngineOptions
from taglens.errors import LibraryError, NoLibraryError
from taglens.io.decode import ImageSource
from taglens.library import db, imports, indexing, query, upkeep, vectors
from taglens.library import duplicates as dup
from taglens.library.imports import ImportReport
from taglens.library.models import LazyModel, LoadedModel, ModelSource, load_embedder, load_models, loaded
from taglens.library.reports import DuplicateGroup, Hit, IndexReport, PruneReport, VerifyReport
from taglens.models.tagnames import TagNames
from taglens.records import Record

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

    # ---- index and import -----------------------------------------------------------------------

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
        """Bring the library up to date with the images under ``paths`` in one pass; see
        `taglens.library.indexing` (and `taglens.library.scan` for what counts as changed).

        Models (default: `load_models()`) are loaded only when some file is new or changed by
        size and mtime, or lacks a task's result. Results are committed every
        ``options.batch_size`` images, so a killed run loses at most one batch. ``on_total`` is
        told how many files will be read (before the first record); ``on_record`` sees each
        record the engine gives for them (a file filed without decoding, its bytes known, has
        its file facts only).
        """
        return indexing.index(self, paths, models, recursive=recursive, options=options, retry_errors=retry_errors,
                              on_record=on_record, on_total=on_total)

    def import_parquet(self, files: Iterable[str | os.PathLike], *, batch_rows: int = imports.BATCH_ROWS
                       ) -> ImportReport:
        """Bring in the results of ``taglens analyze -f parquet`` (or the Ray job) without recomputing
        them; see `taglens.library.imports` for what happens to each row. Every file is checked
        before anything is written."""
        return imports.import_parquet(self, files, batch_rows=batch_rows)

    def import_records(self, records: Iterable[Record], models: dict[str, tuple[str, str]], *,
                       report: ImportReport | None = None, batch_size: int = 1000) -> ImportReport:
        """Store records computed elsewhere, their results filed under ``models`` (task -> (model_id,
        revision), tasks being tag, nsfw, embed), committed every ``batch_size`` records."""
        return imports.import_records(self, records, models, report=report, batch_size=batch_size)

    def refresh_vectors(self, model: int) -> None:
        """Bring the vector index of embedding model ``model`` up to date (after new embeddings)."""
        row = db.model_by_id(self.conn, model)
        if row is None or row["dim"] is None:
            return
        if vectors.freshness(self.conn, self.vectors_folder, row, self.exact_limit) != "fresh":
            vectors.open_index(self.conn, self.vectors_folder, row, exact_limit=self.exact_limit)

    # ---- models ---------------------------------------------------------------------------------

    def current_models(self) -> dict[str, str]:
        """task -> model id of the checkpoint last used for it (what ``taglens index`` keeps by default)."""
        return {task: row["model_id"] for task, row in self.current_model_rows().items()}

    def current_model_rows(self) -> dict[str, db.ModelRow]:
        """task -> the database row of the model last used for it."""
        return {task: row for task in db.TASKS if (row := db.current_model(self.conn, task)) is not None}

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

    # ---- search ---------------------------------------------------------------------------------

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
        ``exclude`` leaves out contents by id (`Hit.image`, the HTTP service's image ids). With no
        query part at all, the files that pass the filters come back in path order with ``score`` None.
        """
        return query.search(self, text, image=image, minus=minus, minus_image=minus_image, tags=tags,
                            no_tags=no_tags, max_nsfw=max_nsfw, min_score=min_score, limit=limit, exclude=exclude)

    def tag_names(self, names: Sequence[str] = ()) -> TagNames:
        """The tag names search filters are bound to (see `taglens.models.tagnames`): every tag of the
        library's tagger when its tag list is on this machine; else the spellings of ``names``
        that some image in the library carries."""
        return query.tag_names(self, names)

    # ---- one image (by content id, `Hit.image`) ---------------------------------------------------

    def image_info(self, image: int) -> dict[str, Any] | None:
        """An image's facts (sha256, width, height, its files' paths) and its current tags and
        NSFW result in their JSON form; None when no indexed file holds it."""
        content = db.content_by_id(self.conn, image)
        found = query.hits(self, [image], [None], 1) if content is not None else []
        if not found:
            return None
        paths = [row["path"] for row in db.files_of_content(self.conn, image)]
        shown = found[0].to_json()
        return {"id": image, "sha256": content["sha256"], "width": content["width"], "height": content["height"],
                "paths": paths, "tags": shown["tags"], "nsfw": shown["nsfw"]}

    def image_size(self, image: int) -> tuple[int, int] | None:
        """(width, height) recorded for an image (zeros where unknown); None for an unknown id."""
        content = db.content_by_id(self.conn, image)
        return None if content is None else (int(content["width"] or 0), int(content["height"] or 0))

    def stored_embedding(self, image: int) -> np.ndarray | None:
        """The image's stored embedding under the library's current embedding model."""
        model = db.current_model(self.conn, "embed")
        return None if model is None else db.embedding_of(self.conn, image, model["id"])

    def unchanged_file(self, image: int) -> Path | None:
        """A file holding this image that is unchanged since it was indexed (same size and mtime)."""
        for row in db.files_of_content(self.conn, image):
            try:
                st = os.stat(row["path"])
            except OSError:
                continue
            if os.path.isfile(row["path"]) and st.st_size == row["size"] and st.st_mtime == row["mtime"]:
                return Path(row["path"])
        return None

    # ---- duplicates and upkeep ------------------------------------------------------------------

    def duplicates(self, threshold: float = dup.DEFAULT_THRESHOLD) -> list[DuplicateGroup]:
        """Groups of near-duplicate files (cosine >= ``threshold``), largest first."""
        return dup.find(self, threshold)

    def stats(self) -> dict[str, Any]:
        """Counts of files, images and results per model, sizes on disk, and the vector index state."""
        return upkeep.stats(self)

    def verify(self, *, check_files: bool = True) -> VerifyReport:
        """Database integrity, references, and the vector index against the database."""
        return upkeep.verify(self, check_files=check_files)

    def prune(self, *, dry_run: bool = False) -> PruneReport:
        """Remove files gone from disk, images no file points at, and results of superseded models."""
        return upkeep.prune(self, dry_run=dry_run)
