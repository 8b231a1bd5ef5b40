"""One small request of decompression-bomb-shaped files keeps `taglens serve` within a memory bound:
the installed entry point in its own process, its peak resident memory (VmHWM) read from /proc
before and after. Before the pixels-per-byte check, this request took the server from ~380 MB to
~1,970 MB (benchmarks/server_memory.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.cli.installed import entry_point
from tests.unit.test_images import blp_declaring

from .conftest import free_port

BOUND_MB = 200
"""Growth of the server's peak memory allowed for the request (each file may hold a few MB)."""

SHAPES = [(83_886_338, 284), (67_108_880, 1539), (51_380_225, 571), (47_884_801, 889)] * 4
"""16 files of 284-1,539 bytes declaring 1 x 48-84 Mpx, the fuzzed BLPs' shape."""


def peak_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmHWM in /proc")


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "taglenstest"
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
                    "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n" for name, data in files)
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sixteen_bomb_shaped_files_in_one_request_keep_the_server_bounded(models):
    port = free_port()
    command = [entry_point(), "serve", "--tagger", models["tagger"], "--siglip", models["siglip"],
               "--nsfw-model", models["nsfw_model"], "--device", "cpu", "--port", str(port)]
    server = subprocess.Popen(command, env=dict(os.environ, HF_HUB_OFFLINE="1"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url + "/healthz", timeout=2).read()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.3)
        before = peak_mb(server.pid)
        body, kind = multipart([(f"f{i}.blp", blp_declaring(h, n)) for i, (h, n) in enumerate(SHAPES)])
        request = urllib.request.Request(url + "/v1/nsfw", data=body, headers={"Content-Type": kind})
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                status = answer.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        assert status == 422  # every file is an error record, none is a crash
        assert peak_mb(server.pid) - before <= BOUND_MB
    finally:
        server.terminate()
        server.wait(30)
