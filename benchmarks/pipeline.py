"""The three-model pass (tag + classify/embed + nsfw): taglens against the seed cards' way.

Full-size checkpoints of the three defaults with RANDOM weights, in the hub's layout
(benchmarks/common.py): JoyTag's released configuration (448 px, 91.5M parameters), SigLIP
so400m-patch14-224 (text length 16) and a ViT-B/16 224 classifier with labels normal/nsfw. The
figures are speeds and deviations, never predictions.

Rows, all on the same JPEG files in one process:

- seed cards: for every image and every model, what each model card shows, one image at a time,
  float32: JoyTag's README (``Image.open``, pad onto a white square, bicubic to 448, /255, CLIP
  mean/std, the model on a batch of one, sigmoid); SigLIP's card (``processor(text=labels,
  images=image, padding="max_length")``, ``model(**inputs)``, sigmoid of ``logits_per_image``);
  Falconsai's card (``pipeline("image-classification")`` on the opened image). The baseline, 1.00.
- taglens: ``ModelSet(...).jobs(TaskRequest(tag, classify, nsfw, embed))`` through
  ``taglens.engine.run`` (what ``taglens analyze`` does): decode once, batches, decode threads
  ahead of the models; per dtype and batch size, and with ``--compile`` (its compile time is
  printed apart and not counted in images/s).

Columns: images/s and its ratio to the seed cards; model GFLOP/s = the three models' FLOPs per
image (counted by torch's FlopCounterMode) x images / time spent in the models, beside the matmul
peak measured here for that dtype; the process's peak resident memory during the row; and the
largest score or embedding difference from the seed cards on the first images.

    python benchmarks/pipeline.py                      # ~6-10 minutes on 2 cores
    python benchmarks/pipeline.py --images 4 --no-compile
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import DEFAULT_WORKDIR, PeakRss, checkpoint, make_photos, matmul_peak_gflops
from PIL import Image

from taglens.engine import EngineOptions, run
from taglens.models.joytag_vit import load_model
from taglens.records import Record
from taglens.models.modelset import ModelSet, TaskRequest

LABELS = ("a photo of 2 cats", "a photo of 2 dogs")
TEMPLATE = "{}"  # the card passes full sentences; same prompts on both sides
CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]


# ----------------------------------------------------------------------------- the seed cards


class SeedCards:
    """The three model cards' code, one image at a time, float32."""

    def __init__(self, joytag: Path, siglip: Path, nsfw: Path):
        from transformers import AutoModel, AutoProcessor, pipeline

        self.joytag = load_model(joytag).eval()
        self.siglip = AutoModel.from_pretrained(siglip).eval()
        self.processor = AutoProcessor.from_pretrained(siglip)
        self.classifier = pipeline("image-classification", model=str(nsfw), device="cpu")

    def joytag_scores(self, image: Image.Image) -> np.ndarray:
        side = max(image.size)
        square = Image.new("RGB", (side, side), (255, 255, 255))
        square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        square = square.resize((448, 448), Image.BICUBIC)
        x = (torch.from_numpy(np.array(square)).permute(2, 0, 1) / 255.0 - CLIP_MEAN) / CLIP_STD
        return torch.sigmoid(self.joytag(x[None].float()))[0].numpy()

    def siglip_probs(self, image: Image.Image) -> np.ndarray:
        inputs = self.processor(text=list(LABELS), images=image, padding="max_length", return_tensors="pt")
        return torch.sigmoid(self.siglip(**inputs).logits_per_image)[0].numpy()

    def nsfw_scores(self, image: Image.Image) -> dict[str, float]:
        return {r["label"]: r["score"] for r in self.classifier(image, top_k=None)}

    def __call__(self, paths: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray, dict[str, float]]]:
        out = []
        with torch.no_grad():
            for path in paths:
                tags = self.joytag_scores(Image.open(path).convert("RGB"))
                probs = self.siglip_probs(Image.open(path))
                nsfw = self.nsfw_scores(Image.open(path))
                out.append((tags, probs, nsfw))
        return out


# ----------------------------------------------------------------------------- taglens


class TimedJob:
    """A job that adds the seconds spent in it to ``seconds``; everything else passes through."""

    def __init__(self, job: Any, clock: dict[str, float]):
        self._job, self._clock = job, clock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._job, name)

    def _timed(self, call: Any, value: Any) -> Any:
        start = time.perf_counter()
        try:
            return call(value)
        finally:
            self._clock["model"] += time.perf_counter() - start

    def __call__(self, pixels: np.ndarray) -> list[dict[str, Any]]:
        return self._timed(self._job, pixels)

    def forward(self, pixels: Any) -> Any:
        """The engine runs a job as ``finish(forward(pixels))`` (one forward shared by its model's jobs)."""
        return self._timed(self._job.forward, pixels)

    def finish(self, outputs: Any) -> list[dict[str, Any]]:
        return self._timed(self._job.finish, outputs)


def taglens_records(jobs: list, paths: Sequence[str], batch_size: int) -> list[Record]:
    records = list(run(paths, jobs, EngineOptions(batch_size=batch_size)))
    bad = [r for r in records if r.error]
    if bad:
        raise RuntimeError(f"{bad[0].path}: {bad[0].error}")
    return records


def deviation(records: list[Record], seed: list, tag_names: Sequence[str]) -> float:
    """Largest |difference| between taglens and the seed cards over all scores compared."""
    worst = 0.0
    index = {name: i for i, name in enumerate(tag_names)}
    for record, (tags, probs, nsfw) in zip(records, seed):
        for t in record.tags:
            worst = max(worst, abs(t.score - float(tags[index[t.tag]])))
        by_label = {x.label: x.score for x in record.labels}
        worst = max(worst, *(abs(by_label[label] - float(p)) for label, p in zip(LABELS, probs)))
        worst = max(worst, *(abs(record.nsfw.scores[k] - v) for k, v in nsfw.items()))
    return worst


def flops_per_image(models: ModelSet, paths: Sequence[str]) -> float:
    """FLOPs of the three image models for one image (matmuls and convolutions, as torch counts)."""
    from torch.utils.flop_counter import FlopCounterMode

    from taglens.io.decode import decode_image

    image = decode_image(paths[0])
    total = 0
    with torch.inference_mode():
        for family, forward in ((models.load_tagger(), lambda t, x: t.model(x)),
                                (models.load_embedder(), lambda e, x: e.model._image_features(x)),
                                (models.load_nsfw(), lambda n, x: n.classifier._logits(x))):
            transform = family.classifier.transform if hasattr(family, "classifier") else family.transform
            pixels = torch.from_numpy(transform(image)[None])
            counter = FlopCounterMode(display=False)
            with counter:
                forward(family, pixels)
            total += counter.get_total_flops()
    return float(total)


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=12, help="JPEGs (1024x768) per row")
    parser.add_argument("--float32-batches", default="1,8")
    parser.add_argument("--bfloat16-batches", default="1,8")
    parser.add_argument("--compile-batch", type=int, default=8, help="batch of the --compile row (0: no row)")
    parser.add_argument("--no-compile", action="store_true", help="skip the --compile row")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    args = parser.parse_args()

    folders = {kind: checkpoint(kind, args.workdir) for kind in ("joytag", "siglip", "nsfw")}
    paths = make_photos(args.workdir / "photos-1024x768", args.images)
    peaks = {"float32": matmul_peak_gflops(torch.float32), "bfloat16": matmul_peak_gflops(torch.bfloat16)}
    request = TaskRequest(tasks=("tag", "classify", "nsfw", "embed"), labels=LABELS, templates=(TEMPLATE,))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.images} JPEGs 1024x768; "
          f"matmul peak here: float32 {peaks['float32']:.0f} GFLOP/s, bfloat16 {peaks['bfloat16']:.0f} GFLOP/s",
          flush=True)

    rows: list[dict[str, Any]] = []
    seed = SeedCards(folders["joytag"], folders["siglip"], folders["nsfw"])
    seed(paths[:1])  # warm-up
    with PeakRss() as memory:
        start = time.perf_counter()
        seed_out = seed(paths)
        elapsed = time.perf_counter() - start
    rows.append(dict(name="seed cards (one by one)", dtype="float32", batch=1, rate=len(paths) / elapsed,
                     model_rate=None, rss=memory.peak, dev=0.0))
    del seed
    gc.collect()

    flops = None
    settings: list[tuple[str, int, bool]] = [("float32", int(b), False) for b in args.float32_batches.split(",") if b]
    settings += [("bfloat16", int(b), False) for b in args.bfloat16_batches.split(",") if b]
    if not args.no_compile and args.compile_batch:
        settings.append(("float32", args.compile_batch, True))
    models = None
    for dtype, batch, compiled in settings:
        if models is None or (models.dtype, models.compile) != (dtype, compiled):
            models = None  # one model set in memory at a time, so peak RSS is this row's
            gc.collect()
            models = ModelSet(tagger=folders["joytag"], siglip=folders["siglip"], nsfw_model=folders["nsfw"],
                              dtype=dtype, compile=compiled)
        clock = {"model": 0.0}
        jobs = [TimedJob(j, clock) for j in models.jobs(request)]
        if flops is None:
            flops = flops_per_image(models, paths)
        warm = time.perf_counter()
        taglens_records(jobs, paths[:batch], batch)  # loads kernels (and compiles) for this shape
        if compiled and batch < len(paths) and len(paths) % batch:
            taglens_records(jobs, paths[:len(paths) % batch], batch)  # the last batch's shape too
        warm = time.perf_counter() - warm
        clock["model"] = 0.0
        with PeakRss() as memory:
            start = time.perf_counter()
            records = taglens_records(jobs, paths, batch)
            elapsed = time.perf_counter() - start
        names = models.load_tagger().tags
        rows.append(dict(name="taglens" + (f" --compile (compiling took {warm:.0f} s)" if compiled else ""),
                         dtype=dtype, batch=batch, rate=len(paths) / elapsed,
                         model_rate=flops * len(paths) / clock["model"] / 1e9, rss=memory.peak,
                         dev=deviation(records, seed_out, names)))
        print(f"  done: {rows[-1]['name']} {dtype} batch {batch}: {rows[-1]['rate']:.2f} images/s", flush=True)

    base = rows[0]["rate"]
    print(f"\nFLOPs per image, three models: {flops / 1e9:.0f} GFLOP\n")
    print("| path | dtype | batch | images/s | vs seed cards | model GFLOP/s (% of matmul peak) | peak RSS | "
          "max abs diff vs seed cards |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        model = "" if row["model_rate"] is None else \
            f"{row['model_rate']:.0f} ({100 * row['model_rate'] / peaks[row['dtype']]:.0f}%)"
        print(f"| {row['name']} | {row['dtype']} | {row['batch']} | {row['rate']:.2f} | {row['rate'] / base:.2f}x | "
              f"{model} | {row['rss'] / 2**30:.1f} GiB | {row['dev']:.1e} |")


if __name__ == "__main__":
    main()
