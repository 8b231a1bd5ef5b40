"""The command line: each command is a thin use of the library (see docs/cli.md).

Heavy imports (torch, transformers) happen inside commands, so ``taglens --help`` is instant.
"""

from __future__ import annotations

import errno
import functools
import os
import sqlite3
from collections.abc import Callable
from typing import Any

import click

from taglens import __version__
from taglens.cli.commands import COMMANDS
from taglens.errors import Interrupted, InvalidRequestError, TaglensError

# Exit statuses, the same for every command: 0 done (at least one image done, where there are
# images; `taglens.cli.runner.exit_status`), 1 failed, 2 usage error (click's own, and every
# InvalidRequestError, turned into one here), 130 interrupted (Ctrl-C; `taglens.cli.runner`
# first says what was kept).


# a full disk, wherever it shows (SQLite says "database or disk is full"); the library's database
# rolls back to its last commit, and every output file is written to a temporary name first
DISK_FULL = ("cannot write {what}: {reason}; free some space and run the command again "
             "(what was written before is intact)")


class TaglensGroup(click.Group):
    """Every command added here (and every subcommand of a group added here) turns taglens's typed
    errors into one line: an `InvalidRequestError` becomes a usage error (exit 2, with the
    command's usage line), any other `TaglensError` a failure (exit 1), and Ctrl-C a line
    saying what was kept (`taglens.errors.Interrupted`) and exit status 130."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        _translate_errors(cmd)
        super().add_command(cmd, name)


def _translate_errors(cmd: click.Command) -> None:
    if cmd.callback is not None and not getattr(cmd.callback, "_taglens_errors", False):
        cmd.callback = _one_line_errors(cmd.callback)
    for sub in getattr(cmd, "commands", {}).values():
        _translate_errors(sub)


def _one_line_errors(callback: Callable[..., Any]) -> Callable[..., Any]:
    # runs inside click's Context.invoke, which attaches the command's context to a UsageError
    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except Interrupted as exc:
            click.echo(str(exc), err=True)
            click.get_current_context().exit(130)
        except KeyboardInterrupt:
            click.echo("taglens: interrupted", err=True)
            click.get_current_context().exit(130)
        except InvalidRequestError as exc:
            raise click.UsageError(str(exc)) from None
        except TaglensError as exc:
            raise click.ClickException(str(exc)) from None
        except sqlite3.OperationalError as exc:
            if "disk is full" not in str(exc):
                raise
            raise click.ClickException(DISK_FULL.format(what="the library", reason=exc)) from None
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            what = exc.filename or "a file"
            raise click.ClickException(DISK_FULL.format(what=what, reason=exc.strerror or exc)) from None

    run._taglens_errors = True  # type: ignore[attr-defined]
    return run


@click.group(cls=TaglensGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="taglens")
def cli() -> None:
    """Tag, classify, detect NSFW and search images with open models.

    \b
    Example:
        taglens tag photos/ --top-k 20 --output tags.jsonl
    """
    # transformers reads these when first imported (inside a command): keep its advisory chatter
    # and per-load progress bars off the terminal, where our own progress bar and messages go.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


for _command in COMMANDS:
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="taglens")
