"""The SigLIP/CLIP family against transformers itself: the model card's way, the towers'
features, text lengths, truncation, and what is refused."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch

from taglens.errors import CheckpointError, PromptTruncatedWarning
from taglens.models.hf_preprocess import HfImageTransform
from taglens.models.siglip import load_model as load
from taglens.models.siglip import ZeroShotClassifier

from ..conftest import photo

IMAGES = [photo(70, 50, 1), photo(40, 90, 2), photo(56, 56, 3).convert("L").convert("RGB"), photo(120, 33, 4)]
# Short labels: the tiny SentencePiece vocabulary spends many tokens per word, and the model
# card's way (no truncation) fails beyond 16 tokens.
LABELS = ["a cat", "a dog", "a car", "a boat"]


@pytest.fixture(scope="module")
def models(checkpoints):
    return {name: load(checkpoints[name], device="cpu")
            for name in ("siglip16", "siglip64", "clip", "siglip16_tf5", "clip_tf5")}


def test_text_length_is_the_checkpoints_own(models):
    assert models["siglip16"].text_length == 16
    assert models["siglip64"].text_length == 64
    assert models["clip"].text_length == 77
    assert [models[n].kind for n in ("siglip16", "siglip64", "clip")] == ["siglip", "siglip", "clip"]


@pytest.mark.parametrize("name", ["siglip16", "siglip16_tf5"])
def test_siglip16_equals_the_model_card_and_the_pipeline_cannot_run_it(checkpoints, name):
    """The seed card: processor(text, images, padding="max_length"), model, sigmoid of
    logits_per_image. transformers' pipeline pads SigLIP to 64 and fails on a 16-token model.
    Both folder layouts: the hub's, and transformers 5's save_pretrained (processor_config.json)."""
    from transformers import AutoModel, AutoProcessor, pipeline

    folder = checkpoints[name]
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, use_safetensors=True).eval()
    prompts = [f"This is a photo of {label}." for label in LABELS]
    inputs = processor(text=prompts, images=IMAGES, padding="max_length", return_tensors="pt")
    assert inputs["input_ids"].shape[1] == 16
    with torch.no_grad():
        expected = torch.sigmoid(model(**inputs).logits_per_image).numpy()

    classifier = ZeroShotClassifier.from_pretrained(folder, device="cpu")
    records = list(classifier.classify(IMAGES, LABELS))
    for record, row in zip(records, expected):
        assert record.error is None
        got = {x.label: x.score for x in record.labels}
        assert np.abs(np.array([got[label] for label in LABELS]) - row).max() < 1e-5
        assert [x.score for x in record.labels] == sorted(got.values(), reverse=True)
        assert record.labels[0].label == LABELS[int(row.argmax())]

    pipe = pipeline("zero-shot-image-classification", model=str(folder))
    with pytest.raises(Exception, match="max_position_embeddings|sequence length"):
        pipe(IMAGES[0], candidate_labels=LABELS)


@pytest.mark.parametrize("name", ["siglip16", "siglip64", "clip", "siglip16_tf5", "clip_tf5"])
def test_features_match_get_image_and_text_features(checkpoints, models, name):
    from transformers import AutoModel, AutoProcessor, AutoTokenizer

    folder = checkpoints[name]
    ours = models[name]
    model = AutoModel.from_pretrained(folder, use_safetensors=True).eval()
    pixels = AutoProcessor.from_pretrained(folder)(images=IMAGES, return_tensors="pt")["pixel_values"]
    texts = ["a cat", "This is a photo of a boat."]
    length = {"siglip16": 16, "siglip16_tf5": 16, "siglip64": 64}.get(name)
    tokens = AutoTokenizer.from_pretrained(folder)(
        texts, padding="max_length" if length else True, max_length=length, return_tensors="pt"
    )
    with torch.no_grad():
        image_ref = model.get_image_features(pixel_values=pixels).pooler_output
        text_ref = model.get_text_features(**tokens).pooler_output
    image_ref = torch.nn.functional.normalize(image_ref, dim=-1).numpy()
    text_ref = torch.nn.functional.normalize(text_ref, dim=-1).numpy()

    ours_images = ours.encode_images(np.stack([ours.transform(image) for image in IMAGES]))
    ours_texts = ours.encode_texts(texts)
    for array in (ours_images, ours_texts):
        assert array.dtype == np.float32
        assert np.abs(np.linalg.norm(array, axis=1) - 1).max() < 1e-6
    assert np.abs(ours_images - image_ref).max() < 1e-5
    assert np.abs(ours_texts - text_ref).max() < 1e-5
    assert np.abs(ours_images @ ours_texts.T - image_ref @ text_ref.T).max() < 1e-5


def test_image_recipe_is_the_checkpoints_processor(checkpoints, models):
    from transformers import AutoImageProcessor

    ours = models["siglip64"]
    assert ours.transform == HfImageTransform.from_pretrained(checkpoints["siglip64"])
    expected = AutoImageProcessor.from_pretrained(checkpoints["siglip64"])(IMAGES[1], return_tensors="np")
    assert np.array_equal(ours.transform(IMAGES[1]), expected["pixel_values"][0])


def test_scores_are_sigmoid_of_scaled_cosine_plus_bias(checkpoints, models):
    from transformers import AutoModel

    reference = AutoModel.from_pretrained(checkpoints["siglip64"], use_safetensors=True)
    ours = models["siglip64"]
    assert ours.logit_scale == pytest.approx(float(reference.logit_scale.detach().exp()))
    assert ours.logit_bias == pytest.approx(float(reference.logit_bias.detach()))
    cos = np.array([[-0.5, 0.0, 0.3]], np.float32)
    expected = 1 / (1 + np.exp(-(ours.logit_scale * cos + ours.logit_bias)))
    assert np.abs(ours.text_probability(cos) - expected).max() < 1e-6
    assert ours.text_probability(-3.0) == pytest.approx(1 / (1 + np.exp(31.0)), rel=1e-5)  # the tail keeps its digits
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow in exp for very negative logits
        assert ours.text_probability(np.float32(-50.0)) == 0.0
    with pytest.raises(TypeError):
        models["clip"].text_probability(cos)
    assert models["clip"].logit_bias is None


def test_a_long_prompt_is_truncated_with_a_warning_naming_it(checkpoints, models):
    from transformers import AutoModel, AutoTokenizer

    folder = checkpoints["siglip16"]
    long = "a plane flying over the mountains at sunset near a boat on a calm lake"
    with pytest.warns(PromptTruncatedWarning, match="a plane flying over the mountains"):
        ours = models["siglip16"].encode_texts([long, "a cat"])
    tokens = AutoTokenizer.from_pretrained(folder)([long], padding="max_length", max_length=16, truncation=True,
                                                   return_tensors="pt")
    assert tokens["input_ids"][0, -1].item() == 1  # the end-of-text token is kept
    with torch.no_grad():
        expected = AutoModel.from_pretrained(folder, use_safetensors=True).get_text_features(**tokens).pooler_output
    expected = torch.nn.functional.normalize(expected, dim=-1).numpy()
    assert np.abs(ours[0] - expected[0]).max() < 1e-5


def test_bfloat16_gives_float32_embeddings_close_to_float32(checkpoints, models):
    bf16 = load(checkpoints["siglip64"], device="cpu", dtype="bfloat16")
    pixels = np.stack([bf16.transform(image) for image in IMAGES])
    got = bf16.encode_images(pixels)
    assert got.dtype == np.float32 and np.abs(np.linalg.norm(got, axis=1) - 1).max() < 1e-6
    assert (got * models["siglip64"].encode_images(pixels)).sum(1).min() > 0.98


def test_checkpoints_of_other_families_are_refused(checkpoints, tmp_path):
    with pytest.raises(CheckpointError, match="not a SigLIP or CLIP"):
        load(checkpoints["vit"], device="cpu")
    naflex = tmp_path / "naflex"
    shutil.copytree(checkpoints["siglip64"], naflex)
    config = json.loads((naflex / "config.json").read_text())
    (naflex / "config.json").write_text(json.dumps(dict(config, model_type="siglip2")))
    with pytest.raises(CheckpointError, match="NaFlex"):
        load(naflex, device="cpu")
