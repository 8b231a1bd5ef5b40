"""Options shared by the commands, stacked as decorators (one definition, one help text)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import click

from taglens.engine.placement import DTYPES
from taglens.io.decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS

F = Callable[..., Any]


class Number(click.FloatRange):
    """A float option checked when the command line is read: a real number (not nan or inf)
    within [min, max]. Every float option uses it (tests/cli/test_options.py checks), so an
    out-of-range value is a usage error naming the option, never a traceback later."""

    def __init__(self, min: float | None = None, max: float | None = None):
        super().__init__(min, max)
        if min is None and max is None:
            self.name = "float"  # any finite number: no "RANGE" in the help

    def _describe_range(self) -> str:
        return "" if self.min is None and self.max is None else super()._describe_range()

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


FRACTION = Number(0, 1)  # a probability, or a threshold on one


def given(ctx: click.Context, name: str) -> bool:
    """Whether the option ``name`` was set by the user (command line or environment), not defaulted."""
    from click.core import ParameterSource

    return ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def flag(ctx: click.Context, name: str) -> str:
    """The option's long flag as the user types it (``tag_top_k`` -> ``--tag-top-k``)."""
    for param in ctx.command.params:
        if param.name == name:
            return max(param.opts, key=len)
    return "--" + name.replace("_", "-")


def refuse_options_of_other_tasks(ctx: click.Context, tasks: tuple[str, ...], owners: dict[str, tuple[str, ...]]
                                  ) -> None:
    """An option given for a task the run does not do is a usage error, never silently ignored.
    ``owners``: option name -> the tasks that use it."""
    for name, users in owners.items():
        if given(ctx, name) and not set(users) & set(tasks):
            raise click.UsageError(f"{flag(ctx, name)} is for the {' or '.join(users)} task, which "
                                   f"--tasks {','.join(tasks)} does not run")


def stack(*decorators: F) -> F:
    def apply(f: F) -> F:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


class BatchSize(click.ParamType):
    """A positive number of images, or ``auto`` (`taglens.engine.gpu_sizing.auto_batch_size`)."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        try:
            number = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is neither a number of images nor 'auto'", param, ctx)
        if number < 1:
            self.fail(f"{number} is not at least 1", param, ctx)
        return number


input_options = stack(
    click.argument("paths", nargs=-1, required=True, metavar="PATH..."),
    click.option("--recursive/--no-recursive", "-r/-R", default=True, show_default=True,
                 help="Walk folders recursively (hidden files and folders are skipped). "
                      "Use '-' as a PATH to read paths from stdin, one per line."),
)

def _log_verbosely(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        import logging

        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("taglens: %(message)s"))
        logger = logging.getLogger("taglens")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


verbose_option = click.option(
    "--verbose", "-v", is_flag=True, expose_value=False, is_eager=True, callback=_log_verbosely,
    help="Say on stderr how the models run (e.g. the matmul route chosen for this CPU).")

dtype_help = ("Model precision. float32: the reference numbers; bfloat16, float16 and int8 (CPU only, "
              "dynamic int8 Linear layers) are faster and move scores.")

runtime_options = stack(
    click.option("--batch-size", "-b", type=BatchSize(), default="8", show_default=True,
                 help="Images per forward pass, or 'auto': on CUDA the largest power of two (at most 256) "
                      "that fits half the GPU's free memory, on the CPU 8."),
    click.option("--preprocess", type=click.Choice(["exact", "gpu"]), default="exact", show_default=True,
                 help="exact: Pillow on the CPU, the reference numbers. gpu: JPEG decode (nvJPEG, needs "
                      "torchvision) and resize on the GPU: much less CPU per image, scores move slightly; "
                      "falls back to exact with one line where CUDA or torchvision is absent."),
    click.option("--device", default="auto", show_default=True,
                 help="auto (CUDA when visible, else CPU), cpu, cuda or cuda:N."),
    click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True, help=dtype_help),
    click.option("--tf32", is_flag=True,
                 help="float32 on CUDA: let matmuls and convolutions use TF32 (faster, ~1e-3 relative, "
                      "not measured here). Off: IEEE float32, the reference numbers."),
    click.option("--workers", type=click.IntRange(min=1), default=None,
                 help="Decode threads (default: a quarter of the cores on a CPU, 1-4; min(4, cores) on a GPU)."),
    click.option("--draft/--no-draft", default=False, show_default=True,
                 help="Decode JPEGs at least twice the model's input size at a reduced DCT scale: faster, "
                      "but moves the scores. Off: a full decode, the reference numbers."),
    click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True,
                 help="Refuse images with more pixels (decompression bombs)."),
    click.option("--max-file-size", type=click.IntRange(min=1), default=DEFAULT_MAX_BYTES, show_default=True,
                 help="Refuse files larger than this many bytes."),
    click.option("--compile", "compile_models", is_flag=True,
                 help="Compile the models with torch.compile: faster per image after ~30 s of compiling "
                      "per model; worth it for long runs."),
    verbose_option,
)


def output_options(formats: tuple[str, ...], *, output_help: str | None = None, dir_okay: bool = False,
                   folder_output: Callable[[dict[str, Any]], bool] | None = None) -> F:
    """``--output``, ``--format`` and ``--quiet``, with one rule for every command that writes a
    file (`taglens.cli.outputs.resolve_format`): the --output suffix decides the format when
    --format is absent, and a file that cannot be written is refused before any model loads.
    ``folder_output(params)`` says when the output is a folder instead (analyze --engine ray),
    which its own front end checks."""
    from taglens.cli.outputs import describe_suffixes

    def apply(f: F) -> F:
        @functools.wraps(f)
        def command(*args: Any, **params: Any) -> Any:
            from taglens.cli.outputs import check_output, resolve_format

            if folder_output is None or not folder_output(params):
                params["fmt"] = resolve_format(params["output"], params["fmt"], formats)
                check_output(params["output"], folder_ok=dir_okay)
            return f(*args, **params)

        return stack(
            click.option("--output", "-o", type=click.Path(dir_okay=dir_okay, allow_dash=True), default=None,
                         help=output_help or "Write here instead of stdout (its folder must exist; written to a "
                                             "temporary file, renamed when done; Ctrl-C keeps what is written)."),
            click.option("--format", "-f", "fmt", type=click.Choice(formats), default=None,
                         help=f"Output format [default: from the --output name ({describe_suffixes(formats)}), "
                              f"else {formats[0]}]."),
            click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary line."),
        )(command)

    return apply
