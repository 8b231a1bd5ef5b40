"""JoyTag throughput on this machine: taglens against the reference code path, as ratios.

The model is the full-size released configuration (CNN stem, 12 blocks, 768 wide, 448 px, 5813
tags) with RANDOM weights written by `taglens.testing.write_joytag`: the figures are speeds,
never predictions.

Rows, all measured in the same run on the same JPEG files:

- reference: the JoyTag README / HF Space way, reimplemented here step by step. For each file:
  ``Image.open``, paste onto a white square (floor offsets), PIL BICUBIC to 448, uint8 tensor
  / 255, normalise with CLIP's mean and std in torch, then the model in float32 on a batch of
  one, sigmoid, tags with score > 0.4. This is the baseline (1.00). The model is taglens's
  JoyTag module loaded plainly (eager, float32, default memory layout): the computation of the
  reference's ``ViT`` class, which the tests check against the reference's own outputs.
- reference + autocast: the same, inside ``torch.autocast("cpu")`` (bfloat16) as the README's
  ``predict`` does; a fair partner for the bfloat16 rows.
- taglens: ``Tagger.from_pretrained(folder, dtype=...)(paths, batch_size=B)``: the engine
  (decode threads, bounded look-ahead, batching) and the model, for each dtype and batch size.

Each row is warmed up on one batch first (oneDNN builds its kernels per shape), then timed over
``--images`` files in ``--rounds`` rounds that visit every row in turn, so a burst of load from
elsewhere hits all rows alike; each row's best round counts. ``max |score diff|`` compares the
row's scores with the float32 reference on two images. Usage (about 2.5 minutes of work for
2 cores with the defaults; about 5 when other jobs share them):

    python benchmarks/joytag_speed.py
    python benchmarks/joytag_speed.py --images 8 --batch-sizes 1,8 --dtypes float32
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from common import DEFAULT_WORKDIR, checkpoint, make_photos  # noqa: E402  (puts src/ on sys.path)
from PIL import Image

from taglens.models.joytag_vit import load_model, load_tags
from taglens.models.joytag import Tagger

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
THRESHOLD = 0.4
SIZES = [(800, 600), (600, 800), (1024, 768), (640, 640), (1200, 675), (500, 750)]


# ----------------------------------------------------------------------------- the reference path


def reference_prepare(image: Image.Image, target: int) -> torch.Tensor:
    """The README's prepare_image, step by step (torchvision's two helpers written out)."""
    side = max(image.size)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    if side != target:
        square = square.resize((target, target), Image.BICUBIC)
    x = torch.from_numpy(np.array(square)).permute(2, 0, 1) / 255.0  # pil_to_tensor, then / 255
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(CLIP_STD, dtype=torch.float32)[:, None, None]
    return x.sub_(mean).div_(std)  # TVF.normalize


def reference_run(model, tags, paths, autocast: bool) -> list[str]:
    out = []
    with torch.no_grad():
        for path in paths:
            x = reference_prepare(Image.open(path), model.config.image_size)[None]
            with torch.autocast("cpu", enabled=autocast):
                scores = model(x).sigmoid()[0]
            out.append(", ".join(t for t, s in zip(tags, scores.tolist()) if s > THRESHOLD))
    return out


# ----------------------------------------------------------------------------- setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8, help="files per timed round of each row")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds per row, interleaved; the best counts")
    parser.add_argument("--batch-sizes", default="1,4,8")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--no-autocast-row", action="store_true", help="skip the reference + autocast row")
    parser.add_argument("--workdir", default=None, help="where the checkpoint and images are cached (default: $TAGLENS_BENCH_DIR or /tmp/taglens-bench)")
    args = parser.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    work = Path(args.workdir) if args.workdir else DEFAULT_WORKDIR
    folder = checkpoint("joytag", work)
    paths = make_photos(work / "photos-mixed", args.images, SIZES)
    tags = load_tags(folder)
    print(f"JoyTag full-size configuration, RANDOM weights (speeds only); {args.images} JPEGs from "
          f"500x750 to 1200x675, best of {args.rounds} interleaved rounds; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs", flush=True)

    probe = [Image.open(p).convert("RGB") for p in paths[:2]]
    reference = load_model(folder).eval()
    with torch.no_grad():
        ref_scores = torch.cat([reference(reference_prepare(im, 448)[None]).sigmoid() for im in probe]).numpy()

    # Each row: (name, dtype, batch, score difference on the probe images, warm-up, timed run).
    rows = [("reference (README, one by one)", "float32", 1, 0.0,
             lambda: reference_run(reference, tags, paths[:1], False),
             lambda: reference_run(reference, tags, paths, False))]
    if not args.no_autocast_row:
        with torch.no_grad(), torch.autocast("cpu"):
            diff = np.abs(torch.cat([reference(reference_prepare(im, 448)[None]).float().sigmoid()
                                     for im in probe]).numpy() - ref_scores).max()
        rows.append(("reference + CPU autocast", "bfloat16", 1, float(diff),
                     lambda: reference_run(reference, tags, paths[:1], True),
                     lambda: reference_run(reference, tags, paths, True)))
    for dtype in args.dtypes.split(","):
        tagger = Tagger.from_pretrained(folder, device="cpu", dtype=dtype)
        diff = float(np.abs(tagger.scores(np.stack([tagger.transform(im) for im in probe])) - ref_scores).max())
        for batch in batch_sizes:
            rows.append(("taglens", dtype, batch, diff,
                         lambda t=tagger, b=batch: t(paths[:b], THRESHOLD, batch_size=b),
                         lambda t=tagger, b=batch: t(paths, THRESHOLD, batch_size=b)))

    for row in rows:
        row[4]()  # warm-up: oneDNN builds its kernels per shape
    best = [0.0] * len(rows)
    for round_ in range(args.rounds):
        for i, (name, dtype, batch, _, _, run) in enumerate(rows):
            start = time.perf_counter()
            run()
            rate = args.images / (time.perf_counter() - start)
            best[i] = max(best[i], rate)
            print(f"  round {round_ + 1}: {name} {dtype} batch {batch}: {rate:.2f} images/s", flush=True)

    print()
    print(f"{'path':32} {'dtype':9} {'batch':>5} {'images/s':>9} {'vs reference':>13} {'max |score diff|':>17}")
    for (name, dtype, batch, diff, _, _), rate in zip(rows, best):
        print(f"{name:32} {dtype:9} {batch:>5} {rate:>9.2f} {rate / best[0]:>12.2f}x {diff:>17.1e}")


if __name__ == "__main__":
    main()
