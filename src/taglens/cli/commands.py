"""The list of commands, in the order ``taglens --help`` shows them."""

from __future__ import annotations

import click

from taglens.cli.analyze import analyze
from taglens.cli.classify import classify
from taglens.cli.duplicates import duplicates
from taglens.cli.embed import embed
from taglens.cli.index import index
from taglens.cli.library import library
from taglens.cli.nsfw import nsfw
from taglens.cli.search import search
from taglens.cli.serve import serve
from taglens.cli.tag import tag

COMMANDS: list[click.Command] = [
    tag,
    classify,
    embed,
    nsfw,
    analyze,
    index,
    search,
    duplicates,
    library,
    serve,
]
