"""The default path on large JPEGs gives the reference implementations' numbers (1e-5): a JPEG at
least 8x a tiny model's input, and a phone-sized 4000x3000 one under the 224 px recipe (JPEG draft
mode, which would decode these at 1/2..1/8 scale, is off unless asked for)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from taglens.io.decode import DecodeOptions, decode
from taglens.models.joytag_vit import load_model
from taglens.models.vit_classifier import NsfwDetector
from taglens.models.joytag import Tagger
from taglens.testing import write_joytag, write_siglip, write_vit_classifier
from taglens.models.siglip import Embedder, ZeroShotClassifier

from ..cli.installed import run_taglens
from .test_joytag_preprocess import reference_tensor

LABELS = ["a cat", "a dog", "a car"]


def photo_jpeg(path, width: int, height: int, seed: int) -> str:
    """A photo-like JPEG: gradients, blocks and sensor noise, quality 90."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    for _ in range(6):
        x0, y0 = rng.integers(0, width - width // 5), rng.integers(0, height - height // 5)
        base[y0:y0 + height // 5, x0:x0 + width // 5] = rng.integers(0, 256, 3)
    base += rng.normal(0, 8, base.shape).astype(np.float32)
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(path, quality=90)
    return str(path)


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    root = tmp_path_factory.mktemp("large-jpegs")
    return {"large": photo_jpeg(root / "large_1024x768.jpg", 1024, 768, 1),   # >= 12x every tiny input
            "phone": photo_jpeg(root / "phone_4000x3000.jpg", 4000, 3000, 2)}


@pytest.fixture(scope="module")
def checkpoints_224(tmp_path_factory):
    """Tiny towers under the real 224 px recipes (patch 32: 7x7 tokens), and JoyTag at 448 px."""
    root = tmp_path_factory.mktemp("checkpoints-224")
    return {"vit224": write_vit_classifier(root / "vit224", image_size=224, patch_size=32, seed=7),
            "siglip224": write_siglip(root / "siglip224", image_size=224, patch_size=32, seed=8),
            "joytag448": write_joytag(root / "joytag448", image_size=448, seed=9)}


def folders(checkpoints, checkpoints_224):
    return checkpoints | checkpoints_224


def full_decode(path: str) -> Image.Image:
    """How transformers' pipelines load an image file (transformers.image_utils.load_image)."""
    from transformers.image_utils import load_image

    return load_image(path)


def test_the_default_decode_is_full(jpegs):
    for path, target in ((jpegs["large"], 32), (jpegs["phone"], 224)):
        decoded = decode(path, DecodeOptions(target_size=target))
        assert decoded.draft_scale == 1
        assert np.array_equal(np.asarray(decoded.image), np.asarray(full_decode(path)))
        # What draft mode would have done to this file (it is what the default avoids):
        assert decode(path, DecodeOptions(target_size=target, draft=True)).draft_scale >= 4


@pytest.mark.parametrize("name, jpeg", [("vit", "large"), ("vit224", "phone"), ("vit224", "large")])
def test_nsfw_equals_the_image_classification_pipeline(checkpoints, checkpoints_224, jpegs, name, jpeg):
    from transformers import pipeline

    folder = folders(checkpoints, checkpoints_224)[name]
    expected = {d["label"]: d["score"] for d in pipeline("image-classification", model=str(folder), top_k=None)(
        jpegs[jpeg])}
    [record] = NsfwDetector.from_pretrained(folder, device="cpu")(jpegs[jpeg])
    assert record.error is None and set(record.nsfw.scores) == set(expected)
    for label, score in expected.items():
        assert abs(record.nsfw.scores[label] - score) < 1e-5


@pytest.mark.parametrize("name, jpeg", [("siglip16", "large"), ("siglip224", "phone"), ("clip", "large"),
                                        ("siglip16_tf5", "phone")])
def test_image_features_and_zero_shot_equal_transformers(checkpoints, checkpoints_224, jpegs, name, jpeg):
    from transformers import AutoModel, AutoProcessor

    folder = folders(checkpoints, checkpoints_224)[name]
    model = AutoModel.from_pretrained(folder, use_safetensors=True).eval()
    processor = AutoProcessor.from_pretrained(folder)
    image = full_decode(jpegs[jpeg])
    with torch.no_grad():
        features = model.get_image_features(**processor(images=image, return_tensors="pt")).pooler_output
    features = torch.nn.functional.normalize(features, dim=-1).numpy()

    embedder = Embedder.from_pretrained(folder, device="cpu")
    assert np.abs(embedder.embed_images([jpegs[jpeg]]) - features).max() < 1e-5
    if embedder.kind != "siglip":
        return
    prompts = [f"This is a photo of {label}." for label in LABELS]
    inputs = processor(text=prompts, images=image, padding="max_length", max_length=embedder.model.text_length,
                       return_tensors="pt")
    with torch.no_grad():
        expected = torch.sigmoid(model(**inputs).logits_per_image)[0].numpy()
    [record] = ZeroShotClassifier(embedder).classify([jpegs[jpeg]], LABELS)
    got = {x.label: x.score for x in record.labels}
    assert np.abs(np.array([got[label] for label in LABELS]) - expected).max() < 1e-5


@pytest.mark.parametrize("name, jpeg", [("joytag", "large"), ("joytag", "phone"), ("joytag448", "phone")])
def test_tags_equal_the_joytag_reference_recipe(checkpoints, checkpoints_224, jpegs, name, jpeg):
    """The reference recipe (a full decode, white square, PIL bicubic, CLIP mean/std: see
    test_joytag_preprocess) into the model that reproduces the reference fixture stage by stage."""
    folder = folders(checkpoints, checkpoints_224)[name]
    tagger = Tagger.from_pretrained(folder, device="cpu")
    size = json.loads((folder / "config.json").read_text())["image_size"]
    with torch.no_grad():
        logits = load_model(folder)(torch.from_numpy(reference_tensor(full_decode(jpegs[jpeg]), size))[None])
    expected = dict(zip(tagger.tags, torch.sigmoid(logits[0]).numpy()))
    [record] = tagger(jpegs[jpeg], threshold=0.0)
    assert record.error is None and len(record.tags) == len(expected)
    assert max(abs(t.score - expected[t.tag]) for t in record.tags) < 1e-5


def test_the_cli_default_equals_the_pipeline(checkpoints_224, jpegs):
    from transformers import pipeline

    folder = checkpoints_224["vit224"]
    result = run_taglens("nsfw", jpegs["phone"], "--model", folder)
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    got = json.loads(line)["nsfw"]["scores"]
    expected = pipeline("image-classification", model=str(folder), top_k=None)(jpegs["phone"])
    assert {d["label"] for d in expected} == set(got)
    assert max(abs(got[d["label"]] - d["score"]) for d in expected) < 1e-5
