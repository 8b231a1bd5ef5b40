"""The record's one rule for failures (taglens.records): a failed job's tasks get a reason each,
every other job's fields stay, and ``error`` means no result at all; the engine applies it."""

from __future__ import annotations

import numpy as np

from taglens import engine
from taglens.records import NsfwResult, Record, TagScore

TAGS = {"tags": (TagScore("cat", 0.9),)}
NSFW = {"nsfw": NsfwResult("normal", 0.8, {"normal": 0.8, "nsfw": 0.2}, False)}


def test_a_failed_job_names_each_task_it_serves_and_keeps_the_others():
    record = Record(path="a.jpg").with_job_results([("tag", TAGS), ("classify+embed", "boom"), ("nsfw", NSFW)])
    assert record.status == "partial" and record.ok and record.error is None
    assert record.tags == TAGS["tags"] and record.nsfw == NSFW["nsfw"] and record.labels is None
    assert record.task_errors == {"classify": "boom", "embed": "boom"}
    assert record.to_json() == {"path": "a.jpg", "tags": [{"tag": "cat", "score": 0.9}],
                                "nsfw": {"label": "normal", "score": 0.8, "scores": {"normal": 0.8, "nsfw": 0.2},
                                         "flagged": False},
                                "classify_error": "boom", "embed_error": "boom"}


def test_every_job_failing_is_an_error_that_still_says_which():
    record = Record(path="a.jpg").with_job_results([("nsfw", "broke"), ("tag", "died")])
    assert record.status == "error" and not record.ok
    assert record.error == "died; broke" and list(record.task_errors) == ["tag", "nsfw"]  # task order
    assert record.to_json() == {"path": "a.jpg", "error": "died; broke", "tag_error": "died", "nsfw_error": "broke"}
    done = Record(path="b.jpg").with_job_results([("tag", TAGS)])
    assert done.status == "done" and done.task_errors == {} and "tag_error" not in done.to_json()


class Scaled:
    """A 4x4 [0, 1] transform: the white image is the only one above 0.99."""

    input_size = 4

    def __call__(self, image):
        return np.asarray(image.resize((4, 4)), np.float32).transpose(2, 0, 1) / 255

    def __hash__(self):
        return 1

    def __eq__(self, other):
        return isinstance(other, Scaled)


class Tagger:
    name, model_id, revision = "tag", "t", "r"

    def __init__(self):
        self.transform = Scaled()

    def __call__(self, pixels):
        return [TAGS for _ in pixels]


class Classifier(Tagger):
    name = "nsfw"

    def __call__(self, pixels):
        if (pixels > 0.99).any():  # the white image
            raise RuntimeError("cannot take it")
        return [NSFW for _ in pixels]


def test_the_engine_keeps_the_other_jobs_fields_of_an_image_one_job_fails_on():
    from PIL import Image

    images = [Image.new("RGB", (8, 8), (10 * i, 20, 30)) for i in range(3)] + [Image.new("RGB", (8, 8), "white")]
    records = list(engine.run(images, [Tagger(), Classifier()], engine.EngineOptions(batch_size=4, workers=1)))
    assert [r.status for r in records] == ["done", "done", "done", "partial"]
    assert records[3].tags == TAGS["tags"] and records[3].nsfw is None
    assert records[3].task_errors == {"nsfw": "nsfw failed on this image (RuntimeError: cannot take it)"}
