"""``taglens nsfw``: NSFW scores for every image, and optionally a journaled quarantine of the
flagged files (see docs/nsfw.md). A thin use of `taglens.models.vit_classifier` and `taglens.quarantine`."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import click

from taglens.cli.options import FRACTION, input_options, output_options, runtime_options
from taglens.cli.runner import Summary, engine_options, exit_status, run_to_sink
from taglens.counts import counted
from taglens.models import registry
from taglens.records import Record

CLASSIFIER = registry.config("vit_classifier")  # a family config: reading it imports no torch


@dataclass
class NsfwSummary(Summary):
    """The runner's counts plus the flagged files and what the quarantine did with them."""

    flagged: int = 0
    action: str | None = None  # "moved" or "copied"
    folder: str | None = None
    journal: str | None = None
    outcomes: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        text = f"{counted(self.total, 'file')}: {self.flagged} flagged, {counted(self.errors, 'error')} ({self.rate:.1f} images/s)"
        if self.action:
            parts = [f"{self.outcomes.get(self.action, 0)} {self.action} to {self.folder}"]
            parts += [f"{n} {status}" for status, n in sorted(self.outcomes.items()) if status != self.action]
            text += f"; {', '.join(parts)} (journal {self.journal})"
        return text


@click.command("nsfw")
@input_options
@click.option("--model", "-m", default=CLASSIFIER.hub_id, show_default=True,
              help="Any transformers image classifier (ViT, DeiT, BEiT, ConvNeXt, Swin, ...): a hub id or a "
                   "checkpoint folder.")
@click.option("--revision", default=None, help="Hub revision (commit, branch or tag) of --model.")
@click.option("--threshold", "-t", type=FRACTION, default=CLASSIFIER.threshold, show_default=True,
              help="Flag an image when a positive label's score is at or above this (>=).")
@click.option("--positive-label", "-p", default=",".join(CLASSIFIER.positive_labels), show_default=True,
              help="The label(s) that count as NSFW, comma-separated (e.g. porn,hentai,sexy); "
                   "an image is flagged when any of them passes --threshold.")
@click.option("--move-to", type=click.Path(file_okay=False), default=None,
              help="Move flagged files into this folder, keeping their paths below the input folder.")
@click.option("--copy-to", type=click.Path(file_okay=False), default=None,
              help="Copy flagged files into this folder instead of moving them.")
@click.option("--journal", type=click.Path(dir_okay=False), default=None,
              help="Quarantine journal (default: taglens-journal.jsonl in the --move-to/--copy-to folder).")
@click.option("--undo", "undo_journal", type=click.Path(exists=True), default=None, metavar="JOURNAL",
              help="Put back every file a quarantine journal (or its folder) moved, remove its copies, "
                   "then stop.")
@output_options(("jsonl", "csv"))
@runtime_options
@click.pass_context
def nsfw(ctx: click.Context, paths: tuple[str, ...], recursive: bool, model: str, revision: str | None,
         threshold: float, positive_label: str, move_to: str | None, copy_to: str | None, journal: str | None,
         undo_journal: str | None, output: str | None, fmt: str, quiet: bool, device: str, dtype: str,
         **runtime: object) -> None:
    """Score images with an NSFW classifier; optionally quarantine flagged files.

    Writes one record per image: the top label, its score, every label's score and whether
    the image is flagged. With --move-to or --copy-to, flagged files go into a folder (paths
    kept below their input folder, a taken name never overwritten), every move journaled
    first: an interrupted run is resumed by running it again, and --undo puts every file back.

    \b
    Example:
        taglens nsfw photos/ --output nsfw.jsonl
        taglens nsfw photos/ --threshold 0.8 --move-to quarantine/
        taglens nsfw --undo quarantine/taglens-journal.jsonl
    """
    if undo_journal is not None:
        if paths or move_to or copy_to or journal:
            raise click.UsageError("--undo takes only the journal: no PATH, --move-to, --copy-to or "
                                   "--journal")
        ctx.exit(_undo(undo_journal, quiet))
    if not paths:
        raise click.UsageError("Missing argument 'PATH...'.")
    if move_to and copy_to:
        raise click.UsageError("--move-to and --copy-to exclude each other")
    if journal and not (move_to or copy_to):
        raise click.UsageError("--journal goes with --move-to or --copy-to")

    from taglens.cli.outputs import check_folder
    from taglens.errors import OutputError
    from taglens.models.vit_classifier import NsfwDetector
    from taglens.quarantine import InputRoots, Quarantine
    from taglens.io.sinks import CsvSink, JsonlSink, open_text_output

    if move_to or copy_to:
        check_folder(move_to or copy_to)  # type: ignore[arg-type]
    try:
        detector = NsfwDetector.from_pretrained(model, revision, device=device, dtype=dtype,
                                                tf32=bool(runtime["tf32"]), positive_label=positive_label,
                                                threshold=threshold)
    except ValueError as exc:  # device, dtype or threshold out of range (labels raise TaglensError)
        raise click.UsageError(str(exc)) from None
    if runtime["compile_models"]:
        detector.compile()

    quarantine = None
    roots = None
    if move_to or copy_to:
        if "-" in paths:  # the input roots must be known, so read the list up front
            paths = tuple(p for a in paths for p in (_stdin_lines() if a == "-" else [a]))
        roots = InputRoots(paths)
        folder = os.path.abspath(move_to or copy_to)  # type: ignore[arg-type]
        for root in roots.folders:
            if root == folder or root.startswith(folder + os.sep):
                raise click.UsageError(f"input folder {root} lies inside the quarantine folder {folder}")
        try:
            quarantine = Quarantine(folder, mode="move" if move_to else "copy", journal=journal)
        except OSError as exc:
            raise OutputError(f"cannot write {exc.filename or folder}: {exc.strerror or exc}") from None
        _report_recovery(quarantine.recovered, quiet)

    summary = NsfwSummary()
    if quarantine is not None:
        summary.action = "moved" if quarantine.mode == "move" else "copied"
        summary.folder, summary.journal = move_to or copy_to, quarantine.journal.path

    def on_record(record: Record) -> None:
        if record.nsfw is None or not record.nsfw.flagged:
            return
        summary.flagged += 1
        if quarantine is None or roots is None:
            return
        outcome = quarantine.put(record.path, roots.relative(record.path), sha256=record.sha256,
                                 info={"nsfw": record.to_json()["nsfw"]})
        summary.outcomes[outcome.status] = summary.outcomes.get(outcome.status, 0) + 1
        if outcome.status in ("failed", "skipped") and not quiet:
            click.echo(f"not {summary.action} {record.path}: {outcome.reason}", err=True)

    stream, target = open_text_output(output)
    sink = JsonlSink(stream) if fmt == "jsonl" else CsvSink(stream, ["nsfw"])
    try:
        run_to_sink(paths, recursive, [detector.job()], engine_options(**runtime), sink, target=target, quiet=quiet,
                    on_record=on_record, skip=quarantine.contains if quarantine else None, summary=summary)
    finally:
        if quarantine is not None:
            quarantine.close()
    status = exit_status(summary)
    ctx.exit(1 if summary.outcomes.get("failed") else status)


# The PATH argument is shared with every command, but --undo runs without one.
for _param in nsfw.params:
    if _param.name == "paths":
        _param.required = False


def _undo(journal: str, quiet: bool) -> int:
    from taglens.quarantine import JOURNAL_NAME, summarize, undo

    if os.path.isdir(journal):
        journal = os.path.join(journal, JOURNAL_NAME)
    outcomes = undo(journal)
    for outcome in outcomes:
        if outcome.failed and not quiet:
            click.echo(f"not put back {outcome.source}: {outcome.reason}", err=True)
    counts = summarize(outcomes)
    if not quiet:
        if outcomes:
            done = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
            click.echo(f"undo: {done}", err=True)
        else:
            click.echo("undo: nothing to undo", err=True)
    return 1 if counts.get("failed") else 0


def _report_recovery(outcomes: list, quiet: bool) -> None:
    """Say what an interrupted earlier run left and how it was resolved."""
    if quiet or not outcomes:
        return
    for outcome in outcomes:
        if outcome.status == "failed":
            click.echo(f"journal: {outcome.source}: {outcome.reason}", err=True)
    from taglens.quarantine import summarize

    counts = ", ".join(f"{n} {status}" for status, n in sorted(summarize(outcomes).items()))
    click.echo(f"journal: resumed an interrupted run ({counts})", err=True)


def _stdin_lines() -> list[str]:
    return [line.rstrip("\r\n") for line in sys.stdin if line.strip()]


__all__ = ["nsfw"]
