"""The image-classifier family against transformers itself: the pipeline's scores (softmax and
sigmoid checkpoints) and its rule for choosing the activation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from taglens.engine import EngineOptions, run
from taglens.models.hf_preprocess import HfImageTransform
from taglens.models.vit_classifier import ImageClassifier, activation_for, probabilities

from ..conftest import photo

IMAGES = {
    "rgb_odd": photo(97, 61, 1),
    "portrait": photo(45, 130, 2),
    "tiny": photo(9, 7, 3),
    "grey": photo(80, 50, 4).convert("L"),
    "palette": photo(33, 47, 5).convert("P"),
}


def pipeline_scores(folder, images):
    from transformers import pipeline

    pipe = pipeline("image-classification", model=str(folder), top_k=None)
    return [{d["label"]: d["score"] for d in out} for out in pipe(list(images))]


@pytest.mark.parametrize("name,activation", [("vit", "softmax"), ("vit_multi", "sigmoid"), ("vit_tf5", "softmax")])
def test_scores_equal_the_transformers_pipeline(checkpoints, name, activation):
    classifier = ImageClassifier.from_pretrained(str(checkpoints[name]), device="cpu")
    assert classifier.activation == activation
    expected = pipeline_scores(checkpoints[name], IMAGES.values())
    # Through the engine (decode once, batched), as every door runs it.
    pixels = np.stack([classifier.transform(image.convert("RGB")) for image in IMAGES.values()])
    ours = classifier.scores(pixels)
    for row, reference in zip(ours, expected):
        assert set(reference) == set(classifier.labels)
        np.testing.assert_allclose(row, [reference[label] for label in classifier.labels], atol=1e-5, rtol=0)
    # The scores really move between images (a constant output would pass the comparison too).
    assert (np.ptp(ours, axis=0) > 1e-3).all()


def test_batched_and_single_forward_agree(checkpoints):
    classifier = ImageClassifier.from_pretrained(str(checkpoints["vit"]), device="cpu")
    pixels = np.stack([classifier.transform(image.convert("RGB")) for image in IMAGES.values()])
    one_by_one = np.concatenate([classifier.logits(pixels[i:i + 1]) for i in range(len(pixels))])
    np.testing.assert_allclose(classifier.logits(pixels), one_by_one, atol=1e-5, rtol=0)


def test_identity_labels_and_transform_come_from_the_folder(checkpoints):
    classifier = ImageClassifier.from_pretrained(str(checkpoints["vit_multi"]), device="cpu")
    assert classifier.labels == ("normal", "porn", "hentai", "sexy")
    assert classifier.model_id == str(checkpoints["vit_multi"].resolve())
    assert classifier.revision.startswith("local-")
    assert classifier.transform == HfImageTransform.from_pretrained(checkpoints["vit_multi"])


def test_bfloat16_runs_the_model_in_bfloat16_and_scores_in_float32(checkpoints):
    f32 = ImageClassifier.from_pretrained(str(checkpoints["vit"]), device="cpu")
    bf16 = ImageClassifier.from_pretrained(str(checkpoints["vit"]), device="cpu", dtype="bfloat16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    pixels = np.stack([f32.transform(image.convert("RGB")) for image in IMAGES.values()])
    scores = bf16.scores(pixels)
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(scores, f32.scores(pixels), atol=0.05)


@pytest.mark.parametrize("problem_type,num_labels", [
    (None, 1), (None, 2), (None, 5), ("single_label_classification", 3),
    ("multi_label_classification", 2), ("regression", 2), ("regression", 1),
])
def test_activation_rule_is_the_pipelines(problem_type, num_labels):
    """Give transformers' own postprocess the same logits and config; compare the scores."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor, pipeline

    config = ViTConfig(hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1,
                       image_size=8, patch_size=8, num_labels=num_labels, problem_type=problem_type)
    pipe = pipeline("image-classification", model=ViTForImageClassification(config), image_processor=ViTImageProcessor())
    logits = np.linspace(-2.0, 1.5, num_labels, dtype=np.float32)[None]
    reference = pipe.postprocess({"logits": torch.from_numpy(logits)}, top_k=num_labels)
    expected = {d["label"]: d["score"] for d in reference}
    ours = probabilities(logits, activation_for(config))[0]
    labels = [config.id2label[i] for i in range(num_labels)]
    np.testing.assert_allclose(ours, [expected[label] for label in labels], atol=1e-6, rtol=0)


def test_probabilities_are_stable_for_large_logits():
    logits = np.array([[1000.0, 0.0], [-1000.0, 1000.0]], np.float32)
    np.testing.assert_array_equal(probabilities(logits, "softmax"), [[1.0, 0.0], [0.0, 1.0]])
    assert np.isfinite(probabilities(logits, "sigmoid")).all()


def test_engine_decodes_files_like_the_pipeline_loads_them(checkpoints, tmp_path):
    """Files on disk (PNG, JPEG, greyscale) through the engine equal the pipeline given the paths."""
    classifier = ImageClassifier.from_pretrained(str(checkpoints["vit"]), device="cpu")
    paths = []
    for i, (name, image) in enumerate(IMAGES.items()):
        path = tmp_path / f"{name}.{'jpg' if i % 2 else 'png'}"
        (image.convert("RGB") if path.suffix == ".jpg" else image).save(path)
        paths.append(str(path))

    class ScoresJob:
        name, transform, model_id, revision = "scores", classifier.transform, classifier.model_id, classifier.revision

        def __call__(self, pixels):
            return [{"embedding": row} for row in classifier.scores(pixels)]

    records = list(run(paths, [ScoresJob()], EngineOptions(batch_size=2)))
    expected = pipeline_scores(checkpoints["vit"], paths)
    for record, reference in zip(records, expected):
        assert record.error is None
        np.testing.assert_allclose(record.embedding, [reference[label] for label in classifier.labels], atol=1e-5)


def test_a_checkpoint_without_a_classifier_head_is_refused(checkpoints):
    """transformers would load CLIP as CLIPForImageClassification with a random head."""
    from taglens.errors import CheckpointError

    with pytest.raises(CheckpointError, match="weights missing.*classifier.weight"):
        ImageClassifier.from_pretrained(str(checkpoints["clip"]), device="cpu")


