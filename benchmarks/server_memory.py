"""Peak RSS of the HTTP service under the two loads of issue 18: one request carrying 16 fuzzed
BLP-shaped files (a few hundred bytes each, declaring 16-84 megapixels), and a burst of 12
concurrent thumbnails of one 6000x6000 PNG.

Each load runs against a fresh server process (uvicorn, tiny random checkpoints, CPU); the
figure is that process's VmHWM (peak RSS, from /proc) after the load, next to its RSS before
it. Run it on two trees to compare them, e.g. the branch point against this branch:

    git worktree add /tmp/before 0cebd16
    PYTHONPATH=/tmp/before/src python benchmarks/server_memory.py   # before
    python benchmarks/server_memory.py                               # after

(the script itself only uses the taglens that PYTHONPATH, else this tree's src/, provides).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SRC = os.environ.get("PYTHONPATH") or str(Path(__file__).resolve().parents[1] / "src")

SERVER = r"""
import sys, uvicorn
from taglens.server import Settings, create_app
folder, port, library = sys.argv[1], int(sys.argv[2]), sys.argv[3]
settings = Settings(tagger=f"{folder}/joytag", siglip=f"{folder}/siglip", nsfw_model=f"{folder}/vit",
                    device="cpu", library=library or None)
uvicorn.run(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
"""

PREPARE = r"""
import sys, shutil
from pathlib import Path
import numpy as np
from PIL import Image
from taglens.testing import write_siglip, write_vit_classifier
folder, joytag = Path(sys.argv[1]), sys.argv[2]
if not (folder / "vit").exists():
    shutil.copytree(joytag, folder / "joytag")
    write_siglip(folder / "siglip", text_length=16)
    write_vit_classifier(folder / "vit")
    photos = folder / "photos"
    photos.mkdir()
    y, x = np.mgrid[0:6000, 0:6000]
    rgb = np.stack([x * 255 // 5999, y * 255 // 5999, (x + y) * 255 // 11998], -1).astype(np.uint8)
    Image.fromarray(rgb, "RGB").save(photos / "big.png")
    from taglens.library import Library, loaded
    from taglens.models.modelset import ModelSet
    from taglens.models.tag_selection import TagSelection
    models = ModelSet(tagger=str(folder / "joytag"), device="cpu")
    with Library.open(folder / "lib", create=True) as lib:
        lib.index([photos], [loaded("tag", models.load_tagger().job(TagSelection(threshold=0.5)))])
"""


def blp_declaring(height: int, size: int) -> bytes:
    """The fuzzed files' shape: a BLP2 header declaring 1 x ``height`` pixels, ``size`` bytes in all."""
    head = b"BLP2" + struct.pack("<ibbbb", 1, 1, 8, 0, 0) + struct.pack("<II", 1, height)
    head += struct.pack("<16I", 148, *[0] * 15) + struct.pack("<16I", size - 148, *[0] * 15)
    return (head + bytes(range(256)) * 8)[:size]


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "taglensbench"
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
                    f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n" for name, data in files)
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {k: int(fields[k].split()[0]) // 1024 for k in ("VmRSS", "VmHWM")}


def serve(folder: Path, library: str):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=SRC, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(folder), str(port), library], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=2)
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.3)


def status_of(request: urllib.request.Request) -> int:
    try:
        with urllib.request.urlopen(request, timeout=600) as answer:
            answer.read()
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def bomb(url: str) -> list[int]:
    shapes = [(83_886_338, 284), (67_108_880, 1539), (51_380_225, 571), (47_884_801, 889)] * 4
    body, kind = multipart([(f"f{i}.blp", blp_declaring(h, n)) for i, (h, n) in enumerate(shapes)])
    return [status_of(urllib.request.Request(url + "/v1/nsfw", data=body, headers={"Content-Type": kind}))]


def thumbnails(url: str) -> list[int]:
    image_id = 1  # the library's one image
    with ThreadPoolExecutor(12) as pool:
        return list(pool.map(lambda i: status_of(urllib.request.Request(
            f"{url}/v1/images/{image_id}/thumbnail?size={64 + i}")), range(int(os.environ.get("BURST", 12)))))


def main() -> None:
    folder = Path(os.environ.get("TAGLENS_BENCH_DIR", tempfile.gettempdir())) / "taglens-server-memory"
    folder.mkdir(parents=True, exist_ok=True)
    joytag = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "joytag-tiny"
    subprocess.run([sys.executable, "-c", PREPARE, str(folder), str(joytag)], check=True,
                   env=dict(os.environ, PYTHONPATH=SRC, HF_HUB_OFFLINE="1"))
    results = {"taglens": SRC}
    for name, load, library in [("bomb request (16 BLP)", bomb, ""),
                                ("12 concurrent thumbnails of 6000x6000 PNG", thumbnails, str(folder / "lib"))]:
        shutil.rmtree(folder / "lib" / "thumbnails", ignore_errors=True)  # every thumbnail decoded afresh
        proc, url = serve(folder, library)
        try:
            before = memory(proc.pid)["VmRSS"]
            statuses = load(url)
            peak = memory(proc.pid)["VmHWM"]
        finally:
            proc.terminate()
            proc.wait(30)
        results[name] = {"rss_before_mb": before, "peak_rss_mb": peak, "added_mb": peak - before,
                         "statuses": sorted(set(statuses))}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
