"""``taglens analyze``: every job in one pass over the images (see docs/analyze.md).

Each image is read and decoded once; JoyTag, SigLIP and the NSFW classifier each get their own
tensor from that one decode; one record per image carries every job's fields. A thin use of
`taglens.models.modelset.ModelSet` and `taglens.engine.run`.
"""

from __future__ import annotations

import os
from typing import Any

import click

from taglens.models import registry
from taglens.cli.captions import caption_hook, caption_options, caption_writer
from taglens.cli.options import (FRACTION, Number, input_options, output_options, refuse_options_of_other_tasks,
                                 runtime_options)

# the family configs (reading them imports no torch, so ``taglens --help`` stays quick)
JOYTAG, SIGLIP, CLASSIFIER = (registry.config(name) for name in ("joytag", "siglip", "vit_classifier"))
DEFAULT_TASKS = "tag,nsfw"
# which task uses each task-specific option (the others are refused when their task is not run)
TASK_OPTIONS = {
    **dict.fromkeys(("tagger", "tag_threshold", "thresholds_file", "tag_top_k", "exclude"), ("tag",)),
    "siglip": ("classify", "embed"),
    **dict.fromkeys(("labels", "labels_file", "templates", "label_threshold", "label_top_k"), ("classify",)),
    **dict.fromkeys(("nsfw_model", "nsfw_threshold", "positive_label"), ("nsfw",)),
}


@click.command("analyze")
@input_options
@click.option("--tasks", default=DEFAULT_TASKS, show_default=True,
              help="Comma-separated jobs: tag, classify, nsfw, embed (classify and embed share one SigLIP pass).")
@click.option("--tagger", default=JOYTAG.hub_id, show_default=True, help="JoyTag checkpoint: hub id or folder.")
@click.option("--siglip", default=SIGLIP.hub_id, show_default=True,
              help="SigLIP / SigLIP 2 / CLIP checkpoint for classify and embed: hub id or folder.")
@click.option("--nsfw-model", default=CLASSIFIER.hub_id, show_default=True,
              help="Image classifier for nsfw: hub id or folder.")
@click.option("--tag-threshold", type=FRACTION, default=JOYTAG.threshold, show_default=True,
              help="tag: keep tags whose score is strictly greater than this.")
@click.option("--thresholds-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="tag: CSV of 'tag,threshold' rows that replace --tag-threshold for those tags.")
@click.option("--tag-top-k", type=click.IntRange(min=1), default=None, help="tag: at most this many tags per image.")
@click.option("--exclude", "-x", multiple=True, metavar="TAGS", help="tag: comma-separated tags never to report.")
@click.option("--labels", "-l", multiple=True, metavar="'A,B,...'",
              help="classify: comma-separated labels; repeat the flag to add more.")
@click.option("--labels-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="classify: a UTF-8 file with one label per line.")
@click.option("--template", "templates", multiple=True, metavar="TEXT",
              help=f"classify: prompt with '{{}}' for the label [default: '{SIGLIP.template}']; repeat to ensemble.")
@click.option("--label-threshold", type=FRACTION, default=None,
              help="classify: keep labels whose score is at least this.")
@click.option("--label-top-k", type=click.IntRange(min=1), default=None, help="classify: keep the k best labels.")
@click.option("--nsfw-threshold", type=FRACTION, default=CLASSIFIER.threshold, show_default=True,
              help="nsfw: flag an image when a positive label's score is at or above this.")
@click.option("--positive-label", default=",".join(CLASSIFIER.positive_labels), show_default=True,
              help="nsfw: the label(s) that count as NSFW, comma-separated.")
@runtime_options
@output_options(("jsonl", "csv", "parquet"), dir_okay=True, folder_output=lambda params: params["engine"] == "ray",
                output_help="Write here instead of stdout (written to a temporary file, renamed when done; "
                            "Ctrl-C keeps what is written); with --engine ray, the folder (or URI) that "
                            "receives the Parquet files.")
@click.option("--resume", is_flag=True,
              help="Append to an existing --output (jsonl or csv; with --engine ray its folder), "
                   "skipping the paths it already holds.")
@caption_options
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process. ray: a Ray Data job (CPU tasks decode, one model actor per GPU) "
                   "writing Parquet files into --output DIR.")
@click.option("--address", default=None,
              help="ray: the cluster to join (auto, ray://HEAD:10001); default RAY_ADDRESS, else a local Ray instance.")
@click.option("--num-gpus", type=Number(min=0), default=None,
              help="ray: GPUs per model actor [default: 1 when the cluster has GPUs, else 0].")
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              help="ray: number of model actors [default: one per GPU, else half the cluster's CPUs].")
@click.pass_context
def analyze(ctx: click.Context, paths: tuple[str, ...], recursive: bool, tasks: str, tagger: str, siglip: str,
            nsfw_model: str, tag_threshold: float, thresholds_file: str | None, tag_top_k: int | None,
            exclude: tuple[str, ...], labels: tuple[str, ...], labels_file: str | None, templates: tuple[str, ...],
            label_threshold: float | None, label_top_k: int | None, nsfw_threshold: float, positive_label: str,
            output: str | None, fmt: str, quiet: bool, resume: bool, engine: str, address: str | None,
            num_gpus: float | None, concurrency: int | None, **rest: Any) -> None:
    """Run several jobs (tag, classify, nsfw, embed) in one pass: decode once, one record per image.

    With --engine ray the same pass runs as a Ray Data job, locally or on a cluster, reading local
    paths, globs or URIs (s3://...) and writing Parquet files into the --output folder.

    \b
    Example:
        taglens analyze photos/ --tasks tag,nsfw -o photos.jsonl
        taglens analyze photos/ --tasks tag,classify,nsfw,embed --labels "a cat,a dog" -f parquet -o all.parquet
        taglens analyze photos/ -o photos.jsonl --resume      # after an interrupted run
        taglens analyze s3://bucket/photos/ --engine ray --address auto --tasks tag,embed -o s3://bucket/out/
    """
    from taglens.io.arrow import fields_for_tasks
    from taglens.cli.classify import collect_labels
    from taglens.cli.runner import engine_options, exit_status, run_to_sink
    from taglens.io.resume import RESUMABLE_FORMATS
    from taglens.engine.placement import Placement
    from taglens.models.tag_selection import TagSelection, split_tags
    from taglens.models.modelset import ModelSet
    from taglens.models.request import TaskRequest, parse_tasks

    caption = {k: rest.pop(k) for k in ("captions", "caption_dir", "caption_ext", "replace_underscores",
                                         "escape_parens", "prefix", "existing")}
    runtime = rest
    task_names = parse_tasks(tasks)
    refuse_options_of_other_tasks(ctx, task_names, TASK_OPTIONS)
    if engine == "ray":
        check_ray_usage(ctx, output, fmt, caption, runtime)
    elif address is not None or num_gpus is not None or concurrency is not None:
        raise click.UsageError("--address, --num-gpus and --concurrency go with --engine ray")
    elif output is not None and os.path.isdir(output):
        raise click.UsageError(f"--output {output} is a folder; the local engine writes one file")
    writer = caption_writer(ctx, paths, **caption) if engine == "local" else None
    if writer is not None and "tag" not in task_names:
        raise click.UsageError("--captions needs the tag task")
    if resume and engine == "local" and (output in (None, "-") or fmt == "parquet"):
        raise click.UsageError("--resume appends to a jsonl or csv --output file")
    try:
        Placement.resolve(runtime["device"], runtime["dtype"], tf32=runtime["tf32"])
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    request = TaskRequest(
        tasks=task_names,
        tag_selection=TagSelection.from_files(threshold=tag_threshold, thresholds_file=thresholds_file,
                                              top_k=tag_top_k, exclude=[t for x in exclude for t in split_tags(x)]),
        labels=tuple(collect_labels(labels, labels_file)) if "classify" in task_names else (),
        templates=templates or (SIGLIP.template,),
        classify_threshold=label_threshold,
        classify_top_k=label_top_k,
        nsfw_threshold=nsfw_threshold,
        positive_labels=tuple(p.strip() for p in positive_label.split(",") if p.strip()),
    )
    models = ModelSet(tagger=tagger, siglip=siglip, nsfw_model=nsfw_model, device=runtime["device"],
                      dtype=runtime["dtype"], compile=runtime["compile_models"], tf32=runtime["tf32"])
    if engine == "ray":
        from taglens.distributed import RayOptions

        ray_options = RayOptions(address=address, concurrency=concurrency, num_gpus=num_gpus, quiet=quiet)
        ctx.exit(run_on_ray(paths, recursive, request, models, output, engine_options(**runtime), ray_options,
                            resume=resume, quiet=quiet))
    jobs = models.jobs(request)
    fields = fields_for_tasks(task_names)
    sink, target, skip = open_sink(fmt, output, fields, models if "embed" in task_names else None, jobs, resume,
                                   quiet=quiet)
    options = engine_options(**runtime, input_sizes=[job.transform.input_size for job in jobs])
    summary = run_to_sink(paths, recursive, jobs, options, sink, target=target,
                          resumable=fmt in RESUMABLE_FORMATS, quiet=quiet, on_record=caption_hook(writer), skip=skip)
    if writer is not None and not quiet:
        click.echo(writer.summary(), err=True)
    ctx.exit(exit_status(summary))


def check_ray_usage(ctx: click.Context, output: str | None, fmt: str | None, caption: dict[str, Any],
                    runtime: dict[str, Any]) -> None:
    """The options that do not apply to the Ray engine are refused rather than ignored."""
    if output in (None, "-"):
        raise click.UsageError("--engine ray writes Parquet files into a folder: pass --output DIR")
    if fmt not in (None, "parquet"):
        raise click.UsageError("--engine ray writes Parquet only")
    if caption["captions"]:
        raise click.UsageError("--captions works with the local engine only")
    if runtime.get("workers"):
        raise click.UsageError("--workers sets the local engine's decode threads; Ray schedules its own tasks")
    if runtime.get("preprocess") == "gpu":
        raise click.UsageError("--preprocess gpu works with the local engine only; the Ray engine preprocesses "
                               "exactly in its CPU tasks")


def run_on_ray(paths: tuple[str, ...], recursive: bool, request: Any, models: Any, output: str, options: Any,
               ray_options: Any, *, resume: bool, quiet: bool) -> int:
    """`taglens.distributed.analyze`, its summary on stderr; the exit status."""
    from taglens.counts import counted
    from taglens.distributed import analyze as analyze_on_ray

    run = analyze_on_ray(paths, request, models, output, options=options, ray_options=ray_options,
                         recursive=recursive, resume=resume)
    total = run.done + run.errors
    if not quiet:
        rate = total / max(run.seconds, 1e-9)
        skipped = f", {run.skipped} already in {output}" if run.skipped else ""
        click.echo(f"{counted(total, 'image')}: {run.done} done, {counted(run.errors, 'error')}{skipped}, "
                   f"{rate:.1f} images/s ({counted(len(run.files), 'Parquet file')} written to {output})", err=True)
    if total == 0 and not run.skipped:
        click.echo("taglens: no images found", err=True)
        return 1
    return 0 if run.done or run.skipped else 1


def open_sink(fmt: str, output: str | None, fields: tuple[str, ...], models: Any, jobs: list, resume: bool, *,
              quiet: bool = False):
    """(sink, target to commit or discard, skip) for the chosen format: a temporary file renamed at
    the end, or with ``resume`` an append to the existing file that skips the paths it holds."""
    from taglens.io.arrow import job_metadata
    from taglens.io.names import printable
    from taglens.io.resume import completed_paths, open_for_append
    from taglens.io.sinks import CsvSink, JsonlSink, ParquetSink, csv_columns, open_text_output

    if fmt == "parquet":
        dim = models.load_embedder().dim if models is not None else None
        sink = ParquetSink(output, dim, fields=fields, facts=True, metadata=job_metadata(jobs))
        return sink, sink, None
    if resume:
        done = completed_paths(output, fmt, csv_columns(fields) if fmt == "csv" else None)
        appended = open_for_append(output)
        fresh = appended.stream.tell() == 0
        sink = JsonlSink(appended.stream) if fmt == "jsonl" else CsvSink(appended.stream, fields, header=fresh)
        if done and not quiet:
            click.echo(f"taglens: resuming {output}: {len(done)} images already there, doing the rest", err=True)
        # a CSV holds a name that is not UTF-8 in its printable form: compare in that form
        return sink, appended, (lambda path: path in done or printable(path) in done) if done else None
    stream, target = open_text_output(output)
    return (JsonlSink(stream) if fmt == "jsonl" else CsvSink(stream, fields)), target, None
