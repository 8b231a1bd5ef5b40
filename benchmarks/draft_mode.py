"""How far JPEG draft mode (``--draft``, opt-in) moves each model's input and scores, and how much
decoding time it saves.

For phone-sized photo-like JPEGs (4000x3000 and the like), each default model's preprocessing and
forward pass runs on a full decode and on a draft decode (libjpeg's DCT scaling, the smallest
scale that keeps both sides >= the run's largest model input), and the inputs and the scores are
compared. Two runs: with JoyTag in the run (target 448) and without it (target 224).

The models are full-size checkpoints of the default models' shapes (JoyTag's released config,
SigLIP so400m-patch14-224, a ViT-B/16 224 classifier) with RANDOM weights (`benchmarks/common.py`,
`taglens.testing`): the score deviations are what these networks do with the moved pixels, not
what the trained checkpoints would do, and no score here is a prediction.

    python benchmarks/draft_mode.py                 # ~5 minutes on 2 CPU cores (first run builds checkpoints)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import DEFAULT_WORKDIR, checkpoint, make_photos

from taglens.io.decode import DecodeOptions, decode
from taglens.models.vit_classifier import NsfwDetector
from taglens.models.joytag import Tagger
from taglens.models.siglip import Embedder

LABELS = ["a cat", "a dog", "a car", "a beach", "a person", "food", "a building", "text"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=6)
    args = parser.parse_args()
    sizes = [(4000, 3000), (3000, 4000), (4032, 3024), (6000, 4000)]
    paths = make_photos(DEFAULT_WORKDIR / "photos-phone", args.images, sizes)
    tagger = Tagger.from_pretrained(checkpoint("joytag"), device="cpu")
    embedder = Embedder.from_pretrained(checkpoint("siglip"), device="cpu")
    detector = NsfwDetector.from_pretrained(checkpoint("nsfw"), device="cpu")
    labels = embedder.label_embeddings(LABELS)
    # name -> (transform, pixels -> (B, N) scores, what the scores are)
    models = {
        "JoyTag 448": (tagger.job().transform, tagger.scores, "5813 tag sigmoids"),
        "SigLIP so400m-224": (embedder.transform, lambda x: embedder.model.scores(embedder.model.encode_images(x),
                                                                                  labels),
                              f"{len(LABELS)} zero-shot sigmoids"),
        "SigLIP so400m-224 embedding": (embedder.transform, embedder.model.encode_images, "unit vector (1 - cos)"),
        "ViT-B/16 224 classifier": (detector.classifier.transform, detector.classifier.scores, "2-way softmax"),
    }
    print(f"{len(paths)} JPEGs ({', '.join(sorted({p.rsplit('_', 1)[-1][:-4] for p in paths}))}), quality 90; "
          "RANDOM-weight full-size checkpoints\n")
    print("| run's largest input | model | scale used | input max / mean abs diff | scores | score max abs diff "
          "| score mean abs diff | tags flipped at 0.4 | decode ms full -> draft |")
    print("| ---: | --- | --- | --- | --- | ---: | ---: | ---: | ---: |")
    for target, names in ((448, list(models)), (224, list(models)[1:])):
        full_ms, draft_ms, scales = [], [], []
        inputs: dict[str, list[np.ndarray]] = {n: [] for n in names}
        scores: dict[str, list[np.ndarray]] = {n: [] for n in names}
        flipped = 0
        for path in paths:
            data = open(path, "rb").read()
            start = time.perf_counter()
            full = decode(data, DecodeOptions(target_size=target))
            full_ms.append(1000 * (time.perf_counter() - start))
            start = time.perf_counter()
            drafted = decode(data, DecodeOptions(draft=True, target_size=target))
            draft_ms.append(1000 * (time.perf_counter() - start))
            scales.append(drafted.draft_scale)
            for name in names:
                transform, run, _ = models[name]
                pixels = np.stack([transform(full.image), transform(drafted.image)])
                inputs[name].append(np.abs(pixels[0] - pixels[1]))
                out = np.asarray(run(pixels), np.float64)
                if name.endswith("embedding"):
                    scores[name].append(np.array([1.0 - float(out[0] @ out[1])]))
                else:
                    scores[name].append(np.abs(out[0] - out[1]))
                if name.startswith("JoyTag"):
                    flipped += int(((out[0] > 0.4) != (out[1] > 0.4)).sum())
        for name in names:
            moved = np.concatenate([d.ravel() for d in inputs[name]])
            deltas = np.concatenate(scores[name])
            flips = f"{flipped} of {len(paths) * 5813}" if name.startswith("JoyTag") else ""
            print(f"| {target} | {name} | {', '.join(sorted({f'1/{s}' for s in scales}))} | "
                  f"{moved.max():.3f} / {moved.mean():.4f} | {models[name][2]} | {deltas.max():.2e} | "
                  f"{deltas.mean():.2e} | {flips} | {np.median(full_ms):.0f} -> {np.median(draft_ms):.0f} |")
    print("\nInput differences are in normalised input units (SigLIP/ViT: 2/255 per grey level; JoyTag: "
          "~1/(255*0.27)).")


if __name__ == "__main__":
    main()
