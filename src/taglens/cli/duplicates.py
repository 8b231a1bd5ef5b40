"""``taglens duplicates``: groups of near-duplicate images in the library."""

from __future__ import annotations

import click

from taglens.cli.library import library_option, open_library
from taglens.cli.options import Number
from taglens.counts import counted
from taglens.library.duplicates import DEFAULT_THRESHOLD
from taglens.library.reports import json_text


@click.command("duplicates")
@click.option("--threshold", type=Number(-1, 1), default=None,
              help=f"Embedding cosine at or above which two images count as near-duplicates [default: "
                   f"{DEFAULT_THRESHOLD}, provisional until measured on a trained checkpoint].")
@click.option("--format", "-f", "fmt", type=click.Choice(["text", "jsonl"]), default="text", show_default=True,
              help="text: one group per block, blank line between; jsonl: {\"paths\": [...], \"similarity\": ...}.")
@library_option
@click.option("--quiet", "-q", is_flag=True, help="Do not print the threshold and group count on stderr.")
def duplicates(threshold: float | None, fmt: str, library_dir: str | None, quiet: bool) -> None:
    """Find groups of near-duplicate images (resized, recompressed or byte-identical copies).

    The threshold used (and whether it is the default) is printed on stderr.

    \b
    Example:
        taglens duplicates
        taglens duplicates --threshold 0.98 --format jsonl > dups.jsonl
    """
    chosen = DEFAULT_THRESHOLD if threshold is None else threshold
    with open_library(library_dir) as lib:
        groups = lib.duplicates(threshold=chosen)
        model = lib.embed_model()
    if not quiet:
        how = "the default" if threshold is None else "--threshold"
        click.echo(f"duplicates: cosine >= {chosen:g} ({how}) on {model['model_id']} embeddings: "
                   f"{counted(len(groups), 'group')}", err=True)
    for i, group in enumerate(groups):
        if fmt == "jsonl":
            click.echo(json_text(group.to_json()))
        else:
            if i:
                click.echo("")
            click.echo(f"# {counted(len(group.paths), 'image')}, similarity >= {group.similarity:.4f}")
            for path in group.paths:
                click.echo(path)
