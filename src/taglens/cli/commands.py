"""The list of commands, in the order ``taglens --help`` shows them."""

from __future__ import annotations

import click

from taglens.cli.classify import classify
from taglens.cli.embed import embed
from taglens.cli.pending import pending_command

COMMANDS: list[click.Command] = [
    pending_command("tag", "Tag images with JoyTag (5813 Danbooru-style tags)."),
    classify,
    embed,
    pending_command("nsfw", "Score images with an NSFW classifier; optionally quarantine flagged files."),
    pending_command("analyze", "Run several jobs (tag, classify, nsfw, embed) in one pass."),
    pending_command("index", "Index folders into the library (incremental)."),
    pending_command("search", "Search the library by text, by image, by tag or NSFW score."),
    pending_command("duplicates", "Find near-duplicate images in the library."),
    pending_command("serve", "Serve the HTTP API and web page."),
]
