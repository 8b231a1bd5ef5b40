"""The list of commands, in the order ``taglens --help`` shows them."""

from __future__ import annotations

import click

from taglens.cli.classify import classify
from taglens.cli.embed import embed
from taglens.cli.nsfw import nsfw
from taglens.cli.pending import pending_command
from taglens.cli.tag import tag

COMMANDS: list[click.Command] = [
    tag,
    classify,
    embed,
    nsfw,
    pending_command("analyze", "Run several jobs (tag, classify, nsfw, embed) in one pass."),
    pending_command("index", "Index folders into the library (incremental)."),
    pending_command("search", "Search the library by text, by image, by tag or NSFW score."),
    pending_command("duplicates", "Find near-duplicate images in the library."),
    pending_command("serve", "Serve the HTTP API and web page."),
]
