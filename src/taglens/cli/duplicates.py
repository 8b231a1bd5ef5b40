"""``taglens duplicates``: groups of near-duplicate images in the library."""

from __future__ import annotations

import json

import click

from taglens.cli.library import library_option, open_library
from taglens.library.duplicates import DEFAULT_THRESHOLD


@click.command("duplicates")
@click.option("--threshold", type=click.FloatRange(-1, 1), default=DEFAULT_THRESHOLD, show_default=True,
              help="Embedding cosine at or above which two images count as near-duplicates.")
@click.option("--format", "-f", "fmt", type=click.Choice(["text", "jsonl"]), default="text", show_default=True,
              help="text: one group per block, blank line between; jsonl: {\"paths\": [...], \"similarity\": ...}.")
@library_option
def duplicates(threshold: float, fmt: str, library_dir: str | None) -> None:
    """Find groups of near-duplicate images (resized, recompressed or byte-identical copies).

    \b
    Example:
        taglens duplicates
        taglens duplicates --threshold 0.98 --format jsonl > dups.jsonl
    """
    with open_library(library_dir) as lib:
        groups = lib.duplicates(threshold=threshold)
    for i, group in enumerate(groups):
        if fmt == "jsonl":
            click.echo(json.dumps(group.to_json(), ensure_ascii=False))
        else:
            if i:
                click.echo("")
            click.echo(f"# {len(group.paths)} images, similarity >= {group.similarity:.4f}")
            for path in group.paths:
                click.echo(path)
