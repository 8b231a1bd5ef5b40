"""Options shared by the commands, stacked as decorators (one definition, one help text)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from taglens.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS

F = Callable[..., Any]


def stack(*decorators: F) -> F:
    def apply(f: F) -> F:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


input_options = stack(
    click.argument("paths", nargs=-1, required=True, metavar="PATH..."),
    click.option("--recursive/--no-recursive", "-r/-R", default=True, show_default=True,
                 help="Walk folders recursively (hidden files and folders are skipped). "
                      "Use '-' as a PATH to read paths from stdin, one per line."),
)

runtime_options = stack(
    click.option("--batch-size", "-b", type=click.IntRange(min=1), default=8, show_default=True,
                 help="Images per forward pass."),
    click.option("--device", default="auto", show_default=True,
                 help="auto (CUDA when visible, else CPU), cpu, cuda or cuda:N."),
    click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32",
                 show_default=True, help="Model precision."),
    click.option("--tf32", is_flag=True,
                 help="float32 on CUDA: let matmuls and convolutions use TF32 (faster, ~1e-3 relative; "
                      "docs/models.md). Off: IEEE float32, the reference numbers."),
    click.option("--workers", type=click.IntRange(min=1), default=None,
                 help="Decode threads (default: min(4, CPU count))."),
    click.option("--draft/--no-draft", default=False, show_default=True,
                 help="Decode large JPEGs at a reduced DCT scale: faster, but moves the scores "
                      "(measured in docs/decoding.md). Off: a full decode, the reference numbers."),
    click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True,
                 help="Refuse images with more pixels (decompression bombs)."),
    click.option("--max-file-size", type=click.IntRange(min=1), default=DEFAULT_MAX_BYTES, show_default=True,
                 help="Refuse files larger than this many bytes."),
    click.option("--compile", "compile_models", is_flag=True,
                 help="Compile the models with torch.compile: faster per image after ~30 s of compiling "
                      "per model; worth it for long runs (docs/analyze.md)."),
)


def output_options(formats: tuple[str, ...], *, output_help: str | None = None, dir_okay: bool = False) -> F:
    return stack(
        click.option("--output", "-o", type=click.Path(dir_okay=dir_okay, allow_dash=True), default=None,
                     help=output_help or "Write here instead of stdout (written to a temporary file, renamed when done)."),
        click.option("--format", "-f", "fmt", type=click.Choice(formats), default=formats[0], show_default=True,
                     help="Output format."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary line."),
    )
