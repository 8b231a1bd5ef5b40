"""The error types taglens raises.

Library code raises these and never exits; only the command line turns them into exit codes:
an `InvalidRequestError` (the values asked for cannot be used) exits 2 like any usage error, every
other `TaglensError` exits 1; the HTTP service answers 422 for the former. Every message names the
thing that failed and says why in plain words, and names no command-line flag (the HTTP service
shows the same text).
"""

from __future__ import annotations


class TaglensError(Exception):
    """Base class of every error taglens raises on purpose."""


class InvalidRequestError(TaglensError):
    """What was asked for cannot be done as asked: an unknown task, tag or label, a template
    without its placeholder, a value out of range. Running again with other values can succeed,
    running again as it is cannot (the command line exits 2, as for any usage error)."""


class UnknownTaskError(InvalidRequestError, ValueError):
    """A task name that is not one of tag, classify, nsfw, embed."""


class ImageDecodeError(TaglensError):
    """An input could not be turned into an RGB image.

    ``source`` names the input (a path, or a description such as ``<bytes>``) and ``reason``
    says why in plain words, e.g. ``"empty file"`` or ``"truncated image data"``.
    """

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class ModelNotFoundError(TaglensError):
    """A model argument could be resolved neither as a local folder nor through the hub cache."""


class UnsafeCheckpointError(TaglensError):
    """A checkpoint holds only pickled weights, which can run code when loaded; taglens refuses them."""


class CheckpointError(TaglensError):
    """A checkpoint folder is incomplete or does not fit the model family it was loaded as."""


class TagSelectionError(InvalidRequestError):
    """A tag selection is malformed (a threshold outside [0, 1], an unreadable thresholds or
    exclude file) or names tags the model does not have."""


class OutputError(TaglensError):
    """An output file or folder cannot be written (no such folder, read-only, full disk...); the
    message names the path and the OS reason, and no half-written file is left behind."""


class CaptionError(TaglensError):
    """A caption file could not be written (or read, to append to); the old one is intact."""


class UnknownLabelError(InvalidRequestError, ValueError):
    """A label asked for (e.g. ``--positive-label``) is not one of the checkpoint's labels."""


class QuarantineError(TaglensError):
    """The quarantine cannot start or go on: its journal is locked, unreadable or inconsistent,
    or its folder overlaps the inputs. Per-file problems are reported, not raised."""


class LabelsError(InvalidRequestError, ValueError):
    """Zero-shot labels or templates that cannot be used (none given, empty, or a template
    without its ``{}`` placeholder)."""


class Interrupted(Exception):
    """Ctrl-C stopped a run after some images; the message says what was kept and how to go on.
    Not a `TaglensError`: the command line answers it with exit status 130, not 1."""


class PromptTruncatedWarning(UserWarning):
    """A text was longer than the model's text length and was cut to fit; the message names it."""


class LibraryError(TaglensError):
    """The library (its database or vector index) cannot do what was asked, e.g. search before
    anything was indexed, or a query naming an image that cannot be read."""


class UnknownTagError(TagSelectionError):
    """Tag names that the tagger (or, for a library search, the library's tagger) does not have.

    ``unknown`` holds the names as given, in order; the message names them and the closest
    known names.
    """

    def __init__(self, message: str, unknown: list[str]):
        super().__init__(message)
        self.unknown = unknown


class NoLibraryError(LibraryError, InvalidRequestError):
    """The library folder asked for holds no library (only indexing or importing creates one)."""


class LibraryVersionError(LibraryError):
    """The library database was written by a newer taglens (a schema version this one does not know)."""
