"""Input discovery: command-line arguments (files, folders, ``-``) become a lazy stream of paths.

Folders are walked recursively by default (``recursive=False`` keeps to the top level), in sorted
order so runs are repeatable, skipping hidden entries and not following folder symlinks (no
loops). Files named explicitly are passed on whatever their suffix, and missing ones too: the
engine turns them into error records rather than stopping the run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TextIO

from PIL import Image

# Formats that are not pictures a model should look at, or that run external programs.
_NOT_PICTURES = {".eps", ".ps", ".h5", ".hdf", ".grib", ".bufr", ".fit", ".fits", ".mpg", ".mpeg", ".wmf", ".emf"}


# Formats Pillow opens through another format's plugin (the JPEG plugin opens an MPO as MPO).
# Quake's .wal is not here: `Image.open` cannot read it (only `WalImagePlugin.open` can).
_OPENED_BY = {"MPO": "JPEG"}


def image_suffixes() -> frozenset[str]:
    """Lower-case suffixes of every format Pillow can open here, plus HEIC/HEIF (via pillow-heif)."""
    Image.init()
    opened = {ext for ext, fmt in Image.registered_extensions().items()
              if fmt in Image.OPEN or _OPENED_BY.get(fmt) in Image.OPEN}
    return frozenset((opened - _NOT_PICTURES) | {".heic", ".heif", ".hif", ".avif"})


def iter_image_paths(
    arguments: Iterable[str], *, recursive: bool = True, stdin: TextIO | None = None
) -> Iterator[str]:
    """Yield image paths for files, folders and ``-`` (newline-separated paths read from stdin)."""
    suffixes = image_suffixes()
    for argument in expand_stdin(arguments, stdin):
        yield from _expand(argument, recursive, suffixes)


def expand_stdin(arguments: Iterable[str], stdin: TextIO | None = None) -> Iterator[str]:
    """The arguments, with ``-`` replaced by the non-empty lines of stdin (one argument each)."""
    for argument in arguments:
        if argument == "-":
            for line in stdin or sys.stdin:
                line = line.rstrip("\r\n")
                if line:
                    yield line
        else:
            yield argument


def _expand(argument: str, recursive: bool, suffixes: frozenset[str]) -> Iterator[str]:
    if not os.path.isdir(argument):
        yield argument
        return
    for root, dirs, files in os.walk(argument):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        for name in sorted(files):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in suffixes:
                yield os.path.join(root, name)
