"""Caption files for training sets, written the way kohya's wd14 tagger writes them.

For ``photos/cat.jpg`` the caption is ``photos/cat.txt`` (the image's suffix replaced by the
caption extension), or ``CAPTION_DIR/<path below the input folder>/cat.txt`` with a caption
folder. The text is the kept tags, highest score first, joined by ``", "``, with a newline:

    prefix tags (as given), then the model's tags, each formatted:
      replace_underscores  long_hair -> long hair, but emoticons keep theirs: a tag with no run
                           of two or more letters (^_^, >_<, o_o, 0_0, (o)_(o), ||_||, ...) is
                           an emoticon, and so is everything in `KAOMOJI`
      escape_parens        photoshop_(medium) -> photoshop_\\(medium\\) (prompt-weight syntax)

An existing caption file is left alone (``skip``), replaced (``overwrite``) or extended
(``append``: its entries first, then the new ones it lacks; entries are the same when they
differ only in underscores vs spaces or escaped parentheses). The prefix always comes first.

Every file is written atomically: a temporary file in the same folder, flushed and fsynced,
then renamed over the caption. A crash or a full disk leaves the old caption (or none), never
half of one, and no temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from taglens.errors import CaptionError
from taglens.io.atomic import fsync_folder
from taglens.records import Record

EXISTING_MODES = ("skip", "overwrite", "append")
SEPARATOR = ", "

# SmilingWolf's kaomoji list (the wd14 tagger's); the letter rule below already covers each.
KAOMOJI = frozenset({
    "0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9", ">_o",
    "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||",
})
_WORD = re.compile(r"[^\W\d_]{2}")  # two letters in a row (any script)


def is_emoticon(tag: str) -> bool:
    """True for tags whose underscores are part of a face: no two letters in a row."""
    return tag in KAOMOJI or not _WORD.search(tag)


def format_tag(tag: str, *, replace_underscores: bool = False, escape_parens: bool = False) -> str:
    """One tag as it appears in a caption."""
    if replace_underscores and not is_emoticon(tag):
        tag = tag.replace("_", " ")
    if escape_parens:
        tag = tag.replace("(", "\\(").replace(")", "\\)")
    return tag


def _same(entry: str) -> str:
    """The comparison key for de-duplication: spaces = underscores, escapes ignored."""
    return entry.replace("\\(", "(").replace("\\)", ")").replace("_", " ").strip()


def _dedupe(entries: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for entry in entries:
        key = _same(entry)
        if key and key not in seen:
            seen.add(key)
            out.append(entry.strip())
    return out


@dataclass(frozen=True)
class CaptionOptions:
    """How caption files are named and written (see the module docstring)."""

    extension: str = ".txt"
    caption_dir: Path | None = None
    replace_underscores: bool = False
    escape_parens: bool = False
    prefix: tuple[str, ...] = ()
    existing: str = "skip"

    def __post_init__(self) -> None:
        if self.existing not in EXISTING_MODES:
            raise ValueError(f"existing must be one of {', '.join(EXISTING_MODES)}, not {self.existing!r}")
        extension = self.extension if self.extension.startswith(".") else "." + self.extension
        if extension == "." or "/" in extension or os.sep in extension:
            raise ValueError(f"caption extension {self.extension!r} is not a file suffix")
        object.__setattr__(self, "extension", extension)
        if isinstance(self.prefix, str):
            object.__setattr__(self, "prefix", tuple(t.strip() for t in self.prefix.split(",") if t.strip()))
        if self.caption_dir is not None:
            object.__setattr__(self, "caption_dir", Path(self.caption_dir))

    def text(self, tags: Iterable[str], existing: str | None = None) -> str:
        """The caption for ``tags`` (names in score order), merged into ``existing`` text when
        appending. Ends with a newline, like kohya's."""
        formatted = [format_tag(t, replace_underscores=self.replace_underscores, escape_parens=self.escape_parens)
                     for t in tags]
        old = existing.replace("\n", ",").split(",") if existing else []
        return SEPARATOR.join(_dedupe([*self.prefix, *old, *formatted])) + "\n"


class CaptionWriter:
    """Writes one caption file per successful record, and counts what it did.

    ``roots`` are the folders the images were found in: with a caption folder, a caption keeps
    the image's path below the deepest root that holds it (an image named on its own lands at
    the top of the caption folder).
    """

    def __init__(self, options: CaptionOptions, roots: Sequence[str | os.PathLike] = ()):
        self.options = options
        self.roots = sorted({os.path.abspath(r) for r in roots}, key=len, reverse=True)
        self.counts: Counter[str] = Counter()
        self._written: dict[Path, str] = {}  # caption path -> the image that got it in this run

    def path_for(self, image_path: str | os.PathLike) -> Path:
        """Where the caption of an image goes."""
        image = os.fspath(image_path)
        stem = os.path.splitext(image)[0] + self.options.extension
        if self.options.caption_dir is None:
            return Path(stem)
        full = os.path.abspath(stem)
        for root in self.roots:
            if os.path.commonpath([full, root]) == root:
                return self.options.caption_dir / os.path.relpath(full, root)
        return self.options.caption_dir / os.path.basename(stem)

    def should_skip(self, image_path: str | os.PathLike) -> bool:
        """With ``existing="skip"``: True (and counted) when the image already has a caption,
        so the run need not even decode it."""
        if self.options.existing != "skip":
            return False
        path = self.path_for(image_path)
        if path in self._written or not path.exists():
            return False  # a caption from this very run: `write` reports the name clash
        self.counts["skipped"] += 1
        return True

    def write(self, record: Record) -> str | None:
        """Write the caption for a record: returns ``"written"``, ``"appended"``, ``"skipped"``,
        or None for a record with an error (no caption). Raises `CaptionError` if the file
        cannot be written; the old caption is then intact."""
        if record.error is not None or record.tags is None:
            return None
        path = self.path_for(record.path)
        first = self._written.get(path)
        if first is not None:
            self.counts["failed"] += 1
            raise CaptionError(f"{path}: already written for {first} in this run; {record.path} keeps no caption "
                               "(two images with the same name but different suffixes)")
        existing: str | None = None
        if path.exists():
            if self.options.existing == "skip":
                self.counts["skipped"] += 1
                return "skipped"
            if self.options.existing == "append":
                try:
                    existing = path.read_text(encoding="utf-8-sig")
                except (OSError, UnicodeDecodeError) as exc:
                    self.counts["failed"] += 1
                    raise CaptionError(f"{path}: cannot read the caption to append to ({exc})") from None
        text = self.options.text((t.tag for t in record.tags), existing)
        try:
            write_text_atomic(path, text)
        except OSError as exc:
            self.counts["failed"] += 1
            raise CaptionError(f"{path}: cannot write caption ({exc.strerror or exc})") from None
        self._written[path] = record.path
        outcome = "appended" if existing is not None else "written"
        self.counts[outcome] += 1
        return outcome

    def summary(self) -> str:
        parts = [f"{self.counts[k]} {k}" for k in ("written", "appended", "skipped", "failed") if self.counts[k]]
        return "captions: " + (", ".join(parts) if parts else "none written")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` via a temporary file in the same folder, fsync, rename.

    The file keeps the mode of the file it replaces (a new one gets 0666 minus the umask).
    On any failure the temporary file is removed and the old file is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        fsync_folder(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process umask, read without changing it (Linux), else the common 022."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022
