"""Placeholders for commands whose issue has not landed: they say so and exit with status 2."""

from __future__ import annotations

import click


def pending_command(name: str, summary: str) -> click.Command:
    @click.command(name, help=f"{summary}\n\n(Not available in this build yet.)",
                   context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        raise click.UsageError(f"'taglens {name}' is not available in this build yet")

    return command
