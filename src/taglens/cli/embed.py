"""``taglens embed``: SigLIP/CLIP image or text embeddings to Parquet, .npy or JSONL (see docs/classify.md)."""

from __future__ import annotations

import json
from typing import Any

import click

from taglens.cli.classify import echo_truncation_warnings, load_embedder, model_options
from taglens.cli.options import output_options, runtime_options
from taglens.cli.runner import engine_options, exit_status, run_to_sink
from taglens.io.sinks import JsonlSink, NpySink, ParquetSink, committing, open_text_output


@click.command("embed")
@click.argument("paths", nargs=-1, metavar="[PATH]...")
@click.option("--recursive/--no-recursive", "-r/-R", default=True, show_default=True,
              help="Walk folders recursively (hidden files and folders are skipped). "
                   "Use '-' as a PATH to read paths from stdin, one per line.")
@click.option("--text", "texts", multiple=True, metavar="TEXT",
              help="Embed this text instead of images (repeatable; no template is applied).")
@model_options
@runtime_options
@output_options(("jsonl", "parquet", "npy"))
def embed(paths: tuple[str, ...], recursive: bool, texts: tuple[str, ...], model: str, revision: str | None,
          output: str | None, fmt: str, quiet: bool, **runtime: Any) -> None:
    """Write SigLIP/CLIP image or text embeddings (float32, L2-normalised).

    The format follows the output's suffix (.parquet, .npy, .jsonl) unless --format says;
    without --output, JSON lines go to stdout. Parquet is the record schema of `taglens analyze`
    (path, error, file facts, embedding), which `taglens library import` reads; .npy holds one
    row per embedded image, with the paths in NAME.paths.txt beside it.

    \b
    Example:
        taglens embed photos/ -o photos.parquet
        taglens embed photos/ -o photos.npy          # + photos.paths.txt
        taglens embed --text "a red car" --text "a cat on a sofa" -o queries.npy
    """
    if texts and paths:
        raise click.UsageError("give image PATHs or --text, not both")
    if not texts and not paths:
        raise click.UsageError("nothing to embed: give image PATHs or --text 'some text'")
    from taglens.io.arrow import job_metadata

    embedder = load_embedder(model, revision, runtime["device"], runtime["dtype"], tf32=runtime["tf32"])
    if runtime["compile_models"]:
        embedder.compile()
    job = embedder.job(embedding=True)
    metadata = job_metadata([job])
    if texts:
        with echo_truncation_warnings():
            vectors = embedder.embed_texts(list(texts))
        write_texts(list(texts), vectors, output, fmt, metadata)
        return
    if fmt == "jsonl":
        stream, target = open_text_output(output)
        sink: Any = JsonlSink(stream)
    elif fmt == "parquet":
        sink = target = ParquetSink(output, embedder.dim, facts=True, metadata=metadata)  # type: ignore[arg-type]
    else:
        sink = target = NpySink(output, embedder.dim)  # type: ignore[arg-type]
    summary = run_to_sink(paths, recursive, [job], engine_options(**runtime), sink, target=target, quiet=quiet)
    click.get_current_context().exit(exit_status(summary))


def write_texts(texts: list[str], vectors: Any, output: str | None, fmt: str, metadata: dict[str, str]) -> None:
    """Text embeddings: JSONL ``{"text", "embedding"}``, Parquet (``text``, ``error``,
    ``embedding``, ``embed_error``: the record schema keyed by text) or .npy (rows in the order of
    the --text options)."""
    if fmt == "jsonl":
        stream, target = open_text_output(output)
        with committing(target):
            for text, vector in zip(texts, vectors):
                stream.write(json.dumps({"text": text, "embedding": [float(v) for v in vector]},
                                        ensure_ascii=False) + "\n")
            stream.flush()
        return
    sink = (ParquetSink(output, vectors.shape[1], key="text", metadata=metadata) if fmt == "parquet"  # type: ignore[arg-type]
            else NpySink(output, vectors.shape[1], keys_suffix=None))  # type: ignore[arg-type]
    with committing(sink):
        for text, vector in zip(texts, vectors):
            sink.write_row(text, vector)
