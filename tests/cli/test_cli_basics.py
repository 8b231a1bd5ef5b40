"""The command-line skeleton: help, version, and every command listed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from taglens import __version__
from taglens.cli import cli

SRC = str(Path(__file__).resolve().parents[2] / "src")
EXPECTED = {"tag", "classify", "embed", "nsfw", "analyze", "index", "search", "duplicates", "serve"}


def test_help_lists_every_command():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert EXPECTED <= set(cli.commands)
    for name in EXPECTED:
        assert f"  {name} " in result.output


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_module_entry_point_runs_without_loading_torch():
    code = "import sys, runpy; sys.argv=['taglens','--help']\ntry: runpy.run_module('taglens', run_name='__main__')\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": SRC}, timeout=60)
    assert out.stdout.strip().endswith("False"), out.stdout + out.stderr
