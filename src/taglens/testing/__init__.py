"""Builders for tiny (and full-size) random-weight checkpoints in exactly the hub's folder layout.

Tests, benchmarks and the docs use these to exercise the same loading code a hub id takes, with
no network. Weights are random: nothing built here may be presented as a real prediction.
"""

from taglens.testing.clip import write_clip
from taglens.testing.joytag import write_joytag
from taglens.testing.siglip import write_siglip
from taglens.testing.vit_classifier import write_vit_classifier

__all__ = ["write_clip", "write_joytag", "write_siglip", "write_vit_classifier"]
