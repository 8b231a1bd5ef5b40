"""taglens: tag, classify, detect NSFW and search images with open models.

The Python API mirrors the command line: each command is a thin use of an object here.
"""

from __future__ import annotations

__version__ = "0.1.0"

from taglens.errors import (
    CheckpointError,
    ImageDecodeError,
    ModelNotFoundError,
    TagSelectionError,
    TaglensError,
    UnsafeCheckpointError,
)
from taglens.images import DecodeOptions, DecodedImage, decode, decode_image

__all__ = [
    "__version__",
    "CheckpointError",
    "DecodeOptions",
    "DecodedImage",
    "ImageDecodeError",
    "ModelNotFoundError",
    "TagSelectionError",
    "TaglensError",
    "UnsafeCheckpointError",
    "decode",
    "decode_image",
]
