"""``taglens tag``: JoyTag tags for images, as records and/or caption files (see docs/tag.md)."""

from __future__ import annotations

import csv
from typing import IO, Any

import click

from taglens.cli.captions import caption_hook, caption_options, caption_writer
from taglens.cli.options import FRACTION, input_options, output_options, runtime_options
from taglens.io.names import dumps, printable
from taglens.models import registry
from taglens.records import Record

JOYTAG = registry.config("joytag")  # a family config: reading it imports no torch


@click.command("tag")
@input_options
@click.option("--model", "-m", default=JOYTAG.hub_id, show_default=True,
              help="Hub id or folder with config.json, model.safetensors and top_tags.txt.")
@click.option("--revision", default=None, help="Hub revision (commit, branch or tag) to pin.")
@click.option("--threshold", "-t", type=FRACTION, default=JOYTAG.threshold, show_default=True,
              help="Keep tags whose score is strictly greater than this.")
@click.option("--thresholds-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CSV of 'tag,threshold' rows that replace --threshold for those tags.")
@click.option("--top-k", "-k", type=click.IntRange(min=1), default=None,
              help="Keep at most this many tags per image (the highest scores).")
@click.option("--exclude", "-x", multiple=True, metavar="TAGS",
              help="Comma-separated tags never to report (repeatable).")
@click.option("--exclude-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="File of tags never to report (one per line, or comma-separated).")
@click.option("--scores/--no-scores", default=None,
              help="Include scores: on by default for jsonl and csv, off for txt.")
@output_options(("jsonl", "csv", "txt"))
@runtime_options
@caption_options
@click.pass_context
def tag(ctx: click.Context, paths: tuple[str, ...], recursive: bool, model: str, revision: str | None,
        threshold: float, thresholds_file: str | None, top_k: int | None, exclude: tuple[str, ...],
        exclude_file: str | None, scores: bool | None, output: str | None, fmt: str, quiet: bool,
        captions: bool, caption_dir: str | None, caption_ext: str, replace_underscores: bool,
        escape_parens: bool, prefix: str, existing: str, **runtime: Any) -> None:
    """Tag images with JoyTag (5813 Danbooru-style tags) and print one record per image.

    A tag is kept when its score is strictly greater than the threshold. Records go to stdout
    (or --output) as JSON lines, CSV or text; with --captions, a caption file is written for
    every image, and records are written only where --output says.

    \b
    Example:
        taglens tag photos/ --top-k 20 --output tags.jsonl
        taglens tag photos/ --top-k 10 --format txt
        taglens tag dataset/ --captions --replace-underscores --prefix "mychar" --existing overwrite
    """
    from taglens.cli.runner import engine_options, exit_status, run_to_sink
    from taglens.engine.placement import Placement
    from taglens.io.sinks import open_text_output
    from taglens.models.joytag import Tagger
    from taglens.models.tag_selection import TagSelection, split_tags

    writer = caption_writer(ctx, paths, captions, caption_dir, caption_ext, replace_underscores, escape_parens,
                            prefix, existing)
    captions = writer is not None
    try:
        Placement.resolve(runtime["device"], runtime["dtype"], tf32=runtime["tf32"])
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    selection = TagSelection.from_files(
        threshold=threshold, thresholds_file=thresholds_file, top_k=top_k,
        exclude=[t for text in exclude for t in split_tags(text)], exclude_file=exclude_file,
    )
    tagger = Tagger.from_pretrained(model, revision, device=runtime["device"], dtype=runtime["dtype"],
                                    tf32=runtime["tf32"])
    if runtime["compile_models"]:
        tagger.compile()
    job = tagger.job(selection)
    on_record = caption_hook(writer)

    if captions and output is None:
        stream, target = None, None  # caption runs print records only when asked to
    else:
        stream, target = open_text_output(output)
    sink = make_sink(fmt, stream, scores)
    summary = run_to_sink(
        paths, recursive, [job], engine_options(**runtime), sink, target=target, quiet=quiet, on_record=on_record,
        skip=writer.should_skip if writer is not None and existing == "skip" else None,
    )
    if writer is not None and not quiet:
        click.echo(writer.summary(), err=True)
    if writer is None:
        ctx.exit(exit_status(summary))
    # A caption run succeeds when some image has its caption, written now or already there.
    captioned = writer.counts["written"] + writer.counts["appended"] + writer.counts["skipped"]
    ctx.exit(0 if captioned else exit_status(summary) if summary.total == 0 else 1)


def make_sink(fmt: str, stream: IO[str] | None, scores: bool | None):
    """The record sink for a format; ``scores=None`` means the format's default."""
    from taglens.io.sinks import CsvSink, JsonlSink

    if stream is None:
        return NullSink()
    if fmt == "txt":
        return TextSink(stream, scores=bool(scores))
    if scores is False:
        return NamesJsonlSink(stream) if fmt == "jsonl" else NamesCsvSink(stream)
    return JsonlSink(stream, embedding=False) if fmt == "jsonl" else CsvSink(stream, ["tags"])


class NullSink:
    def write(self, record: Record) -> None:
        pass

    def close(self) -> None:
        pass


class TextSink:
    """``path<TAB>tag, tag, ...`` per image (``tag (0.931)`` with scores); ``path<TAB>error: ...``."""

    def __init__(self, stream: IO[str], *, scores: bool = False):
        self.stream, self.scores = stream, scores

    def write(self, record: Record) -> None:
        path = printable(record.path)
        if record.error is not None:
            line = f"{path}\terror: {printable(record.error)}"
        elif self.scores:
            line = path + "\t" + ", ".join(f"{t.tag} ({t.score:.3f})" for t in record.tags or ())
        else:
            line = path + "\t" + ", ".join(t.tag for t in record.tags or ())
        self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


class NamesJsonlSink:
    """JSON lines whose ``tags`` is a plain list of names (``--no-scores``)."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def write(self, record: Record) -> None:
        data = record.to_json(embedding=False)
        if "tags" in data:
            data["tags"] = [t["tag"] for t in data["tags"]]
        self.stream.write(dumps(data) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


class NamesCsvSink:
    """CSV with ``path``, ``error``, ``tags`` (a JSON array of names) and ``tag_error`` only
    (``--no-scores``)."""

    def __init__(self, stream: IO[str]):
        self.stream = stream
        self.writer = csv.writer(stream)
        self.writer.writerow(["path", "error", "tags", "tag_error"])

    def write(self, record: Record) -> None:
        from taglens.io.sinks import names_json

        tags = "" if record.tags is None else names_json(t.tag for t in record.tags)
        self.writer.writerow([printable(record.path), printable(record.error or ""), tags,
                              printable(record.task_errors.get("tag", ""))])
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()
