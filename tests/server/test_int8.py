"""The HTTP service with ``dtype: int8``: every image endpoint answers from int8 models (their
Linear layers quantised), the same records as the offline engine on those models."""

from __future__ import annotations

from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

from taglens.models.modelset import TaskRequest

from .conftest import encoded
from .test_images_api import assert_close, files, reference


def test_every_endpoint_runs_int8_models(make_client):
    client = make_client(dtype="int8")
    models = client.app.state.service.models
    image = encoded(8)
    response = client.post("/v1/analyze", files=files(("z.jpg", image, "image/jpeg")),
                           data={"tasks": "tag,classify,nsfw,embed", "labels": ["a cat,a dog"]})
    assert response.status_code == 200, response.text
    [record] = response.json()["results"]
    assert set(record) == {"path", "tags", "labels", "nsfw", "embedding"}
    want = reference(client, TaskRequest(tasks=("tag", "classify", "nsfw", "embed"), labels=("a cat", "a dog")),
                     [image], ["z.jpg"])
    assert_close([record], want)
    for network in (models.load_tagger().model, models.load_embedder().model.model,
                    models.load_nsfw().classifier.model):
        assert any(isinstance(m, DynamicInt8Linear) for m in network.modules()), type(network)
    for route in ("/v1/tag", "/v1/nsfw", "/v1/embed"):
        answer = client.post(route, files=files(("z.jpg", image, "image/jpeg")))
        assert answer.status_code == 200 and not answer.json()["results"][0].get("error"), answer.text
