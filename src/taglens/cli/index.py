"""``taglens index``: bring the library up to date with folders (tag, nsfw, embed in one pass)."""

from __future__ import annotations

import sys

import click

from taglens.cli.library import library_option, open_library
from taglens.cli.options import FRACTION, refuse_options_of_other_tasks, runtime_options
from taglens.models import registry

TASKS = ("tag", "nsfw", "embed")
TASK_OPTIONS = {"tagger": ("tag",), "tag_threshold": ("tag",), "siglip": ("embed",), "nsfw_model": ("nsfw",)}


def _tasks(value: str) -> tuple[str, ...]:
    tasks = tuple(dict.fromkeys(t.strip() for t in value.split(",") if t.strip()))
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise click.BadParameter(f"choose from {', '.join(TASKS)} (comma-separated), not {value!r}")
    return tasks


@click.command("index")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--recursive/--no-recursive", "-r/-R", default=True, show_default=True,
              help="Walk folders recursively (hidden files and folders are skipped).")
@library_option
@click.option("--tasks", default="tag,nsfw,embed", show_default=True,
              help="Which results to keep: any of tag, nsfw, embed (search needs embed).")
@click.option("--tagger", default=None,
              help="JoyTag-format checkpoint, hub id or folder (default: the library's current one, else "
                   f"{registry.for_task('tag').hub_id}).")
@click.option("--siglip", default=None,
              help="SigLIP or CLIP checkpoint for embeddings (default: the library's current one, else "
                   f"{registry.for_task('embed').hub_id}).")
@click.option("--nsfw-model", default=None,
              help="Image classifier for NSFW scores (default: the library's current one, else "
                   f"{registry.for_task('nsfw').hub_id}).")
@click.option("--tag-threshold", type=FRACTION, default=registry.for_task("tag").threshold, show_default=True,
              help="Keep tags scoring above this.")
@click.option("--retry-errors", is_flag=True, help="Try files that failed before again, even if unchanged.")
@runtime_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary line.")
@click.pass_context
def index(ctx: click.Context, paths: tuple[str, ...], recursive: bool, library_dir: str | None, tasks: str, tagger: str | None,
          siglip: str | None, nsfw_model: str | None, tag_threshold: float, retry_errors: bool, device: str, dtype: str, quiet: bool,
          **runtime) -> None:
    """Index images under PATH... into the library, computing only what is new or changed.

    Unchanged files (same size and mtime) are skipped without reading them; new or changed ones
    are read once; renamed, moved or copied files keep their results (same content hash, no
    decoding); files gone from PATH are removed; a different checkpoint recomputes only its own
    results. Models load only when some file is new, changed or lacks a result. Results are committed every --batch-size images: an interrupted run loses nothing
    committed, and running it again finishes the job.

    \b
    Example:
        taglens index ~/Pictures
        taglens index ~/Pictures --tasks embed --siglip google/siglip-so400m-patch14-384
    """
    from tqdm import tqdm

    from taglens.cli.runner import Summary, engine_options, exit_status, report_failure
    from taglens.library import models as library_models

    chosen = _tasks(tasks)
    refuse_options_of_other_tasks(ctx, chosen, TASK_OPTIONS)
    options = engine_options(**runtime)
    # counts the files read (its total known once the folders are compared with the library, so it
    # shows an ETA); unchanged ones are not read and not worth a tick
    bar = tqdm(unit="img", desc="computing", file=sys.stderr, disable=quiet or not sys.stderr.isatty(),
               dynamic_ncols=True)

    def on_record(record) -> None:
        if bar.disable and not quiet:
            report_failure(record)
        bar.update(1)

    def on_total(total: int) -> None:
        bar.total = total
        bar.refresh()

    try:
        with open_library(library_dir, create=True) as lib:
            # without a flag, keep the checkpoint the library already uses (switching re-embeds everything)
            current = lib.current_models()
            picked = {task: flag or current.get(task) or registry.for_task(task).hub_id
                      for task, flag in (("tag", tagger), ("embed", siglip), ("nsfw", nsfw_model))}
            sources = library_models.load_models(
                tagger=picked["tag"] if "tag" in chosen else None, siglip=picked["embed"] if "embed" in chosen else None,
                nsfw_model=picked["nsfw"] if "nsfw" in chosen else None, device=device, dtype=dtype,
                tf32=runtime["tf32"], compile=runtime["compile_models"], tag_threshold=tag_threshold)
            report = lib.index(paths, sources, recursive=recursive, options=options, retry_errors=retry_errors,
                               on_record=on_record, on_total=on_total)
    finally:
        bar.close()
    if not quiet:
        click.echo(report.line(), err=True)
        if report.failed_before and not retry_errors:
            click.echo("taglens: files that failed before are not tried again unless changed; "
                       "--retry-errors tries them now", err=True)
    sys.exit(exit_status(Summary(done=report.ok, errors=report.seen - report.ok)))
