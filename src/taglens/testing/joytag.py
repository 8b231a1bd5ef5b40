"""A JoyTag checkpoint folder laid out like ``fancyfeast/joytag`` on the hub (random weights).

``config.json`` in the released file's style (its key order, tab indents, no trailing newline),
``model.safetensors`` with the released tensor names (float32, no prefix, no buffers) and
``top_tags.txt`` with made-up Danbooru-style names, including emoticons and parentheses.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

PRESETS = {
    # The values of tests/fixtures/joytag-tiny (a 4x4 token grid, 37 tags).
    "tiny": {
        "class": "ViT", "num_blocks": 2, "patch_size": 16, "d_model": 32, "mlp_dim": 64, "num_heads": 4,
        "stochdepth_rate": 0.05, "use_sine": True,
        "cnn_stem": "conv:c=8;ln;relu;conv:c=8;ln;relu;conv:c=16;ln;relu;conv:c=16;ln;relu;conv:c=32,s=1,k=1,p=0",
        "image_size": 64, "n_tags": 37, "loss_type": "focal2",
    },
    # fancyfeast/joytag's own config.json values.
    "released": {
        "class": "ViT", "num_blocks": 12, "patch_size": 16, "d_model": 768, "mlp_dim": 3072, "num_heads": 12,
        "stochdepth_rate": 0.05, "use_sine": True,
        "cnn_stem": "conv:c=64;ln;relu;conv:c=128;ln;relu;conv:c=256;ln;relu;conv:c=512;ln;relu;conv:c=768,s=1,k=1,p=0",
        "image_size": 448, "n_tags": 5813, "loss_type": "focal2",
    },
}

# Made-up names in Danbooru's style: underscores, emoticons, parentheses. Not JoyTag's tag list.
SAMPLE_TAGS = (
    "1girl", "solo", "long_hair", "smile", "open_mouth", "outdoors", "sky", "cloud", "tree", "cat", "dog",
    "no_humans", "simple_background", "white_background", "photoshop_(medium)", "traditional_media",
    ":d", "^_^", ">_<", ":3", "!?", "...", "+_+", "=_=", ";)", "c:", "o_o", "0_0", "(o)_(o)", "||_||",
    "1boy", "multiple_girls", "blue_eyes", "english_text", "realistic", "food", "sweat",
)


def tag_names(n: int) -> list[str]:
    """``n`` distinct made-up tag names: `SAMPLE_TAGS` first, then ``made_up_tag_0037`` ..."""
    return list(SAMPLE_TAGS[:n]) + [f"made_up_tag_{i:04d}" for i in range(len(SAMPLE_TAGS), n)]


def write_joytag(
    folder: str | Path,
    preset: str = "tiny",
    seed: int = 0,
    *,
    extra_head_rows: int = 0,
    image_size: int | None = None,
) -> Path:
    """Write config.json, model.safetensors and top_tags.txt for a random JoyTag model.

    Weights are spread so that mistakes cannot hide (as in the reference fixture): matrices
    ~ N(0, 1/fan_in), LayerNorm gains 1 + 0.25 N(0, 1), biases 0.1 N(0, 1), layer scales
    0.3 + 0.1 N(0, 1), the head times 4. ``extra_head_rows=9`` writes the older head layout
    (rating and score rows after the tags). ``image_size`` replaces the preset's (a multiple of
    the stem's stride, 16).
    """
    from safetensors.torch import save_file

    from taglens.models.joytag_vit import JoyTagConfig, expected_shapes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    raw = dict(PRESETS[preset]) | ({"image_size": image_size} if image_size else {})
    config = JoyTagConfig.from_dict(raw)
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in expected_shapes(config).items():
        if name.startswith("head.") and extra_head_rows:
            shape = (shape[0] + extra_head_rows, *shape[1:])
        noise = torch.randn(shape, generator=generator, dtype=torch.float32)
        if len(shape) >= 2:
            value = noise / math.sqrt(math.prod(shape[1:]))
            if name == "head.weight":
                value = value * 4
        elif name.endswith(".skip"):
            value = 0.3 + 0.1 * noise
        elif "norm" in name and name.endswith(".weight"):
            value = 1 + 0.25 * noise
        else:
            value = 0.1 * noise
        tensors[name] = value.contiguous()
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(raw, indent="\t"), encoding="utf-8")
    (folder / "top_tags.txt").write_text("\n".join(tag_names(config.n_tags)), encoding="utf-8")
    return folder
