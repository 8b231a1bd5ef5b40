"""Security: loopback by default, an API key for anything else, images by id only, paths only
inside allowed folders, no cross-origin use unless allowed, no DNS rebinding."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from taglens.server import Settings

from .conftest import encoded

KEY = "k" * 24


def test_settings_refuse_an_open_bind_without_a_key(models):
    assert Settings(**models).host == "127.0.0.1"
    with pytest.raises(ValidationError, match="give an --api-key"):
        Settings(**models, host="0.0.0.0")
    with pytest.raises(ValidationError, match="give an --api-key"):
        Settings(**models, host="192.168.1.20")
    assert Settings(**models, host="0.0.0.0", api_key=KEY).auth_required
    assert not Settings(**models, host="0.0.0.0", insecure_no_auth=True).auth_required
    for loopback in ("127.0.0.1", "127.8.9.10", "::1", "localhost"):
        Settings(**models, host=loopback)
    with pytest.raises(ValidationError, match="at least 16 characters"):
        Settings(**models, api_key="short")
    with pytest.raises(ValidationError, match="cannot exceed queue_size"):
        Settings(**models, queue_size=4, max_images_per_request=5)


def test_the_api_key_guards_every_api_route(make_client, library):
    client = make_client(library=library["folder"], api_key=KEY)
    routes = [("get", "/healthz"), ("get", "/metrics"), ("get", "/v1/search?q=x"), ("get", "/v1/images/1"),
              ("get", "/v1/images/1/thumbnail"), ("get", "/v1/images/1/info"), ("get", "/v1/images/1/similar"),
              ("post", "/v1/tag"), ("post", "/v1/classify"), ("post", "/v1/nsfw"), ("post", "/v1/embed"),
              ("post", "/v1/analyze"), ("post", "/v1/search")]
    for method, path in routes:
        response = getattr(client, method)(path)
        assert response.status_code == 401, (path, response.status_code)
        assert response.headers["WWW-Authenticate"] == "Bearer"
        wrong = getattr(client, method)(path, headers={"Authorization": "Bearer " + "x" * 24})
        assert wrong.status_code == 401
    assert client.get("/healthz", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert client.get("/healthz", headers={"X-API-Key": KEY}).status_code == 200
    tagged = client.post("/v1/tag", headers={"X-API-Key": KEY}, files=[("files", ("a.jpg", encoded(1), "image/jpeg"))])
    assert tagged.status_code == 200
    assert client.get("/v1/images/1", headers={"X-API-Key": KEY}).status_code == 200
    for public in ("/", "/static/app.js", "/openapi.json", "/docs"):  # no data behind these
        assert client.get(public).status_code == 200


def test_images_are_served_by_integer_id_only(client, library):
    first = client.get("/v1/images/1")
    assert first.status_code == 200
    info = client.get("/v1/images/1/info").json()
    with open(info["paths"][0], "rb") as f:
        assert first.content == f.read()
    for path in ("/v1/images/..%2F..%2F..%2Fetc%2Fpasswd", "/v1/images/%2Fetc%2Fpasswd", "/v1/images/1.5",
                 "/v1/images/-1", "/v1/images/0", "/v1/images/99999999999999999999999",
                 "/v1/images/" + "9" * 400, "/v1/images/1%00", "/v1/images/img001.jpg",
                 "/v1/images/..%2Fphotos%2Fimg001.jpg/thumbnail"):
        response = client.get(path)
        assert response.status_code in (404, 422), (path, response.status_code)
        assert response.content != first.content
    assert client.get("/v1/images/../../etc/passwd").status_code == 404
    assert client.get("/static/..%2F..%2Fapp.py").status_code == 404
    assert client.get("/static/../app.py").status_code == 404
    assert client.get("/v1/images/4096").status_code == 404


def test_a_served_file_has_its_real_type_and_no_active_content(client):
    response = client.get("/v1/images/2")
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in response.headers["content-security-policy"]


def test_a_changed_file_is_not_served(make_client, library, tmp_path):
    """Once a file no longer has its indexed size and mtime, its id no longer leads to it."""
    client = make_client(library=library["folder"])
    info = client.get("/v1/images/3/info").json()
    path = info["paths"][0]
    st = os.stat(path)
    try:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
        assert client.get("/v1/images/3").status_code == 404
        assert client.get("/v1/images/3/thumbnail").status_code == 404
    finally:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert client.get("/v1/images/3").status_code == 200


def test_paths_outside_the_allowed_folders_are_refused(make_client, client, library, tmp_path):
    body = {"images": [{"path": str(library["paths"][0])}]}
    refused = client.post("/v1/tag", json=body)  # no --allow-path: no paths at all
    assert refused.status_code == 403 and "reads no paths" in refused.json()["detail"]
    assert "--" not in refused.json()["detail"]  # an HTTP client did not start the server: no CLI flags
    allowed_dir = tmp_path / "allowed"
    allowed_dir.mkdir()
    (allowed_dir / "ok.jpg").write_bytes(encoded(1))
    (allowed_dir / "escape.jpg").symlink_to(library["paths"][0])
    allowed = make_client(allow_paths=[allowed_dir])
    assert allowed.post("/v1/tag", json={"images": [{"path": str(allowed_dir / "ok.jpg")}]}).status_code == 200
    for outside in (str(library["paths"][0]), str(allowed_dir / ".." / library["paths"][0].name),
                    str(allowed_dir / "escape.jpg"), "/etc/passwd", "relative.jpg", str(allowed_dir) + "\x00x"):
        response = allowed.post("/v1/tag", json={"images": [{"path": outside}]})
        assert response.status_code in (403, 422), (outside, response.status_code)
        assert "tags" not in response.text


def test_host_header_and_cross_origin_requests_are_refused(client):
    assert client.get("/healthz", headers={"Host": "evil.example"}).status_code == 400  # DNS rebinding
    assert client.get("/healthz", headers={"Host": "localhost:8000"}).status_code == 200
    assert client.get("/healthz", headers={"Host": "[::1]:8000"}).status_code == 200
    same = client.get("/healthz", headers={"Origin": "http://127.0.0.1"})
    assert same.status_code == 200
    foreign = client.post("/v1/tag", headers={"Origin": "https://evil.example"},
                          files=[("files", ("a.jpg", encoded(1), "image/jpeg"))])
    assert foreign.status_code == 403
    assert "access-control-allow-origin" not in foreign.headers
    preflight = client.options("/v1/tag", headers={"Origin": "https://evil.example",
                                                   "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers


def test_cors_opens_only_for_the_origins_given(make_client):
    client = make_client(cors_origins=["http://localhost:3000"])
    preflight = client.options("/v1/tag", headers={"Origin": "http://localhost:3000",
                                                   "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
    got = client.get("/healthz", headers={"Origin": "http://localhost:3000"})
    assert got.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert client.get("/healthz", headers={"Origin": "http://localhost:3001"}).status_code == 403


def test_the_page_allows_nothing_from_outside(client):
    page = client.get("/")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    import re

    for asset in ("/", "/static/app.js", "/static/style.css"):
        text = client.get(asset).text
        urls = re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I)
        assert urls == [], (asset, urls)
    docs = client.get("/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in docs and "cdn." not in docs
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200


def test_a_loopback_bind_accepts_its_own_address_as_host(models):
    from fastapi.testclient import TestClient

    from taglens.server import Settings, create_app

    app = create_app(Settings(**models, device="cpu", host="127.0.0.2"))
    with TestClient(app, base_url="http://127.0.0.2:8000") as own:
        assert own.get("/healthz").status_code == 200
        assert own.get("/healthz", headers={"Host": "127.0.0.3:8000"}).status_code == 400
        assert own.get("/healthz", headers={"Host": "evil.example"}).status_code == 400
