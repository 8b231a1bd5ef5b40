"""Load test of ``taglens serve`` on loopback: throughput against the offline engine, latency, and
what a full queue does (503s with Retry-After, memory flat).

The measured model is the full-size ViT-B/16 224 NSFW classifier of ``Falconsai/nsfw_image_detection``'s
shape with **random weights** (`taglens.testing.write_vit_classifier`): speed only, the scores mean
nothing. (The server loads every family at start; the other two are the tiny test checkpoints.)
Inputs are photo-like 640x480 JPEGs.

1. **Offline**: `taglens.engine.run` over the files with the NSFW job at ``--batch-size`` (the
   CLI's path: `taglens nsfw`), in this process.
2. **Server**: ``taglens serve`` in its own process on 127.0.0.1 (``--max-batch-size`` the same);
   ``--clients`` (32) concurrent clients each POST one image to ``/v1/nsfw``, wait for the answer,
   and send the next, until ``--requests`` answers have come back. Reported: images/s, the ratio
   to offline (goal >= 0.8), p50 / p99 latency, the mean model batch size (from ``/metrics``).
   Offline and server rounds alternate (``--rounds``), each side reporting its best round, so a
   busy machine slows both alike.
3. **Overload**: a second server with a small queue (``--overload-queue``) gets ``--overload-clients``
   concurrent clients for ``--overload-seconds``. Reported: answers by status (503s carry
   Retry-After), the server's resident memory sampled throughout (start, peak, end), and the
   deepest queue seen; with the queue bounded, memory stays flat however many clients push.

    python benchmarks/server_load.py                         # ~2 minutes on 2 busy CPU cores
    python benchmarks/server_load.py --preset tiny --requests 640   # server overhead with a tiny model
    python benchmarks/server_load.py --device cuda --dtype bfloat16 --requests 2000

Loopback only, bounded in count (``--requests``) and time (``--timeout`` per run). The clients
share the machine with the server (one client process, asyncio), which the offline run does not
pay for; on 2 cores that is part of the measured cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import httpx  # noqa: E402
import psutil  # noqa: E402
from common import make_photos  # noqa: E402

from taglens.engine import EngineOptions, run  # noqa: E402
from taglens.models.vit_classifier import NsfwDetector
from taglens.testing import write_siglip, write_vit_classifier  # noqa: E402

TINY_TAGGER = ROOT / "tests" / "fixtures" / "joytag-tiny"
PRESETS = {"full": "vit-base-patch16-224", "tiny": "tiny"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``taglens serve`` in a subprocess on 127.0.0.1."""

    def __init__(self, models: dict[str, Path], args: argparse.Namespace, **flags: object):
        self.port = free_port()
        command = [sys.executable, "-m", "taglens", "serve", "--port", str(self.port), "--log-level", "warning",
                   "--tagger", str(models["tagger"]), "--siglip", str(models["siglip"]),
                   "--nsfw-model", str(models["nsfw"]), "--device", args.device, "--dtype", args.dtype,
                   "--max-batch-size", str(args.batch_size), "--max-wait-ms", str(args.max_wait_ms)]
        for name, value in flags.items():
            command += [f"--{name.replace('_', '-')}", str(value)]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the server stopped: " + self.process.stderr.read().decode()[-2000:])
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the server did not start within 300 s")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def rss_mb(self) -> float:
        return psutil.Process(self.process.pid).memory_info().rss / 1e6

    def metric(self, name: str) -> float:
        text = httpx.get(self.url + "/metrics", timeout=10).text
        return sum(float(m) for m in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def multipart(data: bytes) -> tuple[bytes, str]:
    """One image as a ready multipart body, so the clients spend no time encoding."""
    boundary = "taglens-load-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"img.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


async def load(url: str, bodies: list[tuple[bytes, str]], clients: int, requests: int | None,
               seconds: float) -> dict:
    """``clients`` concurrent clients, one request in flight each, until ``requests`` answers (or
    ``seconds`` pass). Returns the statuses, latencies of 200s, Retry-After values and wall time."""
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    retry_after: list[int] = []
    sent = 0
    started = time.perf_counter()
    deadline = started + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=httpx.Timeout(120.0)) as http:
        async def client(k: int) -> None:
            nonlocal sent
            while time.perf_counter() < deadline and (requests is None or sent < requests):
                sent += 1
                body, kind = bodies[(sent + k) % len(bodies)]
                t0 = time.perf_counter()
                try:
                    response = await http.post("/v1/nsfw", content=body, headers={"content-type": kind})
                except httpx.HTTPError:
                    statuses[0] = statuses.get(0, 0) + 1
                    continue
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
                elif response.status_code == 503:
                    retry_after.append(int(response.headers.get("retry-after", "-1")))
                    await asyncio.sleep(0.05)  # a polite client would wait Retry-After; this one pushes

        await asyncio.gather(*(client(k) for k in range(clients)))
    return {"statuses": statuses, "latencies": latencies, "retry_after": retry_after,
            "seconds": time.perf_counter() - started}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full", help="NSFW classifier size")
    parser.add_argument("--images", type=int, default=64, help="distinct images (sent round-robin)")
    parser.add_argument("--requests", type=int, default=192, help="answers per server round (one image each)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32, help="offline batch size and server --max-batch-size")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds any one run may take")
    parser.add_argument("--overload-clients", type=int, default=128)
    parser.add_argument("--overload-queue", type=int, default=16)
    parser.add_argument("--overload-seconds", type=float, default=15.0)
    args = parser.parse_args()

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(f"writing checkpoints ({args.preset} NSFW classifier, random weights) and {args.images} images ...",
              flush=True)
        models = {"nsfw": write_vit_classifier(root / "vit", preset=PRESETS[args.preset]),
                  "siglip": write_siglip(root / "siglip"), "tagger": TINY_TAGGER}
        paths = make_photos(root / "images", args.images, sizes=[(640, 480)])
        bodies = [multipart(Path(p).read_bytes()) for p in paths]
        detector = NsfwDetector.from_pretrained(models["nsfw"], device=args.device, dtype=args.dtype)
        job = detector.job()
        offline_sources = [paths[i % len(paths)] for i in range(args.requests)]

        def offline() -> float:
            started = time.perf_counter()
            n = sum(1 for r in run(offline_sources, [job], EngineOptions(batch_size=args.batch_size)) if r.ok)
            assert n == len(offline_sources)
            return n / (time.perf_counter() - started)

        offline_rates, server_runs = [], []
        with Server(models, args) as server:
            asyncio.run(load(server.url, bodies, args.clients, 2 * args.clients, args.timeout))  # warm up
            list(run(paths[:args.batch_size], [job], EngineOptions(batch_size=args.batch_size)))
            for round_ in range(args.rounds):
                offline_rates.append(offline())
                batches_before = (server.metric("taglens_batch_size_sum"), server.metric("taglens_batch_size_count"))
                result = asyncio.run(load(server.url, bodies, args.clients, args.requests, args.timeout))
                batches = (server.metric("taglens_batch_size_sum") - batches_before[0],
                           server.metric("taglens_batch_size_count") - batches_before[1])
                ok = result["statuses"].get(200, 0)
                result["rate"] = ok / result["seconds"]
                result["mean_batch"] = batches[0] / max(batches[1], 1)
                server_runs.append(result)
                print(f"round {round_ + 1}: offline {offline_rates[-1]:.2f} img/s, server {result['rate']:.2f} img/s "
                      f"({ok} ok of {sum(result['statuses'].values())}), mean batch {result['mean_batch']:.1f}",
                      flush=True)

        best = max(server_runs, key=lambda r: r["rate"])
        lat = best["latencies"]
        print()
        print(f"model: ViT {PRESETS[args.preset]} NSFW classifier, {args.device} {args.dtype}; "
              f"{args.clients} clients, {args.requests} requests of one 640x480 JPEG per round; "
              f"batch size {args.batch_size}, max wait {args.max_wait_ms:g} ms")
        print(f"offline engine (best of {args.rounds}): {max(offline_rates):8.2f} img/s")
        print(f"server         (best of {args.rounds}): {best['rate']:8.2f} img/s   "
              f"ratio {best['rate'] / max(offline_rates):.2f} (goal >= 0.80)")
        print(f"latency: p50 {1000 * statistics.median(lat):.0f} ms, p99 {1000 * percentile(lat, 0.99):.0f} ms, "
              f"max {1000 * max(lat):.0f} ms; mean model batch {best['mean_batch']:.1f}")

        samples: list[float] = []
        depth: list[float] = []
        with Server(models, args, queue_size=args.overload_queue,
                    max_images=min(args.overload_queue, 64)) as server:
            # warm up with full queues, so the allocator has seen the largest batches before measuring
            asyncio.run(load(server.url, bodies, args.overload_queue, 2 * args.overload_queue, args.timeout))
            start_rss = server.rss_mb()
            done = threading.Event()

            def sample() -> None:  # in a thread: the clients' event loop is saturated on purpose
                while not done.wait(0.1):
                    samples.append(server.rss_mb())
                    try:
                        depth.append(httpx.get(server.url + "/healthz", timeout=5).json()["queue"]["admitted"])
                    except httpx.HTTPError:
                        pass

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            result = asyncio.run(load(server.url, bodies, args.overload_clients, None, args.overload_seconds))
            done.set()
            sampler.join()
            end_rss = server.rss_mb()
        statuses = result["statuses"]
        print()
        print(f"overload: {args.overload_clients} clients for {args.overload_seconds:g} s against --queue-size "
              f"{args.overload_queue}: " + ", ".join(f"{n} x {code or 'connection error'}"
                                                   for code, n in sorted(statuses.items())))
        if result["retry_after"]:
            print(f"  every 503 had Retry-After: {all(r >= 1 for r in result['retry_after'])} "
                  f"(values {min(result['retry_after'])}..{max(result['retry_after'])} s)")
        quarter = max(1, len(samples) // 4)
        print(f"  server memory: {start_rss:.0f} MB before; during: first quarter mean "
              f"{statistics.mean(samples[:quarter] or [start_rss]):.0f} MB, last quarter mean "
              f"{statistics.mean(samples[-quarter:] or [end_rss]):.0f} MB, peak {max(samples, default=end_rss):.0f} MB "
              f"({len(samples)} samples); {end_rss:.0f} MB after")
        print(f"  deepest queue seen: {max(depth, default=0):.0f} of {args.overload_queue} images")


if __name__ == "__main__":
    main()
