"""Ctrl-C keeps the work: SIGINT to the installed ``taglens`` mid-run leaves a valid file of the
records written so far (or, when a file of that name was there, keeps it and writes the records
beside it), says so and how to go on, and exits 130; ``--resume`` then does only the rest, with a
progress bar counting only the remaining images from the start."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios

import pyarrow.parquet as pq
import pytest

from ..conftest import photo
from .entry_point import popen

COUNT = 400  # images; every other file is corrupt, so each second record is a "skipping" line on stderr


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    images = tmp_path_factory.mktemp("interrupt") / "images"
    images.mkdir()
    for i in range(COUNT // 2):
        photo(24 + i % 7, 20 + i % 5, seed=i).save(images / f"{i:04d}a.png")
        (images / f"{i:04d}b.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    return images


def models(checkpoints):
    return ["--tasks", "tag,nsfw", "--tagger", checkpoints["joytag"], "--nsfw-model", checkpoints["vit"], "-b", "1"]


def interrupt(*args, after: int = 10) -> tuple[int, str]:
    """Run ``taglens ARGS``, send SIGINT once ``after`` bad files were reported (the run is under
    way), and return its exit status and stderr."""
    child = popen(*args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in child.stderr:  # type: ignore[union-attr]
        lines.append(line)
        if sum(x.startswith("skipping ") for x in lines) >= after:
            child.send_signal(signal.SIGINT)
            break
    rest = child.stderr.read()  # type: ignore[union-attr]
    return child.wait(timeout=120), "".join(lines) + rest


def interrupted_count(stderr: str) -> int:
    match = re.search(r"taglens: interrupted after (\d+) images", stderr)
    assert match, stderr
    return int(match.group(1))


def jsonl_paths(path) -> list[str]:
    return [json.loads(line)["path"] for line in path.read_text().splitlines()]


def test_ctrl_c_keeps_the_records_and_resume_does_only_the_rest(checkpoints, folder, tmp_path):
    out = tmp_path / "out.jsonl"
    status, stderr = interrupt("analyze", folder, *models(checkpoints), "-o", out)
    assert status == 130, stderr
    assert "Aborted" not in stderr and "Traceback" not in stderr
    kept = interrupted_count(stderr)
    assert stderr.strip().splitlines()[-1] == (
        f"taglens: interrupted after {kept} images; their records are kept in {out}: "
        "run the same command with --resume to do the rest")
    paths = jsonl_paths(out)  # a valid file: every line a whole record
    assert len(paths) == kept and 10 <= kept < COUNT and len(set(paths)) == kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # no temporary file left

    # resumed with stderr on a terminal: the bar is there at once and counts only what is left
    status, terminal = on_a_terminal("analyze", folder, *models(checkpoints), "-o", out, "--resume")
    assert status == 0, terminal
    assert f"taglens: resuming {out}: {kept} images already there" in terminal
    left = COUNT - kept
    assert re.search(rf"\b{left}/{left}\b", terminal), terminal  # the bar's total: the remaining images
    assert not re.search(rf"/{COUNT}\b", terminal)
    assert re.search(rf"{left} images: \d+ done, \d+ errors, .*\({kept} skipped: already done\)", terminal)
    paths = jsonl_paths(out)
    assert sorted(paths) == sorted(str(p) for p in folder.iterdir()) and len(set(paths)) == COUNT


def test_ctrl_c_never_replaces_an_existing_file_with_a_partial_one(checkpoints, folder, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"path": "from an earlier run"}\n')
    status, stderr = interrupt("analyze", folder, *models(checkpoints), "-o", out)
    assert status == 130, stderr
    kept = interrupted_count(stderr)
    partial = tmp_path / "out.partial.jsonl"
    assert stderr.strip().splitlines()[-1] == (
        f"taglens: interrupted after {kept} images; their records are kept in {partial} ({out} is as it was): "
        f"run the same command with --resume and --output {partial} to do the rest")
    assert out.read_text() == '{"path": "from an earlier run"}\n'
    assert len(jsonl_paths(partial)) == kept


def test_ctrl_c_keeps_a_valid_parquet_file(checkpoints, folder, tmp_path):
    out = tmp_path / "out.parquet"
    status, stderr = interrupt("analyze", folder, *models(checkpoints), "-o", out)
    assert status == 130, stderr
    kept = interrupted_count(stderr)
    assert stderr.strip().splitlines()[-1] == f"taglens: interrupted after {kept} images; their records are kept in {out}"
    table = pq.read_table(out)
    assert table.num_rows == kept and table.column("path").to_pylist() == sorted(
        str(p) for p in folder.iterdir())[:kept]


def test_ctrl_c_while_writing_to_stdout(checkpoints, folder):
    status, stderr = interrupt("tag", folder, "--model", checkpoints["joytag"], "-b", "1")
    assert status == 130, stderr
    assert stderr.strip().splitlines()[-1] == \
        f"taglens: interrupted after {interrupted_count(stderr)} images (their records went to stdout)"


def test_ctrl_c_before_any_image_is_exit_130_without_a_traceback(checkpoints, folder, monkeypatch):
    from click.testing import CliRunner

    from taglens.cli import cli
    from taglens.models.joytag import Tagger

    def loading(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Tagger, "from_pretrained", loading)
    result = CliRunner().invoke(cli, ["tag", str(folder), "--model", str(checkpoints["joytag"])])
    assert result.exit_code == 130 and result.stderr == "taglens: interrupted\n"


def on_a_terminal(*args) -> tuple[int, str]:
    """Run ``taglens ARGS`` with stderr on a pseudo-terminal (so the progress bar shows); its exit
    status and everything it drew there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    child = popen(*args, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif child.poll() is not None:
            break
    os.close(master)
    return child.wait(timeout=120), b"".join(chunks).decode("utf-8", "replace").replace("\r", "\n")
