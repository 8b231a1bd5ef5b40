"""Re-running ``taglens index`` on an unchanged folder of 10,000 files (goal: <= 2 s).

    python benchmarks/reindex_unchanged.py [--files 10000]

Writes N small PNGs and three checkpoint folders that only *look* like checkpoints (a config and
a safetensors file name: enough for `taglens.models.hub.resolve_model` to give them an identity, useless
to load), indexes once with trivial in-process jobs carrying those identities, then times

- ``taglens index DIR`` as a fresh process (interpreter start and imports included), which must
  neither decode nor hash a file nor load a model: it reports whether torch was imported;
- `Library.index` in-process (the scan alone).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))


@dataclass(frozen=True)
class Tiny:
    input_size: int = 4

    def __call__(self, image):
        return np.asarray(image.resize((4, 4)), np.float32).transpose(2, 0, 1) / 255


class ConstantJob:
    def __init__(self, task, model_id, revision):
        self.name, self.task, self.transform, self.model_id, self.revision = task, task, Tiny(), model_id, revision

    def __call__(self, pixels):
        from taglens.records import NsfwResult, TagScore

        if self.task == "tag":
            return [{"tags": (TagScore("x", 0.9),)} for _ in pixels]
        if self.task == "nsfw":
            return [{"nsfw": NsfwResult("normal", 0.9, {"normal": 0.9, "nsfw": 0.1}, False)} for _ in pixels]
        return [{"embedding": (p.reshape(-1)[:16] - 0.5) / max(np.linalg.norm(p.reshape(-1)[:16] - 0.5), 1e-6)}
                for p in pixels]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from PIL import Image

    from taglens.engine import EngineOptions
    from taglens.models.hub import resolve_model
    from taglens.library import Library, loaded

    root = Path(tempfile.mkdtemp(prefix="taglens-reindex-"))
    photos, lib_dir = root / "photos", root / "lib"
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for i in range(args.files):
        folder = photos / f"d{i // 1000:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    print(f"wrote {args.files} files in {time.perf_counter() - t:.1f} s under {photos}", flush=True)
    models = {}
    for task, flag in (("tag", "--tagger"), ("nsfw", "--nsfw-model"), ("embed", "--siglip")):
        folder = root / f"model-{task}"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"not": "a real model"}))
        (folder / "model.safetensors").write_bytes(b"")
        resolved = resolve_model(folder)
        models[task] = (flag, folder, ConstantJob(task, resolved.model_id, resolved.revision))
    t = time.perf_counter()
    with Library.open(lib_dir, create=True) as lib:
        report = lib.index([photos], [loaded(task, job) for task, (_, _, job) in models.items()],
                           options=EngineOptions(batch_size=64))
    print(f"first index: {report.line()} (in {time.perf_counter() - t:.1f} s)", flush=True)

    command = [sys.executable, "-c",
               "import sys; from taglens.cli import cli\n"
               "try: cli(prog_name='taglens')\n"
               "except SystemExit as e: code = e.code\n"
               "print('torch imported:', 'torch' in sys.modules, file=sys.stderr); sys.exit(code)",
               "index", str(photos), "--library", str(lib_dir)]
    for flag, folder, _ in models.values():
        command += [flag, str(folder)]
    env = dict(os.environ, PYTHONPATH=str(SRC))
    cli_times, api_times = [], []
    for _ in range(args.repeat):
        t = time.perf_counter()
        out = subprocess.run(command, env=env, capture_output=True, text=True)
        cli_times.append(time.perf_counter() - t)
        if out.returncode != 0:
            raise SystemExit(out.stderr)
    print(out.stderr.strip())
    sources = [loaded(task, job) for task, (_, _, job) in models.items()]
    for _ in range(args.repeat):
        with Library.open(lib_dir) as lib:
            t = time.perf_counter()
            report = lib.index([photos], sources)
            api_times.append(time.perf_counter() - t)
        assert report.unchanged == args.files and report.hashed == 0 and not report.loaded, report
    print()
    print("| re-index of an unchanged folder | files | best s | median s |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| `taglens index DIR` (new process) | {args.files:,} | {min(cli_times):.2f} | {np.median(cli_times):.2f} |")
    print(f"| `Library.index` (in process) | {args.files:,} | {min(api_times):.2f} | {np.median(api_times):.2f} |")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
