"""The library as the server sees it: search results with image ids, an image's facts and file.

An image's **id** is the library's content id (one per distinct image; byte-identical copies share
it, and an id is never reused, so a stale link cannot show another picture). Files are found from
the id in the database, never from anything in a URL, and served only while they still have the
size and modification time they were indexed with.

Text and filter searches are `taglens.library.Library.search` itself. Searches with example
images take vectors the server computed (an upload goes through the shared batcher) or stored
ones (an indexed image's id): a 1-D array is a query part `Library.search` takes as it is.
Everything here goes through `Library` methods (no SQL here); nothing writes to the library.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from taglens.io.decode import DecodeOptions, decode
from taglens.library import Library, db
from taglens.library.thumbnails import ThumbnailCache

THUMBNAIL_CACHE = 512


@dataclass(frozen=True)
class SearchQuery:
    texts: Sequence[str] = ()
    minus: Sequence[str] = ()
    vectors: Sequence[np.ndarray] = ()
    minus_vectors: Sequence[np.ndarray] = ()
    tags: Sequence[str] = ()
    no_tags: Sequence[str] = ()
    max_nsfw: float | None = None
    min_score: float | None = None
    limit: int = 20
    exclude: frozenset[int] = frozenset()


class Catalog:
    """A read-only view of one library, safe to call from several threads (one at a time inside)."""

    def __init__(self, library: Library):
        self.library = library
        self._lock = threading.RLock()
        self._thumbnails: OrderedDict[tuple[int, int, str], bytes] = OrderedDict()
        self._disk = ThumbnailCache(library.folder / "thumbnails")

    @classmethod
    def open(cls, folder: Path, embedder_loader: Callable[[str, str], Any]) -> Catalog:
        return cls(Library.open(folder, embedder_loader=embedder_loader))

    def close(self) -> None:
        with self._lock:
            self.library.close()

    # ---- models ---------------------------------------------------------------------------------

    def current_models(self) -> dict[str, db.ModelRow]:
        with self._lock:
            return self.library.current_model_rows()

    def embedder(self) -> Any:
        """The text/image embedder of the model the library was indexed with (loaded once)."""
        with self._lock:
            return self.library.embedder()

    # ---- search ---------------------------------------------------------------------------------

    def search(self, query: SearchQuery) -> list[dict[str, Any]]:
        """Hits as the CLI's ``search --format jsonl`` lines, each with the image ``id``."""
        with self._lock:
            hits = self.library.search(list(query.texts), image=list(query.vectors), minus=list(query.minus),
                                       minus_image=list(query.minus_vectors), tags=query.tags,
                                       no_tags=query.no_tags, max_nsfw=query.max_nsfw, min_score=query.min_score,
                                       limit=query.limit, exclude=query.exclude)
            return [{"id": h.image, **h.to_json()} for h in hits]

    # ---- one image ------------------------------------------------------------------------------

    def info(self, image_id: int) -> dict[str, Any] | None:
        """The image's facts (sha256, size, paths) and its current tags and NSFW result."""
        with self._lock:
            return self.library.image_info(image_id)

    def stored_vector(self, image_id: int) -> np.ndarray | None:
        """The image's stored embedding under the library's current embedding model."""
        with self._lock:
            return self.library.stored_embedding(image_id)

    def file(self, image_id: int) -> Path | None:
        """A file holding this image that is unchanged since it was indexed (same size and mtime)."""
        with self._lock:
            return self.library.unchanged_file(image_id)

    def pixels(self, image_id: int) -> int:
        """The pixel count the library recorded for an image (0 when unknown)."""
        with self._lock:
            size = self.library.image_size(image_id)
        return size[0] * size[1] if size is not None else 0

    def thumbnail(self, image_id: int, size: int, limits: DecodeOptions | None = None) -> bytes | None:
        """A JPEG no larger than ``size`` on either side (cached in memory and on disk in the
        library), or None when the file is gone. ``limits``: the server's pixel and byte limits."""
        path = self.file(image_id)
        if path is None:
            return None
        st = path.stat()
        key = (image_id, size, f"{st.st_size}:{st.st_mtime_ns}")
        with self._lock:
            if key in self._thumbnails:
                self._thumbnails.move_to_end(key)
                return self._thumbnails[key]
        disk_key = f"{image_id}:{size}:{key[2]}"
        data = self._disk.get(disk_key)
        if data is None:
            # A thumbnail is for people, not models: JPEG draft decoding is fine (and much faster) here.
            options = replace(limits or DecodeOptions(), draft=True, target_size=size)
            image = decode(path, options).image
            image.thumbnail((size, size), Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=85)
            data = buffer.getvalue()
            del image
            self._disk.put(disk_key, data)
        with self._lock:
            self._thumbnails[key] = data
            while len(self._thumbnails) > THUMBNAIL_CACHE:
                self._thumbnails.popitem(last=False)
        return data


def media_type(path: Path) -> str:
    """The MIME type of an image file from its header (never from its name)."""
    try:
        with Image.open(path, formats=[f for f in Image.OPEN if f != "EPS"]) as im:
            return Image.MIME.get(im.format or "", "application/octet-stream")
    except Exception:  # noqa: BLE001 (Pillow's plugins raise many types; the type is only a hint)
        return "application/octet-stream"
