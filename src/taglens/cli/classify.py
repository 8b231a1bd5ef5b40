"""``taglens classify``: zero-shot labels for images with SigLIP or CLIP (see docs/classify.md)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from taglens.cli.options import FRACTION, input_options, output_options, runtime_options
from taglens.cli.runner import engine_options, exit_status, run_to_sink
from taglens.errors import PromptTruncatedWarning
from taglens.io.sinks import CsvSink, JsonlSink, open_text_output
from taglens.models import registry

if TYPE_CHECKING:
    from taglens.models.siglip import Embedder

SIGLIP = registry.config("siglip")  # a family config: reading it imports no torch


def model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--model`` and ``--revision`` for the SigLIP/CLIP commands (classify, embed)."""
    f = click.option("--revision", default=None, help="Hub commit, branch or tag to pin (hub ids only).")(f)
    return click.option("--model", "-m", default=SIGLIP.hub_id, show_default=True,
                        help="A SigLIP, SigLIP 2 (fixed resolution) or CLIP checkpoint: hub id or folder.")(f)


@click.command("classify")
@input_options
@click.option("--labels", "-l", "labels", multiple=True, metavar="'A,B,...'",
              help="Comma-separated labels; repeat the flag to add more.")
@click.option("--labels-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A UTF-8 file with one label per line (blank lines skipped); labels may hold commas here.")
@click.option("--template", "templates", multiple=True, metavar="TEXT",
              help=f"Prompt with '{{}}' where the label goes [default: '{SIGLIP.template}']. Repeat to "
                   "average several templates (prompt ensembling).")
@click.option("--threshold", "-t", type=FRACTION, default=None,
              help="Keep only labels whose score is at least this.")
@click.option("--top-k", "-k", type=click.IntRange(min=1), default=None, help="Keep the k best labels.")
@model_options
@runtime_options
@output_options(("jsonl", "csv"))
def classify(paths: tuple[str, ...], recursive: bool, labels: tuple[str, ...], labels_file: str | None,
             templates: tuple[str, ...], threshold: float | None, top_k: int | None, model: str,
             revision: str | None, output: str | None, fmt: str, quiet: bool, **runtime: Any) -> None:
    """Zero-shot classify images against free-text labels with SigLIP or CLIP.

    SigLIP gives each label its own probability (they need not sum to 1); CLIP a softmax over
    the labels. Labels come sorted by score, highest first.

    \b
    Example:
        taglens classify photos/ --labels "a cat,a dog,a plane" --top-k 1
        taglens classify scans/ --labels-file labels.txt --threshold 0.1 -f csv -o labels.csv
    """
    names = collect_labels(labels, labels_file)
    embedder = load_embedder(model, revision, runtime["device"], runtime["dtype"], tf32=runtime["tf32"])
    if runtime["compile_models"]:
        embedder.compile()
    with echo_truncation_warnings():
        job = embedder.job(names, templates=templates or (SIGLIP.template,), threshold=threshold, top_k=top_k)
    stream, target = open_text_output(output)
    sink = JsonlSink(stream) if fmt == "jsonl" else CsvSink(stream, ["labels"])
    summary = run_to_sink(paths, recursive, [job], engine_options(**runtime), sink, target=target, quiet=quiet)
    click.get_current_context().exit(exit_status(summary))


def collect_labels(labels: tuple[str, ...], labels_file: str | None) -> list[str]:
    """Labels from ``--labels`` (comma-separated, repeatable) and ``--labels-file`` (one per line),
    stripped, blanks dropped, duplicates dropped keeping the first."""
    names = [part.strip() for value in labels for part in value.split(",")]
    if labels_file is not None:
        with open(labels_file, encoding="utf-8-sig") as f:
            names += [line.strip() for line in f]
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        raise click.UsageError("no labels: pass --labels 'a cat,a dog' or --labels-file FILE")
    return names


def load_embedder(model: str, revision: str | None, device: str, dtype: str, *, tf32: bool = False) -> Embedder:
    """The Embedder for ``--model``; a device that is not there is a usage error, not a traceback."""
    from taglens.engine.placement import resolve_device
    from taglens.models.siglip import Embedder

    try:
        resolve_device(device)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--device'") from None
    return Embedder.from_pretrained(model, revision, device=device, dtype=dtype, tf32=tf32)


@contextmanager
def echo_truncation_warnings() -> Iterator[None]:
    """Show each truncated prompt as one plain line on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PromptTruncatedWarning)
        yield
    for warning in caught:
        if issubclass(warning.category, PromptTruncatedWarning):
            click.echo(f"taglens: warning: {warning.message}", err=True)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
