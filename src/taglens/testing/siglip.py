"""A SigLIP checkpoint folder laid out like ``google/siglip-*`` on the hub (random weights)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from taglens.testing.tokenizers import train_sentencepiece
from taglens.testing.weights import check_layout, resave_with_transformers, spread_parameters, write_json

# Tower shapes: "tiny" for tests; "so400m-patch14-224" is the default checkpoint's real shape.
PRESETS = {
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 patch_size=14, image_size=56),
    "so400m-patch14-224": dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                               num_attention_heads=16, patch_size=14, image_size=224),
}


def write_siglip(
    folder: str | Path,
    *,
    preset: str = "tiny",
    text_length: int = 16,
    vocab_size: int | None = None,
    resample: int = 3,
    seed: int = 0,
    image_size: int | None = None,
    patch_size: int | None = None,
    layout: str = "hub",
) -> Path:
    """Write config.json, model.safetensors, preprocessor_config.json and the tokenizer files.

    ``text_length`` is both the text tower's ``max_position_embeddings`` and the tokenizer's
    ``model_max_length``: 16 like so400m-patch14-224, 64 like most other SigLIP checkpoints.
    ``image_size`` and ``patch_size`` replace the preset's. ``layout="transformers"`` writes
    instead what transformers 5's ``save_pretrained`` of the model and its processor writes
    (``processor_config.json``, no ``preprocessor_config.json``).
    """
    from transformers import SiglipConfig, SiglipModel

    check_layout(layout)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shape = dict(PRESETS[preset])
    patch, side = shape.pop("patch_size"), shape.pop("image_size")
    patch, image_size = patch_size or patch, image_size or side
    spm_vocab = 100
    config = SiglipConfig(
        text_config=dict(shape, vocab_size=vocab_size or (32000 if preset != "tiny" else spm_vocab),
                         max_position_embeddings=text_length, pad_token_id=1, eos_token_id=1,
                         bos_token_id=None),
        vision_config=dict(shape, patch_size=patch, image_size=image_size),
    )
    torch.manual_seed(seed)
    model = SiglipModel(config).eval()
    spread_parameters(model, seed)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-1.0)
    model.save_pretrained(folder, safe_serialization=True)

    write_json(folder / "preprocessor_config.json", {
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "SiglipImageProcessor",
        "image_std": [0.5, 0.5, 0.5],
        "processor_class": "SiglipProcessor",
        "resample": resample,
        "rescale_factor": 1 / 255,
        "size": {"height": image_size, "width": image_size},
    })
    train_sentencepiece(folder / "spiece.model", vocab_size=spm_vocab)
    special = {
        "eos_token": {"content": "</s>", "lstrip": True, "normalized": False, "rstrip": True, "single_word": False},
        "pad_token": {"content": "</s>", "lstrip": True, "normalized": False, "rstrip": True, "single_word": False},
        "unk_token": {"content": "<unk>", "lstrip": True, "normalized": False, "rstrip": True, "single_word": False},
    }
    write_json(folder / "special_tokens_map.json", special)
    write_json(folder / "tokenizer_config.json", {
        "added_tokens_decoder": {
            "1": dict(special["eos_token"], special=True),
            "2": dict(special["unk_token"], special=True),
        },
        "additional_special_tokens": [],
        "clean_up_tokenization_spaces": True,
        "do_lower_case": True,
        "eos_token": "</s>",
        "model_input_names": ["input_ids"],
        "model_max_length": text_length,
        "pad_token": "</s>",
        "processor_class": "SiglipProcessor",
        "sp_model_kwargs": {},
        "tokenizer_class": "SiglipTokenizer",
        "unk_token": "<unk>",
    })
    return resave_with_transformers(folder, model) if layout == "transformers" else folder
