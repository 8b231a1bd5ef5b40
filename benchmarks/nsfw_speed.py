"""NSFW classifier throughput: taglens against the transformers pipeline, as ratios.

The model is the full-size ViT-B/16 224 classifier of ``Falconsai/nsfw_image_detection``'s
shape with **random weights** (`taglens.testing.write_vit_classifier`), so no network is needed
and the scores mean nothing: this measures speed only. Inputs are photo-like 640x480 JPEG files
on disk, decoded by each side (taglens: the engine's decode threads; the pipeline: its own
loading), so the timings cover a whole file -> scores pass.

Baseline: ``transformers.pipeline("image-classification", top_k=None)`` in float32, called one
image at a time, measured in the same run. taglens runs float32 and bfloat16 at a few batch
sizes with its default full decode, and once with JPEG draft mode (``--draft``, opt-in). Before
timing, taglens's float32 scores are checked against the pipeline's (1e-5).

    python benchmarks/nsfw_speed.py                      # about a minute on 2 quiet CPU cores
    python benchmarks/nsfw_speed.py --images 256 --batch-sizes 1,16,64 --device cuda

Settings run interleaved (round-robin), each reporting its best round, so a busy machine
slows every setting alike and the ratios stay meaningful.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import DEFAULT_WORKDIR, checkpoint, make_photos  # noqa: E402  (puts src/ on sys.path)

from taglens.engine import EngineOptions  # noqa: E402
from taglens.io.decode import DecodeOptions  # noqa: E402
from taglens.models.vit_classifier import NsfwDetector

# taglens decodes in full by default, as the pipeline does; JPEG draft mode (docs/decoding.md) is
# faster on large JPEGs and moves the scores, so it is only timed, never compared.
DRAFT_DECODE = DecodeOptions(draft=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16, help="images per timed run of each setting")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds; each runs every setting once")
    parser.add_argument("--batch-sizes", default="1,8,16")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    folder = checkpoint("nsfw")
    paths = make_photos(DEFAULT_WORKDIR / "photos-640x480", args.images, [(640, 480)])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; "
          f"ViT-B/16 224 (random weights), {args.images} JPEG 640x480 files per run, "
          f"best of {args.rounds} interleaved rounds")

    pipe = pipeline("image-classification", model=str(folder), top_k=None, device=args.device)
    settings = [("transformers pipeline, one image at a time", "float32", 1, _pipeline_runner(pipe))]
    reference = [{d["label"]: d["score"] for d in pipe(p)} for p in paths]
    for dtype in args.dtypes.split(","):
        detector = NsfwDetector.from_pretrained(folder, device=args.device, dtype=dtype)
        if dtype == "float32":  # like for like: full decodes give the pipeline's scores
            records = detector(paths, options=EngineOptions(batch_size=8))
            diff = max(abs(r.nsfw.scores[k] - ref[k]) for r, ref in zip(records, reference) for k in ref)
            assert diff < 1e-5, f"taglens and the pipeline disagree by {diff}"
            print(f"float32 scores equal the pipeline's (max abs difference {diff:.1e})")
        for batch in batch_sizes:
            settings.append(("taglens", dtype, batch, _runner(detector, EngineOptions(batch_size=batch))))
        if dtype == "float32":
            batch = max(batch_sizes)
            options = EngineOptions(batch_size=batch, decode=DRAFT_DECODE)
            settings.append(("taglens --draft", dtype, batch, _runner(detector, options)))

    for _, _, batch, fn in settings:  # warm-up: one batch each
        fn(paths[:batch])
    times: list[list[float]] = [[] for _ in settings]
    for _ in range(args.rounds):  # interleaved, so every setting sees the same machine load
        for i, (*_, fn) in enumerate(settings):
            start = time.perf_counter()
            fn(paths)
            times[i].append(time.perf_counter() - start)

    rates = [args.images / min(t) for t in times]
    print(f"\n{'':44} {'dtype':9} {'batch':>5} {'images/s':>9} {'vs baseline':>11} {'(median)':>9}")
    for (name, dtype, batch, _), rate, t in zip(settings, rates, times):
        median = args.images / statistics.median(t)
        print(f"{name:44} {dtype:9} {batch:>5} {rate:9.2f} {rate / rates[0]:10.2f}x {median:9.2f}")


def _pipeline_runner(pipe):
    return lambda few: [pipe(p) for p in few]


def _runner(detector: NsfwDetector, options: EngineOptions):
    return lambda few: detector(few, options=options)


if __name__ == "__main__":
    main()
