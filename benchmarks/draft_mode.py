"""How far JPEG draft mode moves each model's input tensor, and how much decoding time it saves.

For large photo-like JPEGs, each default model's preprocessing (JoyTag 448 px, SigLIP
so400m-224, the ViT-B/16 224 classifier; recipes read from full-size checkpoint folders) is
applied to a full decode and to a draft decode (libjpeg's DCT scaling, the smallest scale that
keeps both sides >= the run's largest model input), and the tensors are compared. Two runs are
shown: with JoyTag in the run (target 448) and without it (target 224).

    python benchmarks/draft_mode.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import DEFAULT_WORKDIR, checkpoint, make_photos

from taglens.images import DecodeOptions, decode
from taglens.models.hf_preprocess import HfImageTransform
from taglens.models.joytag_preprocess import JoyTagTransform


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=6)
    args = parser.parse_args()
    sizes = [(4032, 3024), (3024, 4032), (2048, 1536), (6000, 4000)]
    paths = make_photos(DEFAULT_WORKDIR / "photos-large", args.images, sizes)
    transforms = {
        "joytag (448)": JoyTagTransform(448),
        "siglip so400m-224": HfImageTransform.from_pretrained(checkpoint("siglip")),
        "vit nsfw 224": HfImageTransform.from_pretrained(checkpoint("nsfw")),
    }
    print("| run's largest input | model | images drafted | scale | max abs diff | mean abs diff | "
          "decode ms full -> draft |")
    print("| ---: | --- | ---: | --- | ---: | ---: | ---: |")
    for target, names in ((448, list(transforms)), (224, list(transforms)[1:])):
        full_ms, draft_ms, scales = [], [], []
        diffs: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for path in paths:
            data = open(path, "rb").read()
            start = time.perf_counter()
            full = decode(data, DecodeOptions(draft=False, target_size=target))
            full_ms.append(1000 * (time.perf_counter() - start))
            start = time.perf_counter()
            drafted = decode(data, DecodeOptions(draft=True, target_size=target))
            draft_ms.append(1000 * (time.perf_counter() - start))
            scales.append(drafted.draft_scale)
            for name in names:
                diffs[name].append(np.abs(transforms[name](full.image) - transforms[name](drafted.image)))
        for name in names:
            values = np.concatenate([d.ravel() for d in diffs[name]])
            print(f"| {target} | {name} | {sum(s > 1 for s in scales)}/{len(paths)} | "
                  f"{', '.join(sorted({f'1/{s}' for s in scales}))} | {values.max():.3f} | {values.mean():.4f} | "
                  f"{np.median(full_ms):.0f} -> {np.median(draft_ms):.0f} |")
    print("\nDifferences are in normalised input units (SigLIP/ViT: 2/255 per grey level; JoyTag: ~1/(255*0.27)).")


if __name__ == "__main__":
    main()
