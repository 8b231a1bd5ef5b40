"""A CLIP checkpoint folder laid out like ``openai/clip-vit-*`` on the hub (random weights)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from taglens.testing.tokenizers import train_clip_bpe
from taglens.testing.weights import check_layout, resave_with_transformers, spread_parameters, write_json

PRESETS = {
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 patch_size=8, image_size=32, projection_dim=24),
}


def write_clip(folder: str | Path, *, preset: str = "tiny", seed: int = 0, image_size: int | None = None,
               patch_size: int | None = None, layout: str = "hub") -> Path:
    """Write config.json, model.safetensors, preprocessor_config.json (shortest-edge resize plus
    centre crop, CLIP's mean/std) and the BPE tokenizer files (vocab.json, merges.txt,
    tokenizer.json, tokenizer_config.json, special_tokens_map.json). ``image_size`` and
    ``patch_size`` replace the preset's; ``layout="transformers"`` writes what transformers 5's
    ``save_pretrained`` of the model and its processor writes."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    check_layout(layout)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = train_clip_bpe(folder)
    tokenizer = CLIPTokenizer.from_pretrained(folder, model_max_length=77)
    tokenizer.save_pretrained(folder)
    eot = {"content": "<|endoftext|>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    write_json(folder / "special_tokens_map.json", {
        "bos_token": dict(eot, content="<|startoftext|>"), "eos_token": eot, "pad_token": eot, "unk_token": eot,
    })

    shape = dict(PRESETS[preset])
    patch, side, projection = shape.pop("patch_size"), shape.pop("image_size"), shape.pop("projection_dim")
    patch, image_size = patch_size or patch, image_size or side
    config = CLIPConfig(
        text_config=dict(shape, vocab_size=len(vocab), max_position_embeddings=77,
                         bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                         pad_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(shape, patch_size=patch, image_size=image_size),
        projection_dim=projection,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    spread_parameters(model, seed)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
    model.save_pretrained(folder, safe_serialization=True)
    write_json(folder / "preprocessor_config.json", {
        "crop_size": {"height": image_size, "width": image_size},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_processor_type": "CLIPImageProcessor",
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"shortest_edge": image_size},
    })
    return resave_with_transformers(folder, model) if layout == "transformers" else folder
