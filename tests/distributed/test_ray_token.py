"""A Ray cluster with token authentication (Ray 2.60) that refuses this process's token: one line
that says what to do, no traceback and none of Ray's core retry lines, through the installed entry
point. The cluster is a real ``ray start --head`` of this test's own (own port, own temporary
folder), stopped by the ids of its processes, so any other Ray on the machine is left alone."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from ..cli.installed import error_lines, run_taglens
from ..conftest import photo
from ..s3 import free_port

TOKEN = "0123456789abcdef0123456789abcdef"


def processes_of(folder: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(str(folder) in part for part in process.info["cmdline"] or ()):
                found.append(process)
        except psutil.Error:
            continue
    return found


def stop(folder: Path) -> None:
    """SIGTERM, then SIGKILL, to every process of the head started with ``--temp-dir folder``."""
    left = processes_of(folder)
    for process in left:
        with_error_ignored(process.send_signal, signal.SIGTERM)
    _, alive = psutil.wait_procs(left, timeout=15)
    for process in alive:
        with_error_ignored(process.kill)
    psutil.wait_procs(alive, timeout=10)


def with_error_ignored(call, *args) -> None:
    try:
        call(*args)
    except psutil.Error:
        pass


@pytest.fixture(scope="module")
def head():
    ray = Path(sys.executable).parent / "ray"
    folder = Path(tempfile.mkdtemp(prefix="tlr-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    port = free_port()
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN)
    command = [str(ray), "start", "--head", f"--port={port}", f"--temp-dir={folder}", "--num-cpus=1",
               "--include-dashboard=false", "--disable-usage-stats",
               f"--dashboard-agent-listen-port={free_port()}", "--object-store-memory=100000000"]
    try:
        started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
        assert started.returncode == 0, started.stdout + started.stderr
        yield SimpleNamespace(address=f"127.0.0.1:{port}")
    finally:
        stop(folder)
        time.sleep(0.5)
        shutil.rmtree(folder, ignore_errors=True)
    assert not processes_of(folder)


def test_a_refused_token_is_one_line(head, checkpoints, tmp_path):
    photo(30, 20).save(tmp_path / "a.png")
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "f" * 32}
    result = run_taglens("analyze", tmp_path / "a.png", "--engine", "ray", "--address", head.address,
                         "--tasks", "nsfw", "--nsfw-model", checkpoints["vit"], "-o", tmp_path / "out", env=env,
                         timeout=300)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "gcs_client" not in result.stderr
    [line] = error_lines(result.stderr)
    assert f"--address {head.address}: the cluster refused this process's authentication token" in line
    assert "RAY_AUTH_TOKEN" in line and "ray get-auth-token" in line
