"""One prepared device benchmark: the three default models on one GPU, exact and fast preprocessing,
float32 (TF32 off) and bfloat16, against a CPU float32 run of the same weights.

Everything is built on the machine it runs on: full-size RANDOM-weight checkpoints of the three
defaults in the hub's layout (JoyTag's released configuration at 448 px, SigLIP so400m-patch14-224,
a ViT-B/16 224 classifier; `benchmarks/common.py`) and photo-like 1024x768 JPEGs. Figures are
speeds and deviations, never predictions. It then measures the machine's matmul rate (bf16 and
float32), and prints one table:

- ``<model> alone``: the model's forward pass on uint8 batches already in host memory (copy,
  on-device normalisation, forward, fetch), images/s and MFU = the model's FLOPs per image (torch's
  FlopCounterMode) x images/s / the matmul rate of the row's dtype;
- ``siglip embed``: the embed job alone through the engine, JPEG files in, records out;
- ``three models``: tag + classify/embed + nsfw through the engine (what ``taglens analyze``
  runs), JPEG decode included, ``exact`` (Pillow on the CPU) and ``fast`` (``--preprocess gpu``);
- ``max |d|``: the largest score or embedding-component difference from a CPU float32 exact run
  of the same weights on the first few images (the fast mode's includes its preprocessing).

    python benchmarks/gpu.py                       # on the GPU machine: under 8 minutes on an H200
    python benchmarks/gpu.py --device cpu --smoke  # tiny checkpoints, a few images: CI keeps it working
    python benchmarks/gpu.py --compile             # + a bfloat16 torch.compile row (minutes of compiling)

Where CUDA or torchvision is absent the ``fast`` rows say so and run the exact path; their
deviation is then that of the device geometry with Pillow's decode (`pillow_decode`).
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import DEFAULT_WORKDIR, checkpoint, make_photos

from taglens.engine import EngineOptions, run
from taglens.engine.device_preprocess import nvjpeg_decode, pillow_decode, prepare_on_device, unavailable
from taglens.engine import threads
from taglens.engine.gpu_sizing import auto_batch_size
from taglens.engine.prepare import job_transforms, prepare_source
from taglens.engine.transfer import collate, resolve
from taglens.io.decode import DecodeOptions
from taglens.models.modelset import ModelSet, TaskRequest
from taglens.models.siglip import PromptTruncatedWarning

COMPARE_IMAGES = 4
FAMILY_OF = {"tag": "joytag", "classify+embed": "siglip", "nsfw": "nsfw (vit)"}
LABELS = ("a photo of a cat", "a photo of a dog", "a landscape", "a drawing")


def build_checkpoints(workdir: Path, smoke: bool) -> dict[str, Path]:
    if not smoke:
        return {kind: checkpoint(kind, workdir) for kind in ("joytag", "siglip", "nsfw")}
    from taglens.testing import write_joytag, write_siglip, write_vit_classifier

    folders = {"joytag": workdir / "tiny-joytag", "siglip": workdir / "tiny-siglip", "nsfw": workdir / "tiny-vit"}
    writers: dict[str, Callable[[Path], Any]] = {"joytag": write_joytag, "siglip": write_siglip,
                                                 "nsfw": write_vit_classifier}
    for kind, folder in folders.items():
        if not any(folder.glob("*.safetensors")):
            writers[kind](folder)
    return folders


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int) -> float:
    """FLOP/s of the best of a few n x n products on ``device``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = float("inf")
    for _ in range(6):
        sync(device)
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - start) / 4)
    return 2 * n**3 / best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_models(folders: dict[str, Path], device: str, dtype: str, *,
                compile: bool = False) -> tuple[ModelSet, list[Any]]:
    models = ModelSet(tagger=str(folders["joytag"]), siglip=str(folders["siglip"]),
                      nsfw_model=str(folders["nsfw"]), device=device, dtype=dtype, compile=compile)
    request = TaskRequest(tasks=("tag", "classify", "embed", "nsfw"), labels=LABELS)
    return models, models.jobs(request)


def flops_per_image(job: Any, prepared: Any) -> float:
    """FLOPs of one image through ``job``'s model (matmuls, convolutions, attention; torch's count)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        resolve(job.launch(collate([prepared], takes_bytes=True)))
    return float(counter.get_total_flops())


def raw_outputs(jobs: Sequence[Any], prepared: Sequence[Any]) -> dict[str, np.ndarray]:
    """Each model's raw rows (scores or embeddings) for prepared images, one batch per model."""
    out = {}
    for job in jobs:
        inputs = [p.arrays[job.transform] for p in prepared]
        out[job.name] = np.asarray(resolve(job.launch(collate(inputs, takes_bytes=True))), np.float32)
    return out


def prepare_all(paths: Sequence[str], jobs: Sequence[Any], mode: str, device: torch.device) -> list[Any]:
    transforms, decode = job_transforms(jobs, DecodeOptions())
    if mode == "exact":
        return [prepare_source(p, transforms, decode) for p in paths]
    decoder = nvjpeg_decode if unavailable(device, transforms) is None else pillow_decode
    return [prepare_on_device(p, transforms, decode, device, decoder=decoder) for p in paths]


def largest_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray], names: Sequence[str]) -> float:
    return max(float(np.abs(a[n] - b[n]).max()) for n in names)


def time_model_alone(job: Any, paths: Sequence[str], batch: int, images: int, device: torch.device) -> float:
    """images/s of the model's pass on uint8 batches in host memory (copy and normalise included)."""
    transforms, decode = job_transforms([job], DecodeOptions())
    one = [prepare_source(p, transforms, decode).arrays[job.transform] for p in paths[:min(batch, 16)]]
    one = (one * (batch // len(one) + 1))[:batch]
    ready = collate(one, takes_bytes=True)
    resolve(job.launch(ready))  # warm-up: kernels chosen, memory cached
    rounds = max(1, images // batch)
    sync(device)
    start = time.perf_counter()
    pending = [job.launch(ready) for _ in range(rounds)]
    for p in pending:
        resolve(p)
    sync(device)
    return rounds * batch / (time.perf_counter() - start)


def time_engine(paths: Sequence[str], jobs: Sequence[Any], options: EngineOptions, device: torch.device) -> float:
    list(run(paths[: options.batch_size], jobs, options))  # warm-up
    sync(device)
    start = time.perf_counter()
    records = list(run(paths, jobs, options))
    sync(device)
    seconds = time.perf_counter() - start
    failed = [r for r in records if r.error]
    if failed:
        raise SystemExit(f"benchmark run failed on {failed[0].path}: {failed[0].error}")
    return len(records) / seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny checkpoints and a few images (CI)")
    parser.add_argument("--images", type=int, default=None,
                        help="JPEGs per timed row (default 512, a quarter of them in float32; smoke 8)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: from free memory (CPU: 4)")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--compile", action="store_true",
                        help="one more row: the bfloat16 three-model pass with torch.compile (compiling not counted)")
    args = parser.parse_args(argv)
    logging.getLogger("taglens.engine.run").setLevel(logging.ERROR)  # the fast rows' note says it once
    warnings.simplefilter("ignore", PromptTruncatedWarning)  # the smoke checkpoints' 16 text tokens
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA GPU visible; use --device cpu --smoke", file=sys.stderr)
        return 2
    images = args.images or (8 if args.smoke else 512)
    workdir = args.workdir / ("smoke" if args.smoke else "full")
    started = time.perf_counter()
    folders = build_checkpoints(workdir, args.smoke)
    paths = make_photos(workdir / "jpegs", images, [(1024, 768)])
    compare = paths[:COMPARE_IMAGES]
    print(f"# benchmarks/gpu.py on {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, "
          f"torch {torch.__version__}, {images} JPEGs 1024x768, checkpoints "
          f"{'tiny (smoke)' if args.smoke else 'full-size random'}; built in {time.perf_counter() - started:.0f} s")

    # the reference: CPU float32, exact preprocessing, the same weights
    _, cpu_jobs = load_models(folders, "cpu", "float32")
    reference = raw_outputs(cpu_jobs, prepare_all(compare, cpu_jobs, "exact", torch.device("cpu")))
    del cpu_jobs
    gc.collect()

    n = 512 if args.smoke else 8192
    rates = {dtype: matmul_rate(device, getattr(torch, dtype), n) for dtype in ("bfloat16", "float32")}
    print(f"# matmul rate ({n}x{n}): bfloat16 {rates['bfloat16'] / 1e9:.0f} GFLOP/s, "
          f"float32 (TF32 off) {rates['float32'] / 1e9:.0f} GFLOP/s")

    rows: list[tuple[str, ...]] = []
    for dtype in ("float32", "bfloat16"):
        models, jobs = load_models(folders, str(device), dtype)  # TF32 off: Placement's default
        transforms, _ = job_transforms(jobs, DecodeOptions())
        batch = args.batch_size or (4 if device.type == "cpu" else
                                    auto_batch_size(device, [t.input_size for t in transforms]))
        workers = threads.sizing("cuda").decode_workers if device.type == "cuda" else 2
        exact_prep = prepare_all(compare, jobs, "exact", device)
        exact = raw_outputs(jobs, exact_prep)
        count = images if dtype != "float32" or args.smoke else max(batch, images // 4)  # float32 is slow
        for job in jobs:
            name = FAMILY_OF.get(job.name, job.name)
            rate = time_model_alone(job, paths, batch, count, device)
            mfu = flops_per_image(job, exact_prep[0].arrays[job.transform]) * rate / rates[dtype]
            rows.append((f"{name} alone", dtype, "-", str(batch), f"{rate:.0f}", f"{100 * mfu:.1f}%",
                         f"{largest_difference(exact, reference, [job.name]):.2e}", ""))
        embed_job = models.jobs(TaskRequest(tasks=("embed",)))
        fast_reason = unavailable(device, transforms)
        for mode in ("exact", "fast"):
            options = EngineOptions(batch_size=batch, workers=workers, preprocess="gpu" if mode == "fast" else "exact")
            note = f"fell back to exact: {fast_reason}" if mode == "fast" and fast_reason else ""
            outputs = exact if mode == "exact" else raw_outputs(jobs, prepare_all(compare, jobs, "fast", device))
            rate = time_engine(paths[:count], embed_job, options, device)
            siglip = [job.name for job in jobs if "embed" in job.name]  # the same image-tower rows
            rows.append(("siglip embed (engine)", dtype, mode, str(batch), f"{rate:.0f}", "",
                         f"{largest_difference(outputs, reference, siglip):.2e}", note))
            rate = time_engine(paths[:count], jobs, options, device)
            rows.append(("three models (engine, JPEG decode)", dtype, mode, str(batch), f"{rate:.0f}", "",
                         f"{largest_difference(outputs, reference, [j.name for j in jobs]):.2e}", note))
        del models, jobs, embed_job
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    if args.compile:
        _, jobs = load_models(folders, str(device), "bfloat16", compile=True)
        transforms, _ = job_transforms(jobs, DecodeOptions())
        batch = args.batch_size or (4 if device.type == "cpu" else
                                    auto_batch_size(device, [t.input_size for t in transforms]))
        options = EngineOptions(batch_size=batch, workers=threads.sizing("cuda").decode_workers if device.type == "cuda" else 2)
        compiling = time.perf_counter()
        for size in sorted({batch, *(1 << k for k in range(batch.bit_length()))}):  # every padded shape
            list(run(paths[:size], jobs, options))
        compiling = time.perf_counter() - compiling
        rate = time_engine(paths, jobs, options, device)
        outputs = raw_outputs(jobs, prepare_all(compare, jobs, "exact", device))
        rows.append(("three models (engine, JPEG decode, --compile)", "bfloat16", "exact", str(batch),
                     f"{rate:.0f}", "", f"{largest_difference(outputs, reference, [j.name for j in jobs]):.2e}",
                     f"{compiling:.0f} s of compiling, not counted"))

    header = ("row", "dtype", "preprocess", "batch", "images/s", "MFU", "max |d| vs CPU fp32", "note")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"# total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
