"""Shared by the benchmark scripts: photo-like JPEGs, cached full-size random checkpoints, timers.

Checkpoints hold RANDOM weights in exactly the hub's layout (`taglens.testing`): every figure a
benchmark prints is a speed or a deviation, never a prediction.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

DEFAULT_WORKDIR = Path(os.environ.get("TAGLENS_BENCH_DIR", "/tmp/taglens-bench"))


def make_photos(folder: Path, count: int, sizes: list[tuple[int, int]] | None = None, seed: int = 0) -> list[str]:
    """Photo-like JPEGs (gradients, blocks, sensor noise; quality 90) of the given sizes, cycled."""
    sizes = sizes or [(1024, 768)]
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        w, h = sizes[i % len(sizes)]
        path = folder / f"img_{i:04d}_{w}x{h}.jpg"
        paths.append(str(path))
        if path.exists():
            continue
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], -1)
        for _ in range(6):
            x0, y0 = rng.integers(0, w - w // 5), rng.integers(0, h - h // 5)
            base[y0:y0 + h // 5, x0:x0 + w // 5] = rng.integers(0, 256, 3)
        base += rng.normal(0, 8, base.shape)
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(path, quality=90)
    return paths


def checkpoint(kind: str, workdir: Path = DEFAULT_WORKDIR) -> Path:
    """A full-size random checkpoint of a default model's shape, written once and reused:
    ``joytag`` (released config), ``siglip`` (so400m-patch14-224), ``nsfw`` (ViT-B/16 224, 2 labels)."""
    from taglens.testing import write_joytag, write_siglip, write_vit_classifier

    builders: dict[str, tuple[str, Callable[[Path], Path]]] = {
        "joytag": ("joytag-released-random", lambda f: write_joytag(f, "released", seed=0)),
        "siglip": ("siglip-so400m-patch14-224-random", lambda f: write_siglip(f, preset="so400m-patch14-224")),
        "nsfw": ("vit-base-patch16-224-nsfw-random", lambda f: write_vit_classifier(f, preset="vit-base-patch16-224")),
    }
    name, build = builders[kind]
    folder = workdir / name
    if not (folder / "model.safetensors").exists():
        build(folder)
    return folder


def matmul_peak_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """The best of a few n x n matrix products: this machine's matmul peak for ``dtype``."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


class PeakRss:
    """Samples this process's resident memory in a thread; ``peak`` is the largest seen (bytes)."""

    def __init__(self, interval: float = 0.05):
        import psutil

        self._process = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self.peak = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)
