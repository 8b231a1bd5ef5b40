"""``taglens analyze --engine``: the options that do not fit the chosen engine are refused before
any model loads or Ray starts (the Ray runs themselves are in tests/distributed)."""

from __future__ import annotations

from click.testing import CliRunner

from taglens.cli import cli

from ..conftest import photo


def invoke(*args):
    return CliRunner().invoke(cli, ["analyze", *map(str, args)], catch_exceptions=False)


def test_help_names_the_engine_options():
    out = invoke("--help").output
    for option in ("--engine [local|ray]", "--address", "--num-gpus", "--concurrency"):
        assert option in out


def test_options_that_do_not_fit_the_engine_are_refused(tmp_path):
    photo().save(tmp_path / "a.png")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    cases = [
        (["--engine", "ray"], "pass --output DIR"),
        (["--engine", "ray", "-o", out_dir, "-f", "jsonl"], "Parquet only"),
        (["--engine", "ray", "-o", out_dir, "--captions"], "local engine only"),
        (["--engine", "ray", "-o", out_dir, "--workers", "2"], "Ray schedules its own tasks"),
        (["--address", "auto"], "go with --engine ray"),
        (["--concurrency", "2", "-o", tmp_path / "x.jsonl"], "go with --engine ray"),
        (["-o", out_dir], "is a folder"),
    ]
    for args, message in cases:
        result = invoke(tmp_path / "a.png", *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)


def test_a_folder_holding_results_needs_resume(tmp_path):
    photo().save(tmp_path / "a.png")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "part-0.parquet").write_bytes(b"PAR1")
    result = invoke(tmp_path / "a.png", "--engine", "ray", "-o", out_dir, "--tasks", "tag")
    assert result.exit_code == 1 and "already holds Parquet files" in result.output
