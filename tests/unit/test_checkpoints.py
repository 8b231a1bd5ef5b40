"""The tiny checkpoints are real: hub layout, and transformers' own from_pretrained loads and runs them."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors import safe_open

from ..conftest import JOYTAG_TINY, photo

HUB_FILES = {
    # google/siglip-so400m-patch14-224 and friends
    "siglip16": {"config.json", "model.safetensors", "preprocessor_config.json", "special_tokens_map.json",
                 "spiece.model", "tokenizer_config.json"},
    "siglip64": {"config.json", "model.safetensors", "preprocessor_config.json", "special_tokens_map.json",
                 "spiece.model", "tokenizer_config.json"},
    # openai/clip-vit-base-patch32 (minus its pickled duplicates)
    "clip": {"config.json", "model.safetensors", "preprocessor_config.json", "special_tokens_map.json",
             "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"},
    # Falconsai/nsfw_image_detection
    "vit": {"config.json", "model.safetensors", "preprocessor_config.json"},
    # fancyfeast/joytag
    "joytag": {"config.json", "model.safetensors", "top_tags.txt"},
}


@pytest.mark.parametrize("name", sorted(HUB_FILES))
def test_hub_layout(checkpoints, name):
    present = {p.name for p in checkpoints[name].iterdir()}
    assert HUB_FILES[name] <= present


@pytest.mark.parametrize("name, text_length", [("siglip16", 16), ("siglip64", 64), ("clip", 77)])
def test_dual_encoders_load_and_run_with_transformers(checkpoints, name, text_length):
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(checkpoints[name], use_safetensors=True).eval()
    processor = AutoProcessor.from_pretrained(checkpoints[name])
    assert processor.tokenizer.model_max_length == text_length
    inputs = processor(text=["a photo of a cat", "a dog"], images=[photo(), photo(seed=3)],
                       padding="max_length", return_tensors="pt")
    assert inputs["input_ids"].shape == (2, text_length)
    with torch.no_grad():
        out = model(**inputs)
    logits = out.logits_per_image
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
    assert logits.std() > 0.01  # spread weights: outputs move with the input


def test_siglip_tokenizer_is_sentencepiece_with_siglip_special_ids(checkpoints):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoints["siglip16"])
    assert type(tokenizer).__name__ == "SiglipTokenizer"
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == 1 and tokenizer.unk_token_id == 2
    ids = tokenizer("a photo of a cat")["input_ids"]
    assert ids[-1] == 1 and 2 not in ids  # ends with </s>; every word known


@pytest.mark.parametrize("name, labels", [("vit", ["normal", "nsfw"]), ("vit_multi", ["normal", "porn", "hentai", "sexy"])])
def test_vit_classifier_loads_and_runs(checkpoints, name, labels):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(checkpoints[name], use_safetensors=True).eval()
    assert [model.config.id2label[i] for i in range(len(labels))] == labels
    pixels = AutoImageProcessor.from_pretrained(checkpoints[name])(photo(), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
    assert logits.shape == (1, len(labels)) and torch.isfinite(logits).all()
    config = json.loads((checkpoints[name] / "config.json").read_text())
    assert config["problem_type"] == ("multi_label_classification" if name == "vit_multi" else "single_label_classification")


def test_joytag_fixture_is_the_released_layout():
    config = json.loads((JOYTAG_TINY / "config.json").read_text())
    tags = (JOYTAG_TINY / "top_tags.txt").read_text().split("\n")
    assert config["class"] == "ViT" and config["n_tags"] == len(tags) == 37
    with safe_open(JOYTAG_TINY / "model.safetensors", "pt") as f:
        keys = list(f.keys())
        assert len(keys) == 50
        assert f.get_tensor("head.weight").shape[0] == 37
    expected = json.loads((JOYTAG_TINY / "expected.json").read_text())
    assert expected["threshold"] == 0.4
    for name, digest in expected["files_sha256"].items():  # the copy in tests/fixtures is byte-exact
        assert hashlib.sha256((JOYTAG_TINY / name).read_bytes()).hexdigest() == digest, name
