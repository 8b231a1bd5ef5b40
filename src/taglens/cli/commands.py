"""The list of commands, in the order ``taglens --help`` shows them."""

from __future__ import annotations

import click

from taglens.cli.duplicates import duplicates
from taglens.cli.index import index
from taglens.cli.library import library
from taglens.cli.pending import pending_command
from taglens.cli.search import search

COMMANDS: list[click.Command] = [
    pending_command("tag", "Tag images with JoyTag (5813 Danbooru-style tags)."),
    pending_command("classify", "Zero-shot classify images against free-text labels with SigLIP or CLIP."),
    pending_command("embed", "Write SigLIP/CLIP image or text embeddings."),
    pending_command("nsfw", "Score images with an NSFW classifier; optionally quarantine flagged files."),
    pending_command("analyze", "Run several jobs (tag, classify, nsfw, embed) in one pass."),
    index,
    search,
    duplicates,
    library,
    pending_command("serve", "Serve the HTTP API and web page."),
]
