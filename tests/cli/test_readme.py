"""The README's first two commands, as pasted on a fresh Debian machine: no bare ``sudo`` (a
container's root has none, and a user needs it), and the main job names where its pictures come
from. The system-package part runs here against stand-ins for ``id``, ``apt-get`` and ``sudo``,
as root and as a user."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETUP_END = " && python3 -m venv "


def readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_readme_opens_with_the_main_job_and_the_tests():
    main, tests = readme_commands()
    assert main.endswith("--output tags.jsonl") and tests.endswith("python -m pytest")
    for command in (main, tests):
        assert not command.startswith("sudo") and SETUP_END in command
        assert subprocess.run(["bash", "-n", "-c", command]).returncode == 0


def test_the_main_job_says_where_its_pictures_come_from():
    main, _ = readme_commands()
    default = re.search(r'taglens tag "\$\{PHOTOS:-([^}]+)\}"', main).group(1)
    pictures = [p for p in (ROOT / default).iterdir() if p.suffix in (".png", ".jpg")]
    assert len(pictures) >= 3, f"{default} holds no sample pictures"
    comment = (ROOT / "README.md").read_text().split("```bash\n", 1)[1].splitlines()[0]
    assert "$PHOTOS" in comment and default in comment


def fake_tools(folder: Path, uid: int, with_sudo: bool) -> Path:
    folder.mkdir()
    log = folder / "log"
    scripts = {"id": f'[ "$1" = -u ] && echo {uid}', "apt-get": f'echo "apt-get $*" >> {log}'}
    if with_sudo:
        scripts["sudo"] = f'echo "sudo" >> {log}; "$@"'
    for name, body in scripts.items():
        (folder / name).write_text(f"#!/bin/bash\n{body}\n")
        (folder / name).chmod(0o755)
    return log


@pytest.mark.parametrize("who,uid,with_sudo", [("root, no sudo installed", 0, False), ("a user with sudo", 1000, True)])
def test_the_system_packages_install_as_root_and_as_a_user(who, uid, with_sudo, tmp_path):
    for i, command in enumerate(readme_commands()):
        tools = tmp_path / f"bin{i}"
        log = fake_tools(tools, uid, with_sudo)
        setup = command.split(SETUP_END)[0]
        result = subprocess.run(["/bin/bash", "-c", setup], env={"PATH": str(tools)}, capture_output=True, text=True)
        assert result.returncode == 0, (who, result.stderr)
        lines = log.read_text().splitlines()
        installs = [line for line in lines if line.startswith("apt-get install")]
        assert "apt-get update" in lines and len(installs) == 1 and "python3-venv" in installs[0]
        assert ("sudo" in lines) == with_sudo and lines.count("sudo") in (0, 2)
