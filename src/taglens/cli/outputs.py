"""One rule for every command that writes a file: its format follows the ``--output`` name, and
an output that cannot be written is refused before any model loads.

- no ``--format``: the suffix decides (``.jsonl``/``.ndjson``, ``.csv``, ``.parquet``/``.pq``,
  ``.npy``, ``.txt``, as the command writes them); an unknown suffix, or one the command does not
  write, is a usage error; stdout gets the command's first format (JSON lines);
- ``--format`` given: a suffix naming another format is a usage error; a name with no known
  suffix (``results``, ``/dev/stdout``) takes the format given;
- binary formats (Parquet, .npy) need a file;
- the folder must exist and take a new file (`taglens.io.atomic.check_writable`), else one line
  names the path and the OS reason (exit status 1).
"""

from __future__ import annotations

import os
from pathlib import Path

import click

SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet",
            ".npy": "npy", ".txt": "txt"}
BINARY = frozenset({"parquet", "npy"})


def describe_suffixes(formats: tuple[str, ...]) -> str:
    return ", ".join(suffix for suffix, fmt in SUFFIXES.items() if fmt in formats)


def to_stdout(output: str | None) -> bool:
    return output is None or output == "-"


def resolve_format(output: str | None, fmt: str | None, formats: tuple[str, ...]) -> str:
    """The format to write (see the module docstring); `click.UsageError` when the name and the
    format disagree or the name says nothing."""
    if not to_stdout(output) and os.path.isdir(output):  # type: ignore[arg-type]
        return fmt or formats[0]  # a folder: the command says whether it takes one
    named = None if to_stdout(output) else SUFFIXES.get(Path(output).suffix.lower())  # type: ignore[union-attr]
    if fmt is None:
        if to_stdout(output):
            return formats[0]
        if named is None or named not in formats:
            what = f"{named} is not one of them" if named else "its name does not say which"
            raise click.UsageError(f"cannot tell the format of --output {output}: this command writes "
                                   f"{describe_suffixes(formats)} files ({what}); rename it or pass --format")
        return named
    if named is not None and named != fmt:
        raise click.UsageError(f"--output {output} names a {named} file, but --format is {fmt}")
    if fmt in BINARY and to_stdout(output):
        raise click.UsageError(f"--format {fmt} needs --output FILE (it is not written to stdout)")
    return fmt


def check_output(output: str | None, *, folder_ok: bool = False) -> None:
    """Refuse (`taglens.errors.OutputError`) an output file that cannot be written, before any
    work; an existing folder is left to a command that takes one (``folder_ok``)."""
    from taglens.io.atomic import check_writable

    if to_stdout(output) or (folder_ok and os.path.isdir(output)):  # type: ignore[arg-type]
        return
    check_writable(output)  # type: ignore[arg-type]


def check_folder(folder: str) -> None:
    """Refuse (`taglens.errors.OutputError`) a folder that cannot be created or written (e.g.
    ``--copy-to``), before any work and without creating it: the nearest existing folder above
    it must be a folder that takes a new entry."""
    import tempfile

    from taglens.errors import OutputError

    path = Path(os.path.abspath(folder))
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot write {folder}: {existing} is not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".taglens-check.", dir=existing))
    except OSError as exc:
        raise OutputError(f"cannot write {folder}: {exc.strerror or exc}") from None
