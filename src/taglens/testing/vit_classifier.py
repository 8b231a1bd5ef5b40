"""A ViT image classifier folder laid out like ``Falconsai/nsfw_image_detection`` (random weights)."""

from __future__ import annotations

from pathlib import Path

import torch

from taglens.testing.weights import check_layout, resave_with_transformers, spread_parameters, write_json

PRESETS = {
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 patch_size=8, image_size=32),
    "vit-base-patch16-224": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                 num_attention_heads=12, patch_size=16, image_size=224),
}


def write_vit_classifier(
    folder: str | Path,
    *,
    preset: str = "tiny",
    labels: tuple[str, ...] = ("normal", "nsfw"),
    multi_label: bool = False,
    seed: int = 0,
    image_size: int | None = None,
    patch_size: int | None = None,
    layout: str = "hub",
) -> Path:
    """Write config.json (``ViTForImageClassification`` with ``id2label``), model.safetensors
    and preprocessor_config.json (bilinear, mean/std 0.5 in the Falconsai layout).

    ``multi_label`` sets ``problem_type: multi_label_classification``, which makes the
    transformers pipeline (and taglens) use a sigmoid per label instead of a softmax.
    ``image_size`` and ``patch_size`` replace the preset's; ``layout="transformers"`` writes what
    transformers 5's ``save_pretrained`` of the model and its image processor writes.
    """
    from transformers import ViTConfig, ViTForImageClassification

    check_layout(layout)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shape = dict(PRESETS[preset])
    shape.update({k: v for k, v in (("image_size", image_size), ("patch_size", patch_size)) if v})
    config = ViTConfig(
        **shape,
        id2label={i: name for i, name in enumerate(labels)},
        label2id={name: i for i, name in enumerate(labels)},
        problem_type="multi_label_classification" if multi_label else "single_label_classification",
    )
    torch.manual_seed(seed)
    model = ViTForImageClassification(config).eval()
    spread_parameters(model, seed)
    model.save_pretrained(folder, safe_serialization=True)
    write_json(folder / "preprocessor_config.json", {
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "ViTImageProcessor",
        "image_std": [0.5, 0.5, 0.5],
        "resample": 2,
        "rescale_factor": 1 / 255,
        "size": {"height": shape["image_size"], "width": shape["image_size"]},
    })
    return resave_with_transformers(folder, model) if layout == "transformers" else folder
