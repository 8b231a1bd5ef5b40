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


def every_command(group=cli, prefix=""):
    """(full name, command) for each command and subcommand under ``taglens``."""
    for name, command in group.commands.items():
        yield prefix + name, command
        if hasattr(command, "commands"):
            yield from every_command(command, prefix + name + " ")


def test_every_command_has_an_example_and_every_option_a_help_text():
    for name, command in every_command():
        result = CliRunner().invoke(cli, [*name.split(), "--help"])
        assert result.exit_code == 0, name
        assert "Example:" in result.output, f"taglens {name} --help shows no example"
        for param in command.params:
            if param.param_type_name == "option" and not param.hidden:
                assert param.help, f"taglens {name} {param.opts[0]} has no help text"


def test_readme_and_docs_name_every_command():
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    docs = "".join(p.read_text() for p in (root / "docs").glob("*.md"))
    for name, _ in every_command():
        assert f"`taglens {name.split()[0]}" in readme, f"README does not list taglens {name}"
        assert f"taglens {name}" in docs, f"no page in docs/ shows taglens {name}"
