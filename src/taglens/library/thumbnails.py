"""Thumbnails kept on disk in the library (``<library>/thumbnails/``), so a server restart or a
second page view never decodes the full image again.

One JPEG per (image id, size, file state): the name is a hash of the three, so a changed file
gets a new thumbnail and the old one is simply never asked for again. Written atomically
(`taglens.io.atomic.AtomicFile`); a cache that cannot be written is skipped, never an error.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from taglens.errors import OutputError
from taglens.io.atomic import AtomicFile


class ThumbnailCache:
    def __init__(self, folder: Path):
        self.folder = folder

    def path(self, key: str) -> Path:
        return self.folder / f"{hashlib.sha256(key.encode('utf-8', 'surrogateescape')).hexdigest()[:32]}.jpg"

    def get(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except OSError:
            return None

    def put(self, key: str, data: bytes) -> None:
        try:
            self.folder.mkdir(exist_ok=True)
            target = AtomicFile(self.path(key), binary=True)
        except (OSError, OutputError):
            return  # a read-only or full library still serves thumbnails, uncached
        try:
            target.stream.write(data)
            target.commit()
        except (OSError, OutputError):
            target.discard()
