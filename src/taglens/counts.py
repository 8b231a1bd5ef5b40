"""Counts in words for summaries and messages: ``1 image``, ``2 images``, never ``1 images``."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``counted(1, "image")`` -> ``"1 image"``; ``counted(3, "image")`` -> ``"3 images"``;
    ``plural`` for nouns that do not just take an s (``counted(2, "is", "are")``)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
