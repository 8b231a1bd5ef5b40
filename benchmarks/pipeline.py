"""The three-model pass (tag + classify/embed + nsfw): taglens against the seed cards' way, per CPU route.

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
  ahead of the models. float32 on torch's default Linear route and on the oneDNN route (forced
  with ``TAGLENS_FLOAT32_ROUTE``; the probe's own choice for these models is printed and marked),
  the probe's route again with the old min(4, cores) decode threads (the thread sizing rule against
  the old default), bfloat16 and int8; optionally ``--compile`` (compile time printed apart).

The rows take turns, ``--repeats`` times (interleaved repetitions: a machine shared with other
work slows every row alike, which matters on this project's 2-core machine shared with other
work), and each row's best repetition is kept. The defaults (4 images, batch 4, 2 repetitions)
took 11.8 minutes there under load, most of it loading four sets of full-size models.

Columns: images/s and its ratio to the seed cards; the matmul route the models' Linear layers took
and that route's peak (GFLOP/s of a 2048^3 product through it, measured here); model GFLOP/s = the
three models' FLOPs per image (counted by torch's FlopCounterMode) x images / time spent in the
models, and its share of the route's peak; the largest tag / label / NSFW
score difference from the seed cards, and the lowest embedding cosine to taglens float32 (torch's
default route).

    python benchmarks/pipeline.py                      # ~12 minutes on 2 shared cores
    python benchmarks/pipeline.py --images 2 --batch 2 --repeats 1
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import DEFAULT_WORKDIR, checkpoint, make_photos
from PIL import Image

from taglens.engine import EngineOptions, cpu_probe, cpu_routes, run, threads
from taglens.models.joytag_vit import load_model
from taglens.models.modelset import ModelSet, TaskRequest
from taglens.records import Record

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
    """A job whose forward passes (the engine's shared one, or the whole job) add their seconds to
    ``clock["model"]``; everything else passes through."""

    def __init__(self, job: Any, clock: dict[str, float]):
        self._job, self._clock = job, clock

    def __getattr__(self, name: str) -> Any:
        """The engine calls ``launch`` (or ``forward``) then ``finish``: those are timed (on the CPU
        ``launch`` computes at once); everything else passes through."""
        value = getattr(self._job, name)
        if name in ("launch", "forward", "finish"):
            return lambda arg: self._timed(value, arg)
        return value

    def _timed(self, run: Any, pixels: Any) -> Any:
        start = time.perf_counter()
        try:
            return run(pixels)
        finally:
            self._clock["model"] += time.perf_counter() - start

    def __call__(self, pixels: np.ndarray) -> list[dict[str, Any]]:
        return self._timed(self._job, pixels)


def taglens_records(jobs: list, paths: Sequence[str], batch_size: int, workers: int | None = None) -> list[Record]:
    extra = {"workers": workers} if workers else {}
    records = list(run(paths, jobs, EngineOptions(batch_size=batch_size, **extra)))
    bad = [r for r in records if r.error]
    if bad:
        raise RuntimeError(f"{bad[0].path}: {bad[0].error}")
    return records


def deviation(records: list[Record], seed: list, tag_names: Sequence[str]) -> dict[str, float]:
    """Largest |difference| between taglens and the seed cards, per kind of score."""
    worst = {"tags": 0.0, "labels": 0.0, "nsfw": 0.0}
    index = {name: i for i, name in enumerate(tag_names)}
    for record, (tags, probs, nsfw) in zip(records, seed):
        for t in record.tags:
            worst["tags"] = max(worst["tags"], abs(t.score - float(tags[index[t.tag]])))
        by_label = {x.label: x.score for x in record.labels}
        worst["labels"] = max(worst["labels"], *(abs(by_label[label] - float(p)) for label, p in zip(LABELS, probs)))
        worst["nsfw"] = max(worst["nsfw"], *(abs(record.nsfw.scores[k] - v) for k, v in nsfw.items()))
    return worst


def lowest_cosine(records: list[Record], reference: list[Record]) -> float:
    """The lowest cosine between each image's embedding and the reference's (both L2-normalised)."""
    return min(float(np.dot(np.asarray(r.embedding), np.asarray(ref.embedding)))
               for r, ref in zip(records, reference))


# ----------------------------------------------------------------------------- routes and their peaks


def route_peaks(n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of an n x n x n product through each route (best of ``repeats``, taking turns)."""
    generator = torch.Generator().manual_seed(0)
    a, w = torch.randn(n, n, generator=generator), torch.randn(n, n, generator=generator) / n**0.5
    packed = cpu_routes.pack_weight(w)
    a16, w16 = a.bfloat16(), w.bfloat16()
    engine = cpu_probe.int8_engine(cpu_probe.int8_offer())
    int8 = cpu_routes.quantize_int8(torch.nn.Sequential(torch.nn.Linear(n, n, bias=False)).eval(), engine=engine)
    candidates = {"torch default float32": lambda: torch.nn.functional.linear(a, w),
                  "oneDNN float32 prepacked": lambda: cpu_routes.onednn_linear(a, packed, None),
                  "bfloat16": lambda: torch.nn.functional.linear(a16, w16),
                  "dynamic int8": lambda: int8(a)}
    with torch.inference_mode():
        best = cpu_probe.best_interleaved(candidates, repeats)
    return {name: 2 * n**3 / seconds / 1e9 for name, seconds in best.items()}


def route_of(models: ModelSet) -> str:
    """The route name (a key of `route_peaks`) the models' Linear layers took."""
    route = models.load_tagger().model.matmul_route
    for prefix, name in (("oneDNN", "oneDNN float32 prepacked"), ("dynamic int8", "dynamic int8"),
                         ("torch default float32", "torch default float32")):
        if route.startswith(prefix):
            return name
    return "bfloat16" if "bfloat16" in route else route


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


@dataclass
class Row:
    name: str
    dtype: str
    batch: int
    route: str = "torch default float32"
    forced_route: str | None = None
    """TAGLENS_FLOAT32_ROUTE while its models load."""
    workers: int | None = None
    compiled: bool = False
    models: ModelSet | None = None
    jobs: list = field(default_factory=list)
    clock: dict[str, float] = field(default_factory=lambda: {"model": 0.0})
    rate: float = 0.0
    model_seconds: float = math.inf
    dev: dict[str, float] | None = None
    cosine: float | None = None
    records: list[Record] | None = None
    note: str = ""


def load_row(row: Row, folders: dict[str, Path], paths: Sequence[str], request: TaskRequest) -> None:
    if row.models is not None:  # sharing another row's models
        row.jobs = [TimedJob(j, row.clock) for j in row.models.jobs(request)]
        return
    saved = os.environ.get(cpu_probe.ROUTE_ENV)
    if row.forced_route:
        os.environ[cpu_probe.ROUTE_ENV] = row.forced_route
    try:
        row.models = ModelSet(tagger=folders["joytag"], siglip=folders["siglip"], nsfw_model=folders["nsfw"],
                              dtype=row.dtype, compile=row.compiled)
        row.jobs = [TimedJob(j, row.clock) for j in row.models.jobs(request)]
        row.route = route_of(row.models)
        warm = time.perf_counter()
        taglens_records(row.jobs, paths[:row.batch], row.batch)  # loads kernels (and compiles) for this shape
        if row.compiled and row.batch < len(paths) and len(paths) % row.batch:
            taglens_records(row.jobs, paths[:len(paths) % row.batch], row.batch)  # the last batch's shape
        if row.compiled:
            row.note = f" (compiling took {time.perf_counter() - warm:.0f} s)"
    finally:
        if saved is None:
            os.environ.pop(cpu_probe.ROUTE_ENV, None)
        else:
            os.environ[cpu_probe.ROUTE_ENV] = saved


def time_row(row: Row, paths: Sequence[str]) -> list[Record]:
    row.clock["model"] = 0.0
    start = time.perf_counter()
    records = taglens_records(row.jobs, paths, row.batch, row.workers)
    elapsed = time.perf_counter() - start
    row.rate = max(row.rate, len(paths) / elapsed)
    row.model_seconds = min(row.model_seconds, row.clock["model"])
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4, help="JPEGs (1024x768) per row")
    parser.add_argument("--batch", type=int, default=4, help="taglens batch size")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repetitions of every row")
    parser.add_argument("--compile", action="store_true", help="add a float32 --compile row (minutes)")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    args = parser.parse_args()

    folders = {kind: checkpoint(kind, args.workdir) for kind in ("joytag", "siglip", "nsfw")}
    paths = make_photos(args.workdir / "photos-1024x768", args.images)
    request = TaskRequest(tasks=("tag", "classify", "nsfw", "embed"), labels=LABELS, templates=(TEMPLATE,))
    sizing = threads.sizing("cpu")
    old_workers = max(1, min(4, os.cpu_count() or 1))
    peaks = route_peaks()
    print(f"CPU: {cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} torch threads; "
          f"{args.images} JPEGs 1024x768; decode threads: {sizing.decode_workers} by the sizing rule "
          f"(old default {old_workers})", flush=True)
    print("matmul peaks here (2048^3): " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()), flush=True)

    seed = SeedCards(folders["joytag"], folders["siglip"], folders["nsfw"])
    seed(paths[:1])  # warm-up
    seed_row = Row("seed cards (one by one)", "float32", 1)
    batch = args.batch
    rows = [Row("taglens, torch default route", "float32", batch, forced_route="default"),
            Row("taglens, oneDNN route", "float32", batch, forced_route="onednn")]
    probe_choice = None
    for row in rows:
        load_row(row, folders, paths, request)
        if probe_choice is None:
            shapes = sum((cpu_routes.linear_shapes(net) for net in networks(row.models)), Counter())
            probe_choice = cpu_probe.float32_route(shapes)
            print(f"the probe's float32 route for these models: {probe_choice.chosen} ({probe_choice.line()})",
                  flush=True)
    chosen = rows[1] if probe_choice.chosen == "onednn" else rows[0]
    chosen.name += " (the probe's choice)"
    old = Row(f"taglens, the probe's route, {old_workers} decode threads (old default)", "float32", batch,
              route=chosen.route, workers=old_workers, models=chosen.models)
    rows += [old, Row("taglens", "bfloat16", batch), Row("taglens", "int8", batch)]
    if args.compile:
        rows.append(Row("taglens --compile", "float32", batch, compiled=True))
    for row in rows[2:]:
        load_row(row, folders, paths, request)
    flops = flops_per_image(rows[0].models, paths)

    seed_out = None
    for repeat in range(args.repeats):
        if repeat:  # the peaks take turns with the rows too: each route's best over the run
            peaks = {name: max(peaks[name], value) for name, value in route_peaks().items()}
        start = time.perf_counter()
        seed_out = seed(paths)
        elapsed = time.perf_counter() - start
        seed_row.rate = max(seed_row.rate, len(paths) / elapsed)
        for row in rows:
            records = time_row(row, paths)
            row.records = row.records or records
        print(f"  repetition {repeat + 1}/{args.repeats}: seed cards {len(paths) / elapsed:.2f} images/s, "
              + ", ".join(f"{row.dtype} {row.route} {row.rate:.2f}" for row in rows), flush=True)
    reference = rows[0].records
    for row in rows:
        row.dev = deviation(row.records, seed_out, row.models.load_tagger().tags)
        row.cosine = lowest_cosine(row.records, reference)

    base = seed_row.rate
    print("matmul peaks, best over the run: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()))
    print(f"\nFLOPs per image, three models: {flops / 1e9:.0f} GFLOP; batch {batch}; best of {args.repeats} "
          "interleaved repetitions\n")
    print("| path | dtype | matmul route (peak GFLOP/s) | images/s | vs seed cards | model GFLOP/s (% of route peak) "
          "| max diff vs seed cards: tags / labels / nsfw | min embedding cosine vs float32 |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {seed_row.name} | float32 | torch default float32 ({peaks['torch default float32']:.0f}) | {base:.2f} "
          f"| 1.00x | | 0 | |")
    for row in rows:
        peak = peaks.get(row.route, math.nan)
        model_rate = flops * len(paths) / row.model_seconds / 1e9
        dev = " / ".join(f"{row.dev[k]:.1e}" for k in ("tags", "labels", "nsfw"))
        print(f"| {row.name}{row.note} | {row.dtype} | {row.route} ({peak:.0f}) | {row.rate:.2f} | "
              f"{row.rate / base:.2f}x | {model_rate:.0f} ({100 * model_rate / peak:.0f}%) | "
              f"{dev} | {row.cosine:.6f} |")


def networks(models: ModelSet) -> list[torch.nn.Module]:
    return [models.load_tagger().model, models.load_embedder().model.model, models.load_nsfw().classifier.model]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else ():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    import platform

    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
