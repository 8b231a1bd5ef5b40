"""Measure the near-duplicate threshold for an embedding checkpoint.

    python benchmarks/duplicate_threshold.py --siglip google/siglip-so400m-patch14-224 [--images 60]

Generates photo-like pictures (smooth random colour fields with shapes and noise, 640x480), makes
copies of each (JPEG quality 90/70/50/30, downscaled to 1/2 and 1/4 then JPEG 85, a 5% crop,
PNG round trip), embeds everything through the engine with the checkpoint's embed job, and
prints the cosine distribution of same-picture pairs against that of different pictures, with
the threshold halfway between the lowest same-picture cosine (1st percentile) and the highest
different-picture cosine. `taglens.library.duplicates.DEFAULT_THRESHOLD` comes from this run with
the default checkpoint. Random-weight checkpoints give meaningless numbers: use a real one.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def picture(seed: int, size=(640, 480)) -> Image.Image:
    rng = np.random.default_rng(seed)
    grid = Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
    draw = ImageDraw.Draw(grid)
    for _ in range(6):
        x, y = rng.integers(0, size[0]), rng.integers(0, size[1])
        r = int(rng.integers(20, 120))
        box = [x - r, y - r, x + r, y + r]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    noisy = np.asarray(grid.filter(ImageFilter.GaussianBlur(1.5)), np.float32) + rng.normal(0, 6, (size[1], size[0], 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def variants(image: Image.Image) -> dict[str, Image.Image]:
    w, h = image.size
    out = {f"jpeg{q}": jpeg(image, q) for q in (90, 70, 50, 30)}
    out["half"] = jpeg(image.resize((w // 2, h // 2), Image.LANCZOS), 85)
    out["quarter"] = jpeg(image.resize((w // 4, h // 4), Image.LANCZOS), 85)
    out["crop5"] = image.crop((w // 40, h // 40, w - w // 40, h - h // 40))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--siglip", required=True, help="SigLIP/CLIP checkpoint (hub id or folder)")
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    from taglens.engine import EngineOptions, run
    from taglens.library.models import load_embedder

    embedder = load_embedder(args.siglip, None, device=args.device)
    job = embedder.job(embedding=True)
    originals = [picture(i) for i in range(args.images)]
    items = [(i, "original", im) for i, im in enumerate(originals)]
    items += [(i, name, v) for i, im in enumerate(originals) for name, v in variants(im).items()]
    records = list(run([im for _, _, im in items], [job], EngineOptions(batch_size=8)))
    vectors = np.stack([r.embedding for r in records]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    first = {i: k for k, (i, name, _) in enumerate(items) if name == "original"}
    same = {}
    for k, (i, name, _) in enumerate(items):
        if name != "original":
            same.setdefault(name, []).append(float(vectors[k] @ vectors[first[i]]))
    orig = vectors[[first[i] for i in range(args.images)]]
    cos = orig @ orig.T
    different = cos[np.triu_indices(args.images, 1)]
    every_same = np.concatenate([np.array(v) for v in same.values()])
    print(f"# {embedder.model_id}@{embedder.revision}: {args.images} pictures, {len(items)} images")
    print("| copy | min | p1 | median |")
    print("| --- | ---: | ---: | ---: |")
    for name, values in same.items():
        v = np.array(values)
        print(f"| {name} | {v.min():.4f} | {np.percentile(v, 1):.4f} | {np.median(v):.4f} |")
    print(f"| different pictures (max / p99 / median) | {different.max():.4f} | {np.percentile(different, 99):.4f} | "
          f"{np.median(different):.4f} |")
    low_same = float(np.percentile(every_same, 1))
    print(f"\nsuggested threshold: {(low_same + float(different.max())) / 2:.3f} "
          f"(same-picture p1 {low_same:.4f}, different max {different.max():.4f})")


if __name__ == "__main__":
    main()
