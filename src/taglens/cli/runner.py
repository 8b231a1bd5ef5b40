"""Running records through a sink with a progress bar and a summary: shared by every command
that reads images."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import click

from taglens.counts import counted
from taglens.engine import EngineOptions, Job, run
from taglens.images import DecodeOptions
from taglens.inputs import iter_image_paths
from taglens.records import Record
from taglens.sinks import Sink


@dataclass
class Summary:
    done: int = 0
    errors: int = 0
    started: float = field(default_factory=time.perf_counter)

    @property
    def total(self) -> int:
        return self.done + self.errors

    @property
    def rate(self) -> float:
        return self.total / max(time.perf_counter() - self.started, 1e-9)

    def line(self) -> str:
        return (f"{counted(self.total, 'image')}: {self.done} done, {counted(self.errors, 'error')}, "
                f"{self.rate:.1f} images/s")


def engine_options(batch_size: int, workers: int | None, draft: bool, max_pixels: int, max_file_size: int,
                   **_: Any) -> EngineOptions:
    """EngineOptions from the values of `runtime_options`."""
    decode = DecodeOptions(max_pixels=max_pixels, max_bytes=max_file_size, draft=draft)
    extra = {"workers": workers} if workers else {}
    return EngineOptions(batch_size=batch_size, decode=decode, **extra)


def run_to_sink(
    paths: Sequence[str],
    recursive: bool,
    jobs: Sequence[Job],
    options: EngineOptions,
    sink: Sink,
    *,
    quiet: bool = False,
    on_record: Callable[[Record], None] | None = None,
    skip: Callable[[str], bool] | None = None,
    summary: Summary | None = None,
) -> Summary:
    """Stream every image under ``paths`` through ``jobs`` into ``sink``; return the counts.

    Pass a `Summary` subclass as ``summary`` to count more (in ``on_record``) and say it in its
    own ``line()``.
    """
    sources: Iterable[str] = iter_image_paths(paths, recursive=recursive)
    if skip is not None:
        sources = (p for p in sources if not skip(p))
    summary = summary if summary is not None else Summary()
    bar = progress_bar(paths, recursive, quiet)
    try:
        for record in run(sources, jobs, options):
            sink.write(record)
            if record.error is None:
                summary.done += 1
            else:
                summary.errors += 1
                if bar.disable and not quiet:
                    click.echo(f"skipping {record.path}: {record.error}", err=True)
            if on_record is not None:
                on_record(record)
            bar.update(1)
    finally:
        bar.close()
        sink.close()
    if not quiet:
        click.echo(summary.line(), err=True)
    return summary


def exit_status(summary: Summary) -> int:
    """0 when at least one image succeeded; 1 when every image failed or none was found."""
    if summary.total == 0:
        click.echo("taglens: no images found", err=True)
        return 1
    return 0 if summary.done else 1


def progress_bar(paths: Sequence[str], recursive: bool, quiet: bool):
    """A tqdm bar on stderr (off when quiet or not a terminal) whose total is counted in a
    background thread, so work starts at once and the ETA appears when the count is known."""
    from tqdm import tqdm

    bar = tqdm(unit="img", file=sys.stderr, disable=quiet or not sys.stderr.isatty(), dynamic_ncols=True)
    if not bar.disable and "-" not in paths:
        def count() -> None:
            total = sum(1 for _ in iter_image_paths(paths, recursive=recursive))
            bar.total = total
            bar.refresh()

        threading.Thread(target=count, daemon=True, name="taglens-count").start()
    return bar
