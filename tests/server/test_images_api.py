"""The image endpoints give the offline engine's records (the CLI's JSON lines) for the same images
and options, from uploads, base64 and allowed paths; bad images get per-image reasons."""

from __future__ import annotations

import base64
import json
import math

import pytest

from taglens.engine import EngineOptions, run
from taglens.errors import ImageDecodeError
from taglens.io.decode import decode
from taglens.models.tag_selection import TagSelection
from taglens.models.modelset import TaskRequest

from .conftest import encoded, picture


def reference(client, request: TaskRequest, sources, names):
    """What the offline engine (the CLI's path) gives for these sources and options."""
    jobs = client.app.state.service.models.jobs(request)
    records = run(sources, jobs, EngineOptions(batch_size=4, workers=1, hash_files=False))
    return [r.with_fields(path=name).to_json() for r, name in zip(records, names)]


def assert_close(got, want, path="record"):
    assert type(got) is type(want) or isinstance(want, float), f"{path}: {got!r} vs {want!r}"
    if isinstance(want, dict):
        assert set(got) == set(want), f"{path}: keys {sorted(got)} vs {sorted(want)}"
        for key in want:
            assert_close(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), f"{path}: {len(got)} items vs {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_close(g, w, f"{path}[{i}]")
    elif isinstance(want, float):
        assert math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-5), f"{path}: {got} vs {want}"
    else:
        assert got == want, f"{path}: {got!r} vs {want!r}"


def reason(data: bytes) -> str:
    """Why the decoder refuses these bytes (what the CLI's error record says)."""
    try:
        decode(data)
    except ImageDecodeError as exc:
        return exc.reason
    raise AssertionError("these bytes decode")


def files(*items):
    return [("files", (name, data, kind)) for name, data, kind in items]


def test_tag_uploads_equal_the_engine(client):
    images = [encoded(1), encoded(2, "PNG"), encoded(3, "WEBP")]
    response = client.post("/v1/tag", files=files(("a.jpg", images[0], "image/jpeg"), ("b.png", images[1], "image/png"),
                                                  ("c.webp", images[2], "application/octet-stream")),
                           data={"threshold": "0.6", "top_k": "5", "exclude": "smile,dog"})
    assert response.status_code == 200, response.text
    body = response.json()
    want = reference(client, TaskRequest(tasks=("tag",), tag_selection=TagSelection(
        threshold=0.6, top_k=5, exclude=frozenset({"smile", "dog"}))), images, ["a.jpg", "b.png", "c.webp"])
    assert_close(body["results"], want)
    assert all(0 < len(r["tags"]) <= 5 for r in body["results"])
    assert not {"smile", "dog"} & {t["tag"] for r in body["results"] for t in r["tags"]}
    [model] = body["models"]
    assert model["task"] == "tag" and model["model_id"].endswith("joytag-tiny")


def test_classify_json_base64_equals_the_engine(client):
    images = [encoded(4), encoded(5)]
    payload = {"images": [{"data": base64.b64encode(images[0]).decode(), "name": "four.jpg"},
                          {"data": base64.b64encode(images[1]).decode().rstrip("=")}],
               "labels": ["a cat", "a dog", "a plane"], "templates": ["a photo of {}.", "a picture of {}"],
               "top_k": 2}
    response = client.post("/v1/classify", json=payload)
    assert response.status_code == 200, response.text
    want = reference(client, TaskRequest(tasks=("classify",), labels=("a cat", "a dog", "a plane"),
                                         templates=("a photo of {}.", "a picture of {}"), classify_top_k=2),
                     images, ["four.jpg", "<image 1>"])
    assert_close(response.json()["results"], want)
    assert [len(r["labels"]) for r in response.json()["results"]] == [2, 2]


def test_nsfw_and_embed_equal_the_engine(client):
    images = [encoded(6), encoded(7)]
    upload = files(("x.jpg", images[0], "image/jpeg"), ("y.jpg", images[1], "image/jpeg"))
    nsfw = client.post("/v1/nsfw", files=upload, data={"threshold": "0.2", "positive_label": "NSFW"})
    assert nsfw.status_code == 200, nsfw.text
    want = reference(client, TaskRequest(tasks=("nsfw",), nsfw_threshold=0.2, positive_labels=("NSFW",)),
                     images, ["x.jpg", "y.jpg"])
    assert_close(nsfw.json()["results"], want)
    embed = client.post("/v1/embed", files=upload)
    assert embed.status_code == 200
    want = reference(client, TaskRequest(tasks=("embed",)), images, ["x.jpg", "y.jpg"])
    assert_close(embed.json()["results"], want)
    vector = embed.json()["results"][0]["embedding"]
    assert len(vector) == client.app.state.service.models.load_embedder().dim
    assert math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-4)


def test_analyze_combines_every_job_in_one_record(client):
    image = encoded(8)
    response = client.post("/v1/analyze", files=files(("z.jpg", image, "image/jpeg")),
                           data={"tasks": "tag,classify,nsfw,embed", "labels": ["a cat,a dog"], "tag_top_k": "3",
                                 "label_threshold": "0.0"})
    assert response.status_code == 200, response.text
    [record] = response.json()["results"]
    assert set(record) == {"path", "tags", "labels", "nsfw", "embedding"}
    want = reference(client, TaskRequest(tasks=("tag", "classify", "nsfw", "embed"), labels=("a cat", "a dog"),
                                         tag_selection=TagSelection(top_k=3), classify_threshold=0.0), [image], ["z.jpg"])
    assert_close([record], want)
    assert {m["task"] for m in response.json()["models"]} == {"tag", "classify+embed", "nsfw"}
    default = client.post("/v1/analyze", files=files(("z.jpg", image, "image/jpeg")))
    assert set(default.json()["results"][0]) == {"path", "tags", "nsfw"}  # tasks default to tag,nsfw


def test_a_bad_image_among_good_ones_is_an_error_record(client):
    broken = b"\xff\xd8\xff\xe0 not a jpeg"
    response = client.post("/v1/tag", files=files(("good.jpg", encoded(9), "image/jpeg"),
                                                  ("bad.jpg", broken, "image/jpeg"), ("empty.png", b"", "image/png")))
    assert response.status_code == 200
    good, bad, empty = response.json()["results"]
    assert good["path"] == "good.jpg" and good["tags"]
    assert bad == {"path": "bad.jpg", "error": reason(broken)}
    assert empty == {"path": "empty.png", "error": reason(b"")}


def test_when_every_image_fails_the_answer_is_422_with_each_reason(client):
    response = client.post("/v1/nsfw", files=files(("a.txt", b"hello", "application/octet-stream"),
                                                   ("b.png", b"\x89PNG\r\n\x1a\n", "image/png")))
    assert response.status_code == 422
    body = response.json()
    assert body["detail"] == "none of the 2 images could be processed"
    assert body["results"] == [{"path": "a.txt", "error": reason(b"hello")},
                               {"path": "b.png", "error": reason(b"\x89PNG\r\n\x1a\n")}]
    single = client.post("/v1/embed", json={"images": [{"data": base64.b64encode(b"GIF89a").decode()}]})
    assert single.status_code == 422 and single.json()["detail"] == "the image could not be processed"
    assert "error" in single.json()["results"][0]


def test_a_decompression_bomb_is_refused_per_image(make_client, models):
    small = make_client(max_pixels=1000)
    response = small.post("/v1/tag", files=files(("big.png", encoded(1, "PNG", width=100, height=100), "image/png")))
    assert response.status_code == 422
    from taglens.io.decode import DecodeOptions

    try:
        decode(encoded(1, "PNG", width=100, height=100), DecodeOptions(max_pixels=1000))
    except ImageDecodeError as exc:
        assert response.json()["results"][0]["error"] == exc.reason


@pytest.mark.parametrize("route, payload, where", [
    ("/v1/tag", {"threshold": 1.5}, "threshold"),
    ("/v1/tag", {"top_k": 0}, "top_k"),
    ("/v1/classify", {}, "labels"),
    ("/v1/classify", {"labels": ["a", " "]}, "labels"),
    ("/v1/classify", {"labels": ["a"], "templates": ["no placeholder"]}, "templates"),
    ("/v1/analyze", {"tasks": ["classify"]}, "body"),
    ("/v1/analyze", {"tasks": ["colour"]}, "tasks"),
    ("/v1/nsfw", {"unknown_option": 1}, "unknown_option"),
    ("/v1/embed", {"images": []}, "images"),
    ("/v1/embed", {"images": [{"data": "x", "path": "/y"}]}, "images"),
])
def test_invalid_options_are_422_naming_the_field(client, route, payload, where):
    body = {"images": [{"data": base64.b64encode(encoded(1)).decode()}], **payload}
    response = client.post(route, json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and any(where in map(str, d["loc"]) for d in detail), detail


@pytest.mark.parametrize("route, form, message", [
    ("/v1/tag", {"exclude": "no_such_tag"}, "the model has no tag named 'no_such_tag'"),
    ("/v1/nsfw", {"positive_label": "porn"}, "has no label 'porn'"),
    ("/v1/tag", {"thresholds": "nope=0.5"}, "the model has no tag named 'nope'"),
])
def test_options_the_model_rejects_are_422(client, route, form, message):
    response = client.post(route, files=files(("a.jpg", encoded(1), "image/jpeg")), data=form)
    assert response.status_code == 422 and message in response.json()["detail"]


def test_unknown_tag_names_are_listed_and_known_ones_match_in_any_spelling(client):
    jpeg = files(("a.jpg", encoded(1), "image/jpeg"))
    response = client.post("/v1/tag", files=jpeg, data={"exclude": "smlie,Long Hair"})
    assert response.status_code == 422 and response.json()["unknown_tags"] == ["smlie"]
    assert "(did you mean 'smile'?)" in response.json()["detail"]
    tagged = client.post("/v1/tag", files=jpeg, data={"threshold": "0", "exclude": "Long Hair,SMILE"})
    assert tagged.status_code == 200
    assert {"long_hair", "smile"}.isdisjoint(t["tag"] for t in tagged.json()["results"][0]["tags"])


def test_form_mistakes_are_422(client):
    jpeg = files(("a.jpg", encoded(1), "image/jpeg"))
    assert client.post("/v1/tag", files=jpeg, data={"thresholds": "no value"}).status_code == 422
    assert client.post("/v1/tag", files=jpeg, data={"typo": "1"}).status_code == 422
    assert client.post("/v1/tag", data={"threshold": "0.5"}).status_code in (415, 422)  # no file at all
    none = client.post("/v1/tag", files=[("other", ("a.jpg", encoded(1), "image/jpeg"))])
    assert none.status_code == 422
    assert client.post("/v1/tag", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    assert client.post("/v1/tag", json=[1, 2]).status_code == 422
    assert client.post("/v1/tag", json={"images": [{"data": "!!!"}]}).status_code == 422


def test_paths_inside_an_allowed_folder(make_client, library):
    photos = library["photos"]
    allowed = make_client(allow_paths=[photos])
    inside = str(photos / "img001.jpg")
    response = allowed.post("/v1/nsfw", json={"images": [{"path": inside}, {"path": str(photos / "missing.jpg")}]})
    assert response.status_code == 200
    good, missing = response.json()["results"]
    assert good["path"] == inside and "nsfw" in good
    assert missing == {"path": str(photos / "missing.jpg"), "error": "no such file"}


def test_a_job_failing_on_one_image_keeps_the_other_jobs_fields(client, monkeypatch, tmp_path):
    """The analyze answer keeps the tags and embedding of an image the NSFW classifier fails on, and
    names the failed job (``nsfw_error``); the other images in its batch are complete. An image with
    no result at all is what makes a 422."""
    from ..faults import poison_nsfw, write_poison

    poison_nsfw(monkeypatch)
    poison = write_poison(tmp_path / "poison.png").read_bytes()
    response = client.post("/v1/analyze", files=files(("a.jpg", encoded(1), "image/jpeg"),
                                                      ("poison.png", poison, "image/png"),
                                                      ("b.jpg", encoded(2), "image/jpeg")),
                           data={"tasks": "tag,nsfw,embed"})
    assert response.status_code == 200, response.text
    a, bad, b = response.json()["results"]
    assert set(bad) == {"path", "tags", "embedding", "nsfw_error"} and "injected" in bad["nsfw_error"]
    assert bad["tags"] is not None and len(bad["embedding"]) > 0
    assert {"tags", "nsfw", "embedding"} <= set(a) and not any(k.endswith("error") for k in {**a, **b})
    only = client.post("/v1/nsfw", files=files(("poison.png", poison, "image/png")))
    assert only.status_code == 422
    [record] = only.json()["results"]
    assert record["error"] == record["nsfw_error"] and "injected" in record["error"]


def test_a_path_that_is_not_utf8_is_answered_exactly(make_client, tmp_path):
    """``{"path": ".../bad\\udcff\\udcfe.jpg"}`` (the JSON escape of the bytes \\xff\\xfe) reads that
    file and the answer names it in the same escaped form, which decodes back to the name's bytes."""
    import os

    folder = tmp_path / "photos"
    folder.mkdir()
    name = os.fsdecode(os.fsencode(folder) + b"/bad\xff\xfe.jpg")
    picture(1).save(name, format="JPEG")
    allowed = make_client(allow_paths=[folder])
    body = json.dumps({"images": [{"path": name}]})  # ensure_ascii: the \\udcXX escapes
    response = allowed.post("/v1/nsfw", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    response.content.decode("utf-8")
    [result] = response.json()["results"]
    assert os.fsencode(result["path"]) == os.fsencode(folder) + b"/bad\xff\xfe.jpg" and "nsfw" in result
