"""``taglens embed``: SigLIP/CLIP image or text embeddings to Parquet, .npy or JSONL (see docs/classify.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from taglens.cli.classify import echo_truncation_warnings, load_embedder, model_options
from taglens.cli.options import output_options, runtime_options
from taglens.cli.runner import engine_options, exit_status, run_to_sink
from taglens.sinks import JsonlSink, NpySink, ParquetSink, committing, open_text_output

SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".npy": "npy", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@click.command("embed")
@click.argument("paths", nargs=-1, metavar="[PATH]...")
@click.option("--recursive/--no-recursive", "-r/-R", default=True, show_default=True,
              help="Walk folders recursively (hidden files and folders are skipped). "
                   "Use '-' as a PATH to read paths from stdin, one per line.")
@click.option("--text", "texts", multiple=True, metavar="TEXT",
              help="Embed this text instead of images (repeatable; no template is applied).")
@model_options
@runtime_options
@output_options(("auto", "parquet", "npy", "jsonl"))
def embed(paths: tuple[str, ...], recursive: bool, texts: tuple[str, ...], model: str, revision: str | None,
          output: str | None, fmt: str, quiet: bool, **runtime: Any) -> None:
    """Write SigLIP/CLIP image or text embeddings (float32, L2-normalised).

    The format follows the output's suffix (.parquet, .npy, .jsonl) unless --format says;
    without --output, JSON lines go to stdout. Parquet holds path, embedding and error columns;
    .npy holds one row per embedded image, with the paths in NAME.paths.txt beside it.

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
    fmt = output_format(output, fmt)
    embedder = load_embedder(model, revision, runtime["device"], runtime["dtype"], tf32=runtime["tf32"])
    if runtime["compile_models"]:
        embedder.compile()
    metadata = {"taglens.model_id": embedder.model_id, "taglens.revision": embedder.revision,
                "taglens.kind": embedder.kind, "taglens.dim": str(embedder.dim)}
    if texts:
        with echo_truncation_warnings():
            vectors = embedder.embed_texts(list(texts))
        write_texts(list(texts), vectors, output, fmt, metadata)
        return
    job = embedder.job(embedding=True)
    if fmt == "jsonl":
        stream, target = open_text_output(output)
        sink: Any = JsonlSink(stream)
    elif fmt == "parquet":
        sink = target = ParquetSink(output, embedder.dim, metadata=metadata)  # type: ignore[arg-type]
    else:
        sink = target = NpySink(output, embedder.dim)  # type: ignore[arg-type]
    with committing(target):
        summary = run_to_sink(paths, recursive, [job], engine_options(**runtime), sink, quiet=quiet)
    click.get_current_context().exit(exit_status(summary))


def output_format(output: str | None, fmt: str) -> str:
    """The format asked for, or the one the output's suffix names (JSONL for stdout)."""
    to_stdout = output is None or output == "-"
    if fmt == "auto":
        if to_stdout:
            return "jsonl"
        suffix = Path(output).suffix.lower()  # type: ignore[arg-type]
        if suffix not in SUFFIXES:
            raise click.UsageError(f"cannot tell the format from {output!r}: use a .parquet, .npy or .jsonl "
                                   "name, or --format")
        return SUFFIXES[suffix]
    if fmt != "jsonl" and to_stdout:
        raise click.UsageError(f"--format {fmt} needs --output FILE (it is not written to stdout)")
    return fmt


def write_texts(texts: list[str], vectors: Any, output: str | None, fmt: str, metadata: dict[str, str]) -> None:
    """Text embeddings: JSONL ``{"text", "embedding"}``, Parquet (``text``, ``embedding``,
    ``error``) or .npy (rows in the order of the --text options)."""
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
