"""Caption-file options and their record hook, shared by ``taglens tag`` and ``taglens analyze``."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

from taglens.io.captions import EXISTING_MODES
from taglens.cli.options import flag, given, stack
from taglens.records import Record

CAPTION_ONLY = ("caption_ext", "replace_underscores", "escape_parens", "prefix", "existing")

caption_options = stack(
    click.option("--captions", is_flag=True,
                 help="Write a caption file per image (IMAGE.txt beside it, or under --caption-dir)."),
    click.option("--caption-dir", type=click.Path(file_okay=False), default=None,
                 help="Write captions here, keeping paths below the input folders (implies --captions)."),
    click.option("--caption-ext", default=".txt", show_default=True, help="Caption file suffix."),
    click.option("--replace-underscores", is_flag=True,
                 help="long_hair -> long hair in captions; emoticons such as ^_^ stay as they are."),
    click.option("--escape-parens", is_flag=True, help=r"photoshop_(medium) -> photoshop_\(medium\) in captions."),
    click.option("--prefix", default="", metavar="TAGS",
                 help="Comma-separated tags to put first in every caption (e.g. a trigger word)."),
    click.option("--existing", type=click.Choice(EXISTING_MODES), default="skip", show_default=True,
                 help="What to do with a caption file that exists: skip the image, overwrite the file, "
                      "or append the new tags it lacks."),
)


def caption_writer(ctx: click.Context, paths: tuple[str, ...], captions: bool, caption_dir: str | None,
                   caption_ext: str, replace_underscores: bool, escape_parens: bool, prefix: str,
                   existing: str) -> Any:
    """The `CaptionWriter` the options ask for, or None; caption options without --captions are a
    usage error."""
    from taglens.io.captions import CaptionOptions, CaptionWriter

    if not (captions or caption_dir is not None):
        for name in CAPTION_ONLY:
            if given(ctx, name):
                raise click.UsageError(f"{flag(ctx, name)} only applies with --captions")
        return None
    try:
        options = CaptionOptions(caption_ext, caption_dir, replace_underscores, escape_parens, prefix, existing)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    return CaptionWriter(options, roots=[p for p in paths if p != "-" and os.path.isdir(p)])


def caption_hook(writer: Any) -> Callable[[Record], None] | None:
    """A record hook that writes each record's caption, reporting (not raising) failures."""
    from taglens.errors import CaptionError

    if writer is None:
        return None

    def on_record(record: Record) -> None:
        try:
            writer.write(record)
        except CaptionError as exc:
            click.echo(f"taglens: {exc}", err=True)

    return on_record
