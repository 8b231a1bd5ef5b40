"""taglens: tag, classify, detect NSFW and search images with open models.

The Python API mirrors the command line: each command is a thin use of an object here.
"""

from __future__ import annotations

__version__ = "0.1.0"

from taglens.errors import (
    CheckpointError,
    ImageDecodeError,
    ModelNotFoundError,
    TaglensError,
    TagSelectionError,
    UnsafeCheckpointError,
)
from taglens.io.decode import DecodedImage, DecodeOptions, decode, decode_image

# The model and library classes pull in torch and transformers: imported on first use, so that
# `import taglens` (and a CLI that only indexes an unchanged folder) stays fast.
_LAZY = {
    "Tagger": "taglens.models.joytag",
    "ZeroShotClassifier": "taglens.models.siglip",
    "Embedder": "taglens.models.siglip",
    "NsfwDetector": "taglens.models.vit_classifier",
    "ModelSet": "taglens.models.modelset",
    "TaskRequest": "taglens.models.modelset",
    "TagSelection": "taglens.models.tag_selection",
    "Library": "taglens.library",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'taglens' has no attribute {name!r}")

__all__ = [
    "__version__",
    "CheckpointError",
    "DecodeOptions",
    "DecodedImage",
    "Embedder",
    "ImageDecodeError",
    "Library",
    "ModelNotFoundError",
    "ModelSet",
    "NsfwDetector",
    "TagSelection",
    "TagSelectionError",
    "TaskRequest",
    "Tagger",
    "TaglensError",
    "UnsafeCheckpointError",
    "ZeroShotClassifier",
    "decode",
    "decode_image",
]
