"""NsfwDetector: records equal to the transformers pipeline, the flag rule, positive labels,
errors as records, and the job other parts of taglens run."""

from __future__ import annotations

import numpy as np
import pytest

from taglens.engine import EngineOptions
from taglens.errors import UnknownLabelError
from taglens.models.hf_preprocess import HfImageTransform
from taglens.models.vit_classifier import probabilities
from taglens.models.vit_classifier import DEFAULT_THRESHOLD, NsfwDetector, NsfwJob

from ..conftest import photo

IMAGES = [photo(97, 61, 1), photo(45, 130, 2), photo(9, 7, 3), photo(80, 50, 4).convert("L"), photo(64, 64, 5)]


def pipeline_scores(folder, images):
    from transformers import pipeline

    pipe = pipeline("image-classification", model=str(folder), top_k=None)
    return [{d["label"]: d["score"] for d in out} for out in pipe(list(images))]


@pytest.fixture(scope="module")
def detector(checkpoints):
    return NsfwDetector.from_pretrained(checkpoints["vit"], device="cpu")


def test_records_equal_the_pipeline(detector, checkpoints):
    records = detector(IMAGES, options=EngineOptions(batch_size=2))
    expected = pipeline_scores(checkpoints["vit"], IMAGES)
    assert len(records) == len(IMAGES)
    for record, reference in zip(records, expected):
        assert record.error is None
        result = record.nsfw
        assert list(result.scores) == ["normal", "nsfw"]  # every label, in the checkpoint's order
        np.testing.assert_allclose([result.scores[k] for k in reference], list(reference.values()), atol=1e-5, rtol=0)
        top = max(reference, key=reference.get)
        assert result.label == top and abs(result.score - reference[top]) < 1e-5
        assert result.flagged == (result.scores["nsfw"] >= DEFAULT_THRESHOLD)
    # A threshold between the images' scores splits them exactly as the pipeline's scores do.
    ranked = sorted(r["nsfw"] for r in expected)
    middle = (ranked[1] + ranked[-2]) / 2
    split = [r.nsfw.flagged for r in NsfwDetector(detector.classifier, threshold=middle)(IMAGES)]
    assert split == [r["nsfw"] >= middle for r in expected] and len(set(split)) == 2


def test_the_flag_is_at_or_above_the_threshold(detector):
    job = detector.job()
    half = probabilities(np.zeros((1, 2), np.float32), "softmax")[0]  # exactly 0.5 each
    assert half[1] == 0.5
    assert job.result(half).flagged is True  # >= : a tie with the threshold is flagged
    assert detector.job(threshold=float(np.nextafter(np.float32(0.5), np.float32(1)))).result(half).flagged is False
    assert detector.job(threshold=0.0).result(half).flagged is True
    assert job.result(half).label == "normal"  # a tie goes to the first label, as in the pipeline


def test_several_positive_labels_flag_when_any_passes(checkpoints):
    detector = NsfwDetector.from_pretrained(checkpoints["vit_multi"], device="cpu", positive_label="porn, hentai,sexy")
    assert detector.positive_labels == ("porn", "hentai", "sexy")
    expected = pipeline_scores(checkpoints["vit_multi"], IMAGES)
    best = sorted(max(s["porn"], s["hentai"], s["sexy"]) for s in expected)
    threshold = (best[1] + best[2]) / 2  # between images, so some pass and some do not
    records = NsfwDetector(detector.classifier, positive_label=["porn", "hentai", "sexy"], threshold=threshold)(IMAGES)
    flags = [r.nsfw.flagged for r in records]
    assert flags == [any(s[k] >= threshold for k in ("porn", "hentai", "sexy")) for s in expected]
    assert len(set(flags)) == 2
    for record, reference in zip(records, expected):  # sigmoid per label: scores need not sum to 1
        np.testing.assert_allclose([record.nsfw.scores[k] for k in reference], list(reference.values()), atol=1e-5)


def test_a_missing_positive_label_names_the_labels_it_has(checkpoints, detector):
    with pytest.raises(UnknownLabelError, match=r"no label 'porn'; its labels are 'normal', 'nsfw'"):
        NsfwDetector.from_pretrained(checkpoints["vit"], device="cpu", positive_label="porn")
    assert detector.job(positive_label="NSFW").positive_labels == ("nsfw",)  # case is forgiven when unambiguous
    with pytest.raises(UnknownLabelError, match="no positive label"):
        detector.job(positive_label=" , ")
    with pytest.raises(ValueError, match="between 0 and 1"):
        detector.job(threshold=1.5)


def test_bad_inputs_become_error_records_in_place(detector, tmp_path):
    good = tmp_path / "good.png"
    IMAGES[0].save(good)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    records = detector([str(good), str(tmp_path / "bad.jpg"), str(tmp_path / "missing.png"), IMAGES[1]])
    assert [r.error is None for r in records] == [True, False, False, True]
    assert records[1].nsfw is None and "not an image" in records[1].error
    assert records[0].sha256 and records[0].width == 97
    [single] = detector(str(good))  # one source gives a list of one record
    # A batch of one and a batch of two differ in float32 rounding only (BLAS kernels depend on the shape).
    assert (single.nsfw.label, single.nsfw.flagged) == (records[0].nsfw.label, records[0].nsfw.flagged)
    assert single.nsfw.scores == pytest.approx(records[0].nsfw.scores, abs=1e-6, rel=0)


def test_the_job_has_the_engine_shape(detector, checkpoints):
    job = detector.job()
    assert isinstance(job, NsfwJob) and job.name == "nsfw"
    assert job is detector.job()  # the same job (and model) each time unless overridden
    assert job.model_id == detector.model_id == str(checkpoints["vit"].resolve())
    assert job.revision == detector.revision and job.revision.startswith("local-")
    assert job.transform == HfImageTransform.from_pretrained(checkpoints["vit"])
    assert hash(job.transform) == hash(HfImageTransform.from_pretrained(checkpoints["vit"]))
    assert detector.labels == ("normal", "nsfw") and detector.threshold == 0.5
    pixels = np.stack([job.transform(image.convert("RGB")) for image in IMAGES[:3]])
    out = job(pixels)
    assert len(out) == 3 and all(set(d) == {"nsfw"} for d in out)
