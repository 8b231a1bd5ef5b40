"""Running records through a sink with a progress bar and a summary: shared by every command
that reads images."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from taglens.counts import counted
from taglens.engine import EngineOptions, Job, run
from taglens.errors import Interrupted
from taglens.io.decode import DecodeOptions
from taglens.io.inputs import iter_image_paths
from taglens.records import Record
from taglens.io.resume import AppendFile
from taglens.io.sinks import Sink, StopRun, Target, committing


@dataclass
class Summary:
    """What a run did, image by image: ``done`` (every job's fields), ``partial`` (a job failed on
    it, the others' fields kept: see `taglens.records`), ``errors`` (no result); ``skipped``
    images were already in a resumed output and are not part of ``total``."""

    done: int = 0
    partial: int = 0
    errors: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.perf_counter)

    @property
    def total(self) -> int:
        return self.done + self.partial + self.errors

    @property
    def rate(self) -> float:
        return self.total / max(time.perf_counter() - self.started, 1e-9)

    def count(self, record: Record) -> None:
        if record.status == "done":
            self.done += 1
        elif record.status == "partial":
            self.partial += 1
        else:
            self.errors += 1

    def line(self) -> str:
        partial = f", {self.partial} partial" if self.partial else ""
        skipped = f" ({self.skipped} skipped: already done)" if self.skipped else ""
        return (f"{counted(self.total, 'image')}: {self.done} done{partial}, {counted(self.errors, 'error')}, "
                f"{self.rate:.1f} images/s{skipped}")


def engine_options(batch_size: int | str, workers: int | None, draft: bool, max_pixels: int, max_file_size: int,
                   *, device: str = "cpu", preprocess: str = "exact", input_sizes: Sequence[int] = (),
                   **_: Any) -> EngineOptions:
    """EngineOptions from the values of `runtime_options`: ``--batch-size auto`` sized for the
    device (``input_sizes``: the models' input sides; the default families' when empty), and on
    CUDA a decode thread per core unless ``--workers`` says otherwise."""
    decode = DecodeOptions(max_pixels=max_pixels, max_bytes=max_file_size, draft=draft)
    extra: dict[str, Any] = {"workers": workers} if workers else {}
    on_cuda = _on_cuda(device)
    if batch_size == "auto":
        from taglens.engine.gpu_sizing import CPU_BATCH, auto_batch_size
        from taglens.models.registry import configs

        sizes = list(input_sizes) or [family.input_size for family in configs()]
        batch_size = auto_batch_size(device, sizes) if on_cuda else CPU_BATCH
    if on_cuda and not workers:
        from taglens.engine import threads

        extra["workers"] = threads.sizing("cuda").decode_workers
    if preprocess == "gpu" and not on_cuda:
        click.echo("--preprocess gpu: no CUDA GPU for the models; preprocessing the exact way on the CPU", err=True)
        preprocess = "exact"
    return EngineOptions(batch_size=int(batch_size), decode=decode, preprocess=preprocess, **extra)


def _on_cuda(device: str) -> bool:
    from taglens.engine.placement import resolve_device

    try:
        return resolve_device(device).type == "cuda"
    except ValueError:
        return False


def run_to_sink(
    paths: Sequence[str],
    recursive: bool,
    jobs: Sequence[Job],
    options: EngineOptions,
    sink: Sink,
    *,
    target: Target | None = None,
    resumable: bool = False,
    quiet: bool = False,
    on_record: Callable[[Record], None] | None = None,
    skip: Callable[[str], bool] | None = None,
    summary: Summary | None = None,
) -> Summary:
    """Stream every image under ``paths`` through ``jobs`` into ``sink``; return the counts.

    ``target`` is the output file behind ``sink`` (None for stdout): committed when the run
    completes, removed when it fails. On Ctrl-C it keeps the records written so far
    (`taglens.io.atomic.TempPath.keep`) and `Interrupted` says where, and with ``resumable`` (the
    command has ``--resume`` for this output) how to go on. Pass a `Summary` subclass as
    ``summary`` to count more (in ``on_record``) and say it in its own ``line()``.
    """
    summary = summary if summary is not None else Summary()
    sources: Iterable[str] = iter_image_paths(paths, recursive=recursive)
    if skip is not None:
        sources = _skipping(sources, skip, summary)
    bar = progress_bar(paths, recursive, quiet, skip)
    try:
        with committing(target):
            try:
                with closing(run(sources, jobs, options)) as records:
                    for record in records:
                        sink.write(record)
                        summary.count(record)
                        if bar.disable and not quiet:
                            report_failure(record)
                        if on_record is not None:
                            on_record(record)
                        bar.update(1)
            except KeyboardInterrupt:
                raise StopRun() from None
            finally:
                bar.close()
                sink.close()
    except StopRun as stop:
        if not quiet:
            click.echo(summary.line(), err=True)
        raise Interrupted(interrupted_message(summary, target, stop.kept, resumable)) from None
    if not quiet:
        click.echo(summary.line(), err=True)
    return summary


def report_failure(record: Record) -> None:
    """One stderr line for an image with no result, or one per job that failed on it."""
    if record.error is not None:
        click.echo(f"skipping {record.path}: {record.error}", err=True)
        return
    for task, reason in record.task_errors.items():
        click.echo(f"no {task} result for {record.path}: {reason}", err=True)


def interrupted_message(summary: Summary, target: Target | None, kept: Path | None, resumable: bool) -> str:
    """What an interrupted run kept, and how to go on from there."""
    head = f"taglens: interrupted after {counted(summary.total, 'image')}"
    if target is None or kept is None:
        return f"{head} (their records went to stdout)"
    if isinstance(target, AppendFile):
        return f"{head}; {kept} holds every record written so far: run the same command again to do the rest"
    text = f"{head}; their records are kept in {kept}"
    if kept != target.path:
        text += f" ({target.path} is as it was)"
    if resumable:
        again = "--resume" if kept == target.path else f"--resume and --output {kept}"
        text += f": run the same command with {again} to do the rest"
    return text


def _skipping(sources: Iterable[str], skip: Callable[[str], bool], summary: Summary) -> Iterator[str]:
    for path in sources:
        if skip(path):
            summary.skipped += 1
        else:
            yield path


def exit_status(summary: Summary) -> int:
    """0 when at least one image has results (done or partial; see `taglens.records`), or every
    image was already done (a resumed run); 1 when every image failed or none was found."""
    if summary.total == 0:
        if summary.skipped:
            return 0
        click.echo("taglens: no images found", err=True)
        return 1
    return 0 if summary.done or summary.partial else 1


def progress_bar(paths: Sequence[str], recursive: bool, quiet: bool, skip: Callable[[str], bool] | None = None):
    """A tqdm bar on stderr (off when quiet or not a terminal), shown at once, whose total (the
    images still to do: ``skip`` leaves out those a resumed output holds) is counted in a
    background thread, so work starts at once and the ETA appears when the count is known."""
    from tqdm import tqdm

    bar = tqdm(unit="img", file=sys.stderr, disable=quiet or not sys.stderr.isatty(), dynamic_ncols=True)
    if not bar.disable:
        bar.refresh()
    if not bar.disable and "-" not in paths:
        def count() -> None:
            total = sum(1 for p in iter_image_paths(paths, recursive=recursive) if skip is None or not skip(p))
            bar.total = total
            bar.refresh()

        threading.Thread(target=count, daemon=True, name="taglens-count").start()
    return bar
