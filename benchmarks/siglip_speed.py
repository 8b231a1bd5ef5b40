"""Images/s of the full-size SigLIP so400m-patch14-224 image tower: taglens against the model
card's way, measured in the same run.

Baseline (the model card): for each image, ``Image.open`` + ``processor(images=image)`` +
``model.get_image_features(...)`` in float32, one image at a time.
taglens: ``Embedder.job()`` through ``taglens.engine.run`` (decode threads, a full decode,
the lookup-table preprocessing, batched forward passes) in float32 and bfloat16 at several
batch sizes.

The weights are random (``taglens.testing.write_siglip(folder, preset="so400m-patch14-224")``,
written once to ``--checkpoint``, 3.3 GB): the speed is the real model's, the outputs mean
nothing. The images are synthetic 1024x768 JPEGs.

    python benchmarks/siglip_speed.py                      # ~3-4 minutes on 2 CPU cores
    python benchmarks/siglip_speed.py --images 32 --batches 1,8,32 --device cuda
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from common import DEFAULT_WORKDIR, make_photos  # noqa: E402  (puts src/ on sys.path)
from PIL import Image

from taglens.engine import EngineOptions, run  # noqa: E402
from taglens.testing import write_siglip  # noqa: E402
from taglens.models.siglip import Embedder

DEFAULT_CHECKPOINT = DEFAULT_WORKDIR / "siglip-so400m-patch14-224-random"  # common.checkpoint("siglip")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def model_card(model: torch.nn.Module, processor, paths: list[str], device: torch.device) -> float:
    """The card's way, one image at a time; returns images/s."""
    def one(path: str) -> None:
        with Image.open(path) as image:
            inputs = processor(images=image, return_tensors="pt").to(device)
        with torch.no_grad():
            model.get_image_features(**inputs)

    one(paths[0])  # warm-up
    sync(device)
    start = time.perf_counter()
    for path in paths:
        one(path)
    sync(device)
    return len(paths) / (time.perf_counter() - start)


def taglens_rate(embedder: Embedder, paths: list[str], batch_size: int, device: torch.device) -> float:
    """Images/s through the engine, after a warm-up batch."""
    job = embedder.job()
    options = EngineOptions(batch_size=batch_size)
    list(run(paths[:batch_size], [job], options))  # warm-up
    sync(device)
    start = time.perf_counter()
    records = list(run(paths, [job], options))
    sync(device)
    rate = len(paths) / (time.perf_counter() - start)
    assert all(r.error is None for r in records), [r.error for r in records if r.error]
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                        help="where the random-weight so400m checkpoint is (written there if missing)")
    parser.add_argument("--images", type=int, default=8, help="images per measurement")
    parser.add_argument("--batches", default="1,4,8", help="taglens batch sizes, comma-separated")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    if not (args.checkpoint / "model.safetensors").exists():
        print(f"writing the random-weight so400m checkpoint to {args.checkpoint} (once) ...", file=sys.stderr)
        write_siglip(args.checkpoint, preset="so400m-patch14-224")
    batches = [int(b) for b in args.batches.split(",")]
    measure(args, make_photos(DEFAULT_WORKDIR / "photos-1024x768", args.images), batches)


def measure(args: argparse.Namespace, paths: list[str], batches: list[int]) -> None:
    from transformers import AutoModel, AutoProcessor

    from taglens.engine.placement import resolve_device

    device = resolve_device(args.device)
    processor = AutoProcessor.from_pretrained(args.checkpoint)
    card = AutoModel.from_pretrained(args.checkpoint, use_safetensors=True).to(device).eval()
    baseline = model_card(card, processor, paths, device)
    rows: list[tuple[str, float]] = [("model card (processor + model, float32, per image)", baseline)]
    print(f"{rows[-1][0]:<52} {baseline:7.2f} images/s", flush=True)
    for dtype in args.dtypes.split(","):
        embedder = Embedder.from_pretrained(args.checkpoint, device=str(device), dtype=dtype)
        for batch in batches:
            rate = taglens_rate(embedder, paths, batch, device)
            rows.append((f"taglens {dtype} batch {batch}", rate))
            print(f"{rows[-1][0]:<52} {rate:7.2f} images/s  {rate / baseline:5.2f}x", flush=True)
        del embedder

    again = model_card(card, processor, paths, device)  # the spread shows how noisy the machine is
    print(f"{'model card again, at the end':<52} {again:7.2f} images/s  {again / baseline:5.2f}x", flush=True)
    print()
    print(f"device: {device}, torch threads: {torch.get_num_threads()}, CPUs: {os.cpu_count()}, "
          f"images: {args.images} JPEG 1024x768, torch {torch.__version__}")
    for dtype in args.dtypes.split(","):
        name, best = max(((n, r) for n, r in rows if n.startswith(f"taglens {dtype} ")), key=lambda x: x[1])
        print(f"best {dtype}: {name} {best:.2f} images/s = {best / baseline:.2f}x the model card")


if __name__ == "__main__":
    main()
