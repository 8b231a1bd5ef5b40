"""The options of every command, read from the click objects themselves: each number is checked
when the command line is read, each short letter means one long option everywhere, and help and
docs agree (every flag documented on its command's page, every documented flag real, no help text
pointing at a docs file that an installed wheel does not have)."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from taglens.cli import cli
from taglens.cli.options import Number

from .entry import one_clean_line, taglens
from .test_cli_basics import every_command

DOCS = Path(__file__).resolve().parents[2] / "docs"
# the page(s) that document each command's options
PAGES = {"tag": ["tag"], "classify": ["classify"], "embed": ["classify"], "nsfw": ["nsfw"],
         "analyze": ["analyze", "distributed"], "index": ["library"], "search": ["library"],
         "duplicates": ["library"], "library": ["library"], "serve": ["server"]}


def options():
    """(command name, option) for every option of every command."""
    for name, command in every_command():
        for param in command.params:
            if isinstance(param, click.Option):
                yield name, param


def test_every_number_is_range_checked_when_the_command_line_is_read():
    for name, option in options():
        if isinstance(option.type, click.types.FloatParamType):
            assert isinstance(option.type, Number), f"taglens {name} {option.opts[0]}: a float without its checks"
        if isinstance(option.type, click.types.IntParamType):
            assert isinstance(option.type, click.IntRange) and (option.type.min is not None
                                                                or option.type.max is not None), (
                f"taglens {name} {option.opts[0]}: an integer without a range")


@pytest.mark.parametrize("value", ["2", "-0.1", "nan", "inf"])
def test_a_fraction_out_of_range_is_a_usage_error_naming_the_option(value):
    result = CliRunner().invoke(cli, ["nsfw", "x.jpg", "--threshold", value])
    assert result.exit_code == 2 and "Invalid value for '--threshold'" in result.output


def test_analyze_nsfw_threshold_2_is_refused_before_any_model_loads(tmp_path):
    result = taglens("analyze", tmp_path, "--nsfw-threshold", "2", "--nsfw-model", tmp_path / "no-such-model")
    assert result.returncode == 2
    assert "Invalid value for '--nsfw-threshold': 2.0 is not in the range 0<=x<=1" in one_clean_line(result)


def test_each_short_letter_means_one_long_option_across_the_cli():
    meaning: dict[str, tuple[str, str]] = {}
    for name, option in options():
        long = max(option.opts, key=len)
        for short in [o for o in option.opts + option.secondary_opts if re.fullmatch(r"-[A-Za-z]", o)]:
            seen = meaning.setdefault(short, (long, name))
            assert seen[0] == long, f"{short} is {seen[0]} in taglens {seen[1]} but {long} in taglens {name}"
    assert meaning["-t"][0] == "--threshold" and meaning["-m"][0] == "--model" and meaning["-n"][0] == "--dry-run"


def test_every_flag_is_on_its_commands_docs_page():
    for name, option in options():
        if option.hidden:
            continue
        text = "".join((DOCS / f"{page}.md").read_text() for page in PAGES[name.split()[0]])
        for flag in [o for o in option.opts + option.secondary_opts if o.startswith("--")]:
            assert re.search(re.escape(flag) + r"(?![\w-])", text), (
                f"taglens {name} {flag} is not in docs/{PAGES[name.split()[0]][0]}.md")


def option_rows(text: str) -> list[str]:
    """The first cells of the rows of every table whose header starts with ``| option``."""
    rows, inside = [], False
    for line in text.splitlines():
        if line.startswith("| option"):
            inside = True
        elif not line.startswith("|"):
            inside = False
        elif inside and not line.startswith("| ---"):
            rows.append(line.split(" | ")[0])
    return rows


def test_every_flag_in_an_options_table_of_the_docs_exists():
    """The docs' option tables name real flags, and their short letters are those flags'."""
    for page in DOCS.glob("*.md"):
        commands = [c for c, pages in PAGES.items() if page.stem in pages]
        known = {o: opt for c, opt in options() if c.split()[0] in commands for o in opt.opts + opt.secondary_opts}
        for cell in option_rows(page.read_text()):
            flags = re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", cell)
            for flag in flags:
                assert flag in known, f"docs/{page.name}: {flag} in an options table is no flag of {commands}"
            longs = {max(known[f].opts, key=len) for f in flags if f.startswith("--")}
            for short in [f for f in flags if re.fullmatch(r"-[A-Za-z]", f)]:
                assert max(known[short].opts, key=len) in longs, f"docs/{page.name}: {short} is not in {cell}"


def test_help_points_at_no_docs_file_and_says_what_serve_answers():
    for name, _ in every_command():
        text = CliRunner().invoke(cli, [*name.split(), "--help"], terminal_width=200).output
        assert not re.search(r"docs/\w+\.md|\.md\b", text), f"taglens {name} --help points at a docs file"
    serve = CliRunner().invoke(cli, ["serve", "--help"], terminal_width=200).output
    assert "Most images in one request (422 beyond)." in serve
