"""The Python API: label independence, the label cache, prompt ensembling, ranking, one forward
pass for classify+embed, error records."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from taglens.engine import EngineOptions, run
from taglens.errors import ImageDecodeError, LabelsError
from taglens.models.siglip import ImageTextModel
from taglens.records import LabelScore
from taglens.models.siglip import CONFIG, Embedder, ZeroShotClassifier, rank

from ..conftest import photo

IMAGES = [photo(60 + 7 * i, 45 + 5 * i, seed=i) for i in range(6)]
OTHERS = [f"a {w}" for w in ("cat", "dog", "car", "boat", "bird", "plane", "house", "tree", "flower", "beach",
                             "sofa", "lake", "street", "forest", "laptop", "bowl", "bicycle", "park", "man", "sky")]


@pytest.fixture(scope="module")
def embedders(checkpoints):
    return {name: Embedder.from_pretrained(checkpoints[name], device="cpu") for name in ("siglip64", "clip")}


@pytest.mark.parametrize("name", ["siglip64", "clip"])
def test_a_labels_embedding_is_the_same_alone_or_among_20_others(checkpoints, name):
    alone = Embedder.from_pretrained(checkpoints[name], device="cpu")
    crowd = Embedder.from_pretrained(checkpoints[name], device="cpu")
    label = "two cats sleeping on a sofa"
    one = alone.label_embeddings([label])[0]
    many = crowd.label_embeddings(OTHERS[:10] + [label] + OTHERS[10:])[10]
    assert np.abs(one - many).max() < 1e-6


def test_a_siglip_labels_score_is_the_same_alone_or_among_20_others(checkpoints):
    label = "two cats sleeping on a sofa"
    alone = ZeroShotClassifier.from_pretrained(checkpoints["siglip64"], device="cpu")
    crowd = ZeroShotClassifier.from_pretrained(checkpoints["siglip64"], device="cpu")
    for a, b in zip(alone.classify(IMAGES, [label]), crowd.classify(IMAGES, OTHERS + [label])):
        score_alone = a.labels[0].score
        score_crowd = {x.label: x.score for x in b.labels}[label]
        assert len(b.labels) == 21
        assert abs(score_alone - score_crowd) < 1e-6


def test_the_label_cache_encodes_each_label_once_across_many_batches(checkpoints, monkeypatch):
    encoded: list[str] = []
    real = ImageTextModel.encode_texts

    def counting(self, texts, **kwargs):
        encoded.extend(texts)
        return real(self, texts, **kwargs)

    monkeypatch.setattr(ImageTextModel, "encode_texts", counting)
    classifier = ZeroShotClassifier.from_pretrained(checkpoints["siglip64"], device="cpu")
    images = IMAGES * 4
    for _ in range(3):
        records = list(classifier.classify(images, ["a cat", "a dog"], options=EngineOptions(batch_size=3)))
        assert len(records) == 24 and all(r.labels for r in records)
    assert sorted(encoded) == ["This is a photo of a cat.", "This is a photo of a dog."]
    list(classifier.classify(images[:2], ["a dog", "a plane", "a cat"]))
    assert encoded[2:] == ["This is a photo of a plane."]
    # Another template is another cache entry.
    ZeroShotClassifier(classifier.embedder, ["a picture of {}"]).job(["a cat"])
    assert encoded[3:] == ["a picture of a cat"]


def test_the_label_cache_is_bounded(checkpoints):
    embedder = Embedder.from_pretrained(checkpoints["siglip64"], device="cpu")
    embedder.cache_size = 3
    first = embedder.label_embeddings(OTHERS[:5])
    assert len(embedder._cache) == 5  # a call's own labels always fit
    embedder.label_embeddings(OTHERS[5:6])
    assert len(embedder._cache) == 3
    # Evicted labels are encoded again in a batch of another shape: equal to float32 rounding.
    np.testing.assert_allclose(embedder.label_embeddings(OTHERS[:5]), first, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["siglip64", "clip"])
def test_several_templates_average_the_normalised_prompt_embeddings(checkpoints, embedders, name):
    from transformers import AutoModel, AutoTokenizer

    templates = ["a photo of {}.", "a drawing of {}.", "{}"]
    labels = ["a cat", "a red car"]
    folder = checkpoints[name]
    model = AutoModel.from_pretrained(folder, use_safetensors=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    padding = {"padding": "max_length", "max_length": 64} if name == "siglip64" else {"padding": True}
    expected = []
    for label in labels:
        tokens = tokenizer([t.format(label) for t in templates], return_tensors="pt", **padding)
        with torch.no_grad():
            vectors = torch.nn.functional.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)
        expected.append(torch.nn.functional.normalize(vectors.mean(0), dim=-1).numpy())
    got = embedders[name].label_embeddings(labels, templates)
    assert np.abs(got - np.stack(expected)).max() < 1e-5
    assert np.abs(np.linalg.norm(got, axis=1) - 1).max() < 1e-6

    classifier = ZeroShotClassifier(embedders[name], templates)
    record = next(classifier.classify(IMAGES[:1], labels))
    image = embedders[name].embed_images(IMAGES[:1])
    scores = embedders[name].model.scores(image, np.stack(expected))[0]
    assert {x.label: x.score for x in record.labels} == pytest.approx(dict(zip(labels, scores.tolist())), abs=1e-5)


def test_threshold_top_k_and_order():
    labels = ["a", "b", "c", "d"]
    scores = np.array([0.2, 0.9, 0.5, 0.5], np.float32)
    assert [x.label for x in rank(labels, scores)] == ["b", "c", "d", "a"]  # ties keep label order
    assert [x.label for x in rank(labels, scores, threshold=0.5)] == ["b", "c", "d"]
    assert rank(labels, scores, top_k=1) == (LabelScore("b", pytest.approx(0.9)),)
    assert [x.label for x in rank(labels, scores, threshold=0.3, top_k=2)] == ["b", "c"]


def test_clip_scores_are_a_softmax_over_the_labels(embedders):
    classifier = ZeroShotClassifier(embedders["clip"])
    for record in classifier.classify(IMAGES, ["a cat", "a dog", "a plane"]):
        assert sum(x.score for x in record.labels) == pytest.approx(1.0, abs=1e-5)
    top = next(classifier.classify(IMAGES[:1], ["a cat", "a dog", "a plane"], top_k=1))
    assert len(top.labels) == 1


def test_classify_and_embed_come_from_one_image_tower_pass(embedders, monkeypatch):
    embedder = embedders["siglip64"]
    calls: list[int] = []
    real = ImageTextModel.launch_images  # the image tower's pass (encode_images waits on it)

    def counting(self, pixels):
        calls.append(len(pixels))
        return real(self, pixels)

    monkeypatch.setattr(ImageTextModel, "launch_images", counting)
    job = embedder.job(["a cat", "a dog"], embedding=True)
    assert job.name == "classify+embed"
    assert (job.model_id, job.revision, job.transform) == (embedder.model_id, embedder.revision, embedder.transform)
    records = list(run(IMAGES, [job], EngineOptions(batch_size=4)))
    assert calls == [4, 2]
    alone = embedder.embed_images(IMAGES)
    for record, vector in zip(records, alone):
        assert record.labels and len(record.labels) == 2
        assert isinstance(record.embedding, np.ndarray)
        assert record.embedding.dtype == np.float32 and record.embedding.shape == (embedder.dim,)
        assert np.abs(record.embedding - vector).max() < 1e-6
    assert embedder.job(["a cat"]).name == "classify"
    assert embedder.job().name == "embed"


def test_bad_images_give_error_records_and_embed_images_names_them(embedders, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    classifier = ZeroShotClassifier(embedders["siglip64"])
    records = list(classifier.classify([IMAGES[0], str(bad), IMAGES[1]], ["a cat"]))
    assert [r.error is None for r in records] == [True, False, True]
    assert records[1].path == str(bad) and records[1].labels is None
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        embedders["siglip64"].embed_images([IMAGES[0], str(bad)])
    assert embedders["siglip64"].embed_images([]).shape == (0, embedders["siglip64"].dim)


def test_embeddings_are_unit_float32_and_identity_is_exposed(embedders, checkpoints):
    for name, embedder in embedders.items():
        images = embedder.embed_images(IMAGES)
        texts = embedder.embed_texts(["a cat", "a dog on a beach"])
        assert images.shape == (len(IMAGES), embedder.dim) and texts.shape == (2, embedder.dim)
        assert images.dtype == texts.dtype == np.float32
        assert np.abs(np.linalg.norm(images, axis=1) - 1).max() < 1e-6
        assert embedder.model_id == str(checkpoints[name].resolve())
        assert embedder.revision.startswith("local-")
    siglip = embedders["siglip64"]
    assert siglip.kind == "siglip" and siglip.logit_bias is not None and siglip.logit_scale > 0
    cos = siglip.embed_images(IMAGES[:1]) @ siglip.embed_texts(["a cat"]).T
    assert siglip.text_probability(cos)[0, 0] == pytest.approx(
        ZeroShotClassifier(siglip, ["{}"]).job(["a cat"])(np.stack([siglip.transform(IMAGES[0])]))[0]["labels"][0].score,
        abs=1e-6,
    )
    assert embedders["clip"].kind == "clip" and embedders["clip"].logit_bias is None


def test_bad_labels_and_templates_are_refused(embedders):
    embedder = embedders["siglip64"]
    with pytest.raises(LabelsError, match="no labels"):
        embedder.job([])
    with pytest.raises(LabelsError, match="non-empty"):
        embedder.job(["a cat", "  "])
    with pytest.raises(LabelsError, match="not one string"):
        embedder.job("a cat")
    with pytest.raises(LabelsError, match="no '{}'"):
        ZeroShotClassifier(embedder, ["a photo"])
    with pytest.raises(LabelsError, match="format string"):
        ZeroShotClassifier(embedder, ["a {} of {kind}"])
    with pytest.raises(TypeError):
        embedder.embed_texts("a cat")


def test_duplicate_labels_are_scored_once(embedders):
    record = next(ZeroShotClassifier(embedders["siglip64"]).classify(IMAGES[:1], ["a cat", "a dog", "a cat"]))
    assert sorted(x.label for x in record.labels) == ["a cat", "a dog"]


def test_default_template_is_the_pipelines():
    import inspect

    from transformers.pipelines.zero_shot_image_classification import ZeroShotImageClassificationPipeline

    default = inspect.signature(ZeroShotImageClassificationPipeline.preprocess).parameters["hypothesis_template"]
    assert default.default == CONFIG.template


def test_records_streams_labels_and_embeddings(embedders):
    embedder = embedders["siglip64"]
    records = list(embedder.records(IMAGES[:3], labels=["a cat", "a dog"], embedding=True, top_k=1,
                                    options=EngineOptions(batch_size=2)))
    assert [len(r.labels) for r in records] == [1, 1, 1]
    assert np.abs(np.stack([r.embedding for r in records]) - embedder.embed_images(IMAGES[:3])).max() < 1e-6
    plain = list(embedder.records(IMAGES[:1]))
    assert plain[0].labels is None and plain[0].embedding.shape == (embedder.dim,)
