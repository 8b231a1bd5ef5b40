"""``taglens library``: look after the library (stats, verify, prune, import), and the ``--library`` option
that every library command shares."""

from __future__ import annotations

from pathlib import Path

import click

from taglens.cli.options import stack
from taglens.counts import counted

library_option = stack(
    click.option("--library", "library_dir", type=click.Path(file_okay=False), default=None, envvar="TAGLENS_LIBRARY",
                 show_envvar=True,
                 help="Library folder (default: $TAGLENS_LIBRARY, else the user data folder, e.g. "
                      "~/.local/share/taglens)."),
)


def open_library(library_dir: str | None, *, create: bool = False, **kwargs):
    """The library at ``--library`` (else the default folder). Only ``create`` (index, import) makes
    one; every other command refuses a folder without one and leaves it as it was."""
    from taglens.library import Library

    return Library.open(library_dir, create=create, **kwargs)


@click.group("library")
def library() -> None:
    """Look after the library: statistics, integrity checks, clean-up, importing results.

    \b
    Example:
        taglens library stats
        taglens library verify
        taglens library prune --dry-run
        taglens library import photos.parquet
    """


@library.command("stats")
@library_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def stats(library_dir: str | None, as_json: bool) -> None:
    """Counts of files, images and results per model, sizes, and the vector index state.

    \b
    Example:
        taglens library stats --json
    """
    with open_library(library_dir) as lib:
        out = lib.stats()
    if as_json:
        from taglens.library.reports import json_text
        click.echo(json_text(out, indent=1))
        return
    click.echo(f"library      {out['library']} (schema {out['schema_version']}, "
               f"{out['database_bytes'] / 1e6:.1f} MB)")
    remote = f", {counted(out['remote'], 'URI')}" if out.get("remote") else ""
    click.echo(f"files        {out['files']} ({out['indexed']} indexed, {counted(out['errors'], 'error')}{remote})")
    click.echo(f"images       {out['images']} distinct")
    for m in out["models"]:
        mark = "*" if m["current"] else " "
        failed = f", {m['failed']} failed (the next index tries again)" if m.get("failed") else ""
        click.echo(f"{mark} {m['task']:<6}   {m['model_id']}@{m['revision']}: {counted(m['results'], 'result')}{failed}")
    if "vector_index" in out:
        v = out["vector_index"]
        click.echo(f"vectors      {v['state']}, {v['kind'] or '-'}, {v['count'] or 0} x {v['dim']}, "
                   f"{v['bytes'] / 1e6:.1f} MB")


@library.command("verify")
@library_option
@click.option("--no-files", is_flag=True, help="Skip checking that indexed files are still on disk.")
def verify(library_dir: str | None, no_files: bool) -> None:
    """Check the database (PRAGMA integrity_check, references) and the vector index against it.

    Exits with status 1 when a problem is found; notes (files gone from disk, an index to be
    rebuilt) are printed but are not problems.

    \b
    Example:
        taglens library verify
    """
    with open_library(library_dir) as lib:
        report = lib.verify(check_files=not no_files)
    for note in report.notes:
        click.echo(f"note: {note}")
    for problem in report.problems:
        click.echo(f"problem: {problem}")
    click.echo("ok" if report.ok else counted(len(report.problems), "problem"))
    if not report.ok:
        raise SystemExit(1)


@library.command("prune")
@library_option
@click.option("--dry-run", "-n", is_flag=True, help="Only say what would be removed.")
def prune(library_dir: str | None, dry_run: bool) -> None:
    """Remove files gone from disk, images no file points at, and results of superseded models.

    \b
    Example:
        taglens library prune --dry-run
    """
    with open_library(library_dir) as lib:
        click.echo(lib.prune(dry_run=dry_run).line())


@library.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True), metavar="FILE|DIR...")
@library_option
@click.option("--quiet", "-q", is_flag=True, help="No summary line.")
def import_(files: tuple[str, ...], library_dir: str | None, quiet: bool) -> None:
    """Bring results from `taglens analyze -f parquet` (or the Ray job) into the library, without
    recomputing them; search then finds those images.

    Each file's metadata names the checkpoint of each job, and results are filed under it as
    `taglens index` files its own. A folder stands for the `*.parquet` files in it (the Ray job's
    output). Error rows are skipped (index tries them later); local files
    are stored as if indexed here (a file whose bytes changed since is skipped); URIs
    (s3://...) are stored as they are; local paths absent from this machine are skipped.

    \b
    Example:
        taglens analyze photos/ --tasks tag,nsfw,embed -f parquet -o photos.parquet
        taglens library import photos.parquet
        taglens search "a dog on a beach"
        taglens library import results/          # taglens analyze --engine ray -o results/
    """
    parquet = [p for f in files for p in (sorted(Path(f).glob("*.parquet")) if Path(f).is_dir() else [Path(f)])]
    if not parquet:
        raise click.UsageError(f"no .parquet files in {', '.join(files)}")
    with open_library(library_dir, create=True) as lib:
        report = lib.import_parquet(parquet)
    if not quiet:
        click.echo(report.line(), err=True)
