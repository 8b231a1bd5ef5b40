"""The command line: each command is a thin use of the library (see docs/cli.md).

Heavy imports (torch, transformers) happen inside commands, so ``taglens --help`` is instant.
"""

from __future__ import annotations

import os

import click

from taglens import __version__
from taglens.cli.commands import COMMANDS
from taglens.errors import Interrupted, TaglensError


class TaglensGroup(click.Group):
    """Turns taglens's typed errors into a one-line message and exit status 1, and Ctrl-C into a
    line saying what was kept (`taglens.errors.Interrupted`) and exit status 130."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except TaglensError as exc:
            raise click.ClickException(str(exc)) from None
        except Interrupted as exc:
            click.echo(str(exc), err=True)
            ctx.exit(130)
        except KeyboardInterrupt:
            click.echo("taglens: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=TaglensGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="taglens")
def cli() -> None:
    """Tag, classify, detect NSFW and search images with open models.

    \b
    Example:
        taglens tag photos/ --threshold 0.4 --output tags.jsonl
    """
    # transformers reads these when first imported (inside a command): keep its advisory chatter
    # and per-load progress bars off the terminal, where our own progress bar and messages go.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


for _command in COMMANDS:
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="taglens")
