"""``taglens search``: find images in the library by text, by example image, by tag or NSFW score."""

from __future__ import annotations

import shlex

import click

from taglens.cli.library import library_option, open_library
from taglens.cli.options import FRACTION, Number, flag, verbose_option
from taglens.engine.placement import DTYPES


@click.command("search")
@click.argument("query", nargs=-1, metavar="[TEXT]...")
@click.option("--image", "-i", "images", multiple=True, metavar="PATH",
              help="Find images like this one (repeatable). Score: cosine similarity.")
@click.option("--minus", "minus", multiple=True, metavar="TEXT", help="Push away from this text (repeatable).")
@click.option("--minus-image", "minus_images", multiple=True, metavar="PATH",
              help="Push away from this image (repeatable).")
@click.option("--tag", "tags", multiple=True, help="Only images with this tag (repeatable: all of them).")
@click.option("--no-tag", "no_tags", multiple=True, help="Only images without this tag (repeatable).")
@click.option("--max-nsfw", type=FRACTION, default=None,
              help="Only images whose NSFW probability is at most this.")
@click.option("--min-score", type=Number(), default=None,
              help="Only results scoring at least this (text on SigLIP: a probability).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many results.")
@click.option("--format", "-f", "fmt", type=click.Choice(["table", "jsonl", "paths"]), default="table",
              show_default=True, help="table: score, path, tags; jsonl: one JSON object per result; "
                                      "paths: paths only.")
@library_option
@click.option("--device", default="auto", show_default=True, help="Where the text/image embedder runs.")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32",
              show_default=True, help="Embedder precision (int8: CPU only, faster, moves scores).")
@verbose_option
def search(query: tuple[str, ...], images: tuple[str, ...], minus: tuple[str, ...], minus_images: tuple[str, ...],
           tags: tuple[str, ...], no_tags: tuple[str, ...], max_nsfw: float | None, min_score: float | None,
           limit: int, fmt: str, library_dir: str | None, device: str, dtype: str) -> None:
    """Search the library; no model flag: the checkpoint the library was indexed with is used.

    Each TEXT is a separate query part. Any TEXT, --image, --minus or --minus-image may carry a
    weight as "WEIGHT:VALUE" (e.g. "2:beach"). A single text scores SigLIP's calibrated
    probability, a single image the cosine; combined parts give
    sum(weight * score) / sum(positive weights). With filters alone, matching files are listed.

    \b
    Example:
        taglens search "a dog on a beach"
        taglens search --image holiday/IMG_0042.jpg --limit 5
        taglens search "2:beach" --image x.jpg --minus people --max-nsfw 0.2 --format jsonl
        taglens search --tag cat --no-tag dog --format paths
    """
    with open_library(library_dir, device=device, dtype=dtype) as lib:
        hits = lib.search(list(query), image=list(images), minus=list(minus), minus_image=list(minus_images),
                          tags=tags, no_tags=no_tags, max_nsfw=max_nsfw, min_score=min_score, limit=limit)
    if not hits:
        ctx = click.get_current_context()
        filters = [f"{flag(ctx, name)} {shlex.quote(value)}"
                   for name, values in (("tags", tags), ("no_tags", no_tags)) for value in values]
        filters += [f"{flag(ctx, name)} {value:g}"
                    for name, value in (("max_nsfw", max_nsfw), ("min_score", min_score)) if value is not None]
        click.echo("taglens search: no results" + (f" (with {', '.join(filters)})" if filters else ""), err=True)
    from taglens.library.reports import json_text

    for hit in hits:
        if fmt == "jsonl":
            click.echo(json_text(hit.to_json()))
        elif fmt == "paths":
            click.echo(hit.path)
        else:
            score = "     -" if hit.score is None else f"{hit.score:6.3f}"
            tags_text = ", ".join(t.tag for t in hit.tags[:8]) if hit.tags else ""
            nsfw = "" if hit.nsfw is None else f"  [{hit.nsfw.label} {hit.nsfw.score:.2f}]"
            click.echo(f"{score}  {hit.path}" + (f"\t{tags_text}" if tags_text else "") + nsfw)
