"""Limits: sizes (413), types (415), a full queue (503 + Retry-After), timeouts (504, 408)."""

from __future__ import annotations

import base64
import socket
import threading
import time

import pytest

from taglens.server import Settings

from .conftest import LiveServer, encoded


def upload(n: int, seed: int = 1):
    return [("files", (f"{i}.jpg", encoded(seed + i), "image/jpeg")) for i in range(n)]


def metric(client, name: str) -> float:
    """A sample's value from /metrics; a name without labels sums every labelled sample."""
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        key = line.rsplit(" ", 1)[0]
        if key == name or ("{" not in name and key.startswith(name + "{")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_size_limits_are_413_and_too_many_images_422(make_client):
    client = make_client(max_request_bytes=64 * 1024, max_image_bytes=8 * 1024, max_images_per_request=3)
    big = encoded(1, "PNG", width=200, height=200)
    assert len(big) > 8 * 1024
    too_big_image = client.post("/v1/tag", files=[("files", ("big.png", big, "image/png"))])
    assert too_big_image.status_code == 413 and "big.png" in too_big_image.json()["detail"]
    as_json = client.post("/v1/tag", json={"images": [{"data": base64.b64encode(big).decode()}]})
    assert as_json.status_code == 413
    too_many = client.post("/v1/tag", files=upload(4))
    assert too_many.status_code == 422
    assert too_many.json()["detail"][0]["msg"] == "4 images in one request; the limit is 3"
    too_many_json = client.post("/v1/tag", json={"images": [{"data": "AA=="}] * 4})
    assert too_many_json.status_code == 422 and too_many_json.json()["detail"][0]["loc"] == ["body", "images"]
    declared = client.post("/v1/tag", content=b"x" * (70 * 1024), headers={"content-type": "application/json"})
    assert declared.status_code == 413 and declared.json()["detail"] == "request body larger than 65536 bytes"

    def chunks():  # no Content-Length: counted while it streams
        for _ in range(100):
            yield b"x" * 1024

    streamed = client.post("/v1/tag", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert client.post("/v1/tag", files=upload(3)).status_code == 200  # within every limit
    assert metric(client, "taglens_rejected_total") >= 1


def test_unsupported_types_are_415(client):
    text = client.post("/v1/tag", content=b"hello", headers={"content-type": "text/plain"})
    assert text.status_code == 415
    assert client.post("/v1/tag", content=b"", headers={}).status_code == 415
    assert client.post("/v1/tag", data={"threshold": "0.5"}).status_code == 415  # urlencoded form
    html = client.post("/v1/tag", files=[("files", ("x.html", b"<html></html>", "text/html"))])
    assert html.status_code == 415 and "text/html" in html.json()["detail"]
    pdf = client.post("/v1/search", files=[("files", ("x.pdf", b"%PDF-1.4", "application/pdf"))])
    assert pdf.status_code == 415
    assert metric(client, 'taglens_rejected_total{reason="unsupported_type"}') >= 5


@pytest.fixture
def gated(make_client, library, monkeypatch):
    """A server whose JoyTag forward pass waits for ``gate`` (so the queue can be filled)."""
    def make(**settings):
        client = make_client(library=library["folder"], **settings)
        gate = threading.Event()
        tagger = client.app.state.service.models.load_tagger()
        launch = tagger.launch_scores  # the forward pass the engine queues

        def slow(pixels):
            gate.wait(30)
            return launch(pixels)

        monkeypatch.setattr(tagger, "launch_scores", slow)
        return client, gate

    return make


def wait_until(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_a_full_queue_answers_503_with_retry_after_and_recovers(gated):
    client, gate = gated(queue_size=4, max_images_per_request=4)
    service = client.app.state.service
    results = {}
    first = threading.Thread(target=lambda: results.setdefault("first", client.post("/v1/tag", files=upload(4))))
    first.start()
    wait_until(lambda: service.admitted == 4)
    refused = client.post("/v1/tag", files=upload(1))
    assert refused.status_code == 503
    assert int(refused.headers["Retry-After"]) >= 1
    assert "queue is full" in refused.json()["detail"]
    also = client.post("/v1/search", json={"q": ["x"], "images": [{"data": base64.b64encode(encoded(1)).decode()}]})
    assert also.status_code == 503
    health = client.get("/healthz").json()["queue"]
    assert health["admitted"] == 4 and health["capacity"] == 4
    gate.set()
    first.join(30)
    assert results["first"].status_code == 200 and len(results["first"].json()["results"]) == 4
    assert service.admitted == 0
    assert client.post("/v1/tag", files=upload(2)).status_code == 200
    assert metric(client, 'taglens_rejected_total{reason="queue_full"}') >= 1


def test_a_request_that_takes_too_long_is_504_and_frees_its_places(gated):
    client, gate = gated(request_timeout_s=0.5)
    started = time.monotonic()
    response = client.post("/v1/analyze", files=upload(2), data={"tasks": "tag,nsfw"})
    assert response.status_code == 504 and "timed out" in response.json()["detail"]
    assert time.monotonic() - started < 10
    assert client.app.state.service.admitted == 0
    gate.set()
    assert client.post("/v1/nsfw", files=upload(1)).status_code == 200  # the models are fine after it
    assert client.post("/v1/tag", files=upload(1)).status_code == 200
    assert metric(client, 'taglens_rejected_total{reason="timeout"}') == 1


def test_a_body_that_does_not_arrive_in_time_is_408(models):
    settings = Settings(**models, device="cpu", body_timeout_s=0.5)
    with LiveServer(settings) as server, socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /v1/tag HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n{\"images\": [")
        started = time.monotonic()
        reply = s.recv(65536).decode("latin-1")
        assert reply.startswith("HTTP/1.1 408"), reply
        assert time.monotonic() - started < 5


@pytest.mark.parametrize("route, field", [("nsfw", "threshold"), ("tag", "threshold"), ("tag", "top_k"),
                                          ("analyze", "max_nsfw"), ("search", "min_score"),
                                          ("search", "max_nsfw")])
@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_422_naming_the_field(client, route, field, number):
    image = base64.b64encode(encoded(1)).decode()
    body = '{"images": [{"data": "%s"}], "%s": %s}' % (image, field, number)
    if route == "search":
        body = '{"q": ["a cat"], "%s": %s}' % (field, number)
    response = client.post(f"/v1/{route}", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", field] and "finite" in error["msg"]


@pytest.mark.parametrize("body", ["[" * 100_000 + "]" * 100_000,
                                  '{"images": ' + "[" * 100_000 + "]" * 100_000 + "}",
                                  '{"q": ["a"], "x": ' + '{"a": ' * 50_000 + "1" + "}" * 50_001])
def test_json_nested_deep_is_refused_before_parsing(client, body):
    response = client.post("/v1/search", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert "nested" in response.json()["detail"][0]["msg"]


def test_brackets_inside_strings_do_not_count_as_depth():
    from taglens.server.inputs import json_depth

    assert json_depth(b'{"q": ["[[[[{{{{\\"[[["], "a": [[1]]}') == 3
    assert json_depth(b"1") == 0


def test_a_client_trickling_header_lines_is_cut_off_and_one_client_holds_few_connections(models):
    import uvicorn

    from taglens.server import create_app
    from taglens.server.connections import uvicorn_options

    settings = Settings(**models, device="cpu", header_timeout_s=1.0, max_connections_per_client=3)
    server = LiveServer(settings)
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=server.port, log_level="warning",
                            lifespan="on", **uvicorn_options(settings))
    server.server = uvicorn.Server(config)
    server.thread = threading.Thread(target=server.server.run, daemon=True)
    with server, socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        started = time.monotonic()
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        closed = False
        while time.monotonic() - started < 8:
            try:
                s.sendall(b"X-Slow: 1\r\n")  # one header line at a time, never the blank line
            except OSError:
                closed = True
                break
            try:
                s.settimeout(0.3)
                if s.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        assert closed and time.monotonic() - started < 4, "a trickling client was never cut off"

        held = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(5)]
        try:
            answers = []
            for c in held:
                c.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                try:
                    answers.append(c.recv(64).startswith(b"HTTP/1.1 200"))
                except OSError:
                    answers.append(False)
            assert answers[:3] == [True] * 3 and not any(answers[3:]), answers
        finally:
            for c in held:
                c.close()


def test_retry_after_follows_the_measured_drain_rate():
    """Images finished at 20 per second with 40 queued: about 2 s, whatever the batch times say."""
    from collections import deque

    from taglens.server.service import Service

    service = Service.__new__(Service)
    now = time.monotonic()
    service._finished = deque([(now - 5 + 0.5 * i, 10) for i in range(10)])  # 100 images over the last 5 s
    service._cost = {"joytag": 0.7}  # a stale per-image batch cost that would say 28 s
    service._admitted = 40
    assert service._retry_after() in (2, 3)
    service._finished = deque()
    assert service._retry_after() == 28  # nothing finished yet: the batch-time estimate
