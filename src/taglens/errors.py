"""The error types taglens raises.

Library code raises these and never exits; only the command line turns them into exit codes.
Every message names the thing that failed and says why in plain words.
"""

from __future__ import annotations


class TaglensError(Exception):
    """Base class of every error taglens raises on purpose."""


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


class TagSelectionError(TaglensError):
    """A tag selection is malformed (a threshold outside [0, 1], an unreadable thresholds or
    exclude file) or names tags the model does not have."""


class OutputError(TaglensError):
    """An output file or folder cannot be written (no such folder, read-only, full disk...); the
    message names the path and the OS reason, and no half-written file is left behind."""


class CaptionError(TaglensError):
    """A caption file could not be written (or read, to append to); the old one is intact."""


class UnknownLabelError(TaglensError, ValueError):
    """A label asked for (e.g. ``--positive-label``) is not one of the checkpoint's labels."""


class QuarantineError(TaglensError):
    """The quarantine cannot start or go on: its journal is locked, unreadable or inconsistent,
    or its folder overlaps the inputs. Per-file problems are reported, not raised."""


class LabelsError(TaglensError, ValueError):
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


class LibraryVersionError(LibraryError):
    """The library database was written by a newer taglens (a schema version this one does not know)."""
