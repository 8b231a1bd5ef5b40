"""Search and images: the library's own answers, with image ids; example images by upload or id;
an image's file, thumbnail, facts and neighbours."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from taglens.library import Library, db

from .conftest import encoded


@pytest.fixture
def lib(client, library):
    embedder = client.app.state.service.models.load_embedder()
    with Library.open(library["folder"], embedder_loader=lambda model_id, revision: embedder) as opened:
        yield opened


def stored(lib, content: int) -> np.ndarray:
    model = db.current_model(lib.conn, "embed")
    vector = db.embedding_of(lib.conn, content, model["id"])
    return vector / np.linalg.norm(vector)


def content_of(lib, path: str) -> int:
    return db.file_by_path(lib.conn, path)["content"]


def test_text_search_is_the_librarys_search_with_ids(client, lib):
    response = client.get("/v1/search", params={"q": ["a red car", "2:sky"], "minus": "people", "limit": 5})
    assert response.status_code == 200, response.text
    got = response.json()["results"]
    want = [h.to_json() for h in lib.search(["a red car", "2:sky"], minus=["people"], limit=5)]
    assert [{k: v for k, v in g.items() if k != "id"} for g in got] == want
    assert [g["id"] for g in got] == [content_of(lib, g["path"]) for g in got]
    assert len(got) == 5 and got == sorted(got, key=lambda g: -g["score"])


def test_filters(client, lib):
    tag_counts = {}
    for hit in lib.search(tags=(), max_nsfw=1.0, limit=100):
        for t in hit.tags:
            tag_counts[t.tag] = tag_counts.get(t.tag, 0) + 1
    some = next(t for t, n in sorted(tag_counts.items()) if 0 < n < 12)
    with_tag = client.get("/v1/search", params={"tag": some, "limit": 100}).json()["results"]
    assert len(with_tag) == tag_counts[some] and all(h["score"] is None for h in with_tag)
    assert all(some in {t["tag"] for t in h["tags"]} for h in with_tag)
    without = client.get("/v1/search", params={"q": "x", "no_tag": some, "limit": 100}).json()["results"]
    assert len(without) == 12 - tag_counts[some]
    safe = client.get("/v1/search", params={"q": "x", "max_nsfw": 0.4, "limit": 100}).json()["results"]
    assert safe and all(h["nsfw"]["scores"]["nsfw"] <= 0.4 for h in safe)
    assert len(safe) == len(lib.search("x", max_nsfw=0.4, limit=100))
    assert client.get("/v1/search", params={"max_nsfw": 2}).status_code == 422
    assert client.get("/v1/search", params={"limit": 0}).status_code == 422


def test_search_by_uploaded_image_finds_it_first(client, library, lib):
    target = library["paths"][4]
    png = io.BytesIO()
    Image.open(target).save(png, "PNG")  # the same picture, other bytes: found by its embedding
    response = client.post("/v1/search", files=[("files", ("q.png", png.getvalue(), "image/png"))],
                           data={"limit": "3"})
    assert response.status_code == 200, response.text
    hits = response.json()["results"]
    assert hits[0]["path"] == str(target) and hits[0]["score"] == pytest.approx(1.0, abs=2e-3)
    assert len(hits) == 3
    as_json = client.post("/v1/search", json={"images": [{"data": base64.b64encode(png.getvalue()).decode()}],
                                              "limit": 3}).json()["results"]
    assert [h["id"] for h in as_json] == [h["id"] for h in hits]


def test_search_by_indexed_ids_ranks_by_cosine(client, lib, library):
    first = content_of(lib, str(library["paths"][0]))
    hits = client.post("/v1/search", json={"image_ids": [first], "limit": 12}).json()["results"]
    query = stored(lib, first)
    cosines = {h["id"]: float(stored(lib, h["id"]) @ query) for h in hits}
    assert hits[0]["id"] == first
    assert [h["id"] for h in hits] == sorted(cosines, key=lambda i: -cosines[i])
    for h in hits:
        assert h["score"] == pytest.approx(cosines[h["id"]], abs=2e-3)
    pushed = client.post("/v1/search", json={"image_ids": [first], "minus_image_ids": [hits[1]["id"]],
                                             "limit": 12}).json()["results"]
    assert [h["id"] for h in pushed].index(hits[1]["id"]) > 1
    assert client.post("/v1/search", json={"image_ids": [987654]}).status_code == 404


def test_similar_leaves_the_image_itself_out(client, lib, library):
    first = content_of(lib, str(library["paths"][0]))
    similar = client.get(f"/v1/images/{first}/similar", params={"limit": 4}).json()["results"]
    assert len(similar) == 4 and first not in [h["id"] for h in similar]
    with_self = client.post("/v1/search", json={"image_ids": [first], "limit": 5}).json()["results"]
    assert [h["id"] for h in similar] == [h["id"] for h in with_self[1:]]
    assert client.get("/v1/images/987654/similar").status_code == 404


def test_info_thumbnail_and_file(client, lib, library):
    path = str(library["paths"][2])
    content = content_of(lib, path)
    info = client.get(f"/v1/images/{content}/info").json()
    row = lib.conn.execute("SELECT * FROM contents WHERE id = ?", (content,)).fetchone()
    assert info["paths"] == [path] and (info["sha256"], info["width"], info["height"]) == (
        row["sha256"], row["width"], row["height"])
    [hit] = [h for h in lib.search(image=[path], limit=12) if h.path == path]
    assert info["tags"] == hit.to_json()["tags"] and info["nsfw"] == hit.to_json()["nsfw"]
    thumb = client.get(f"/v1/images/{content}/thumbnail", params={"size": 32})
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    small = Image.open(io.BytesIO(thumb.content))
    assert small.format == "JPEG" and max(small.size) == 32
    again = client.get(f"/v1/images/{content}/thumbnail", params={"size": 32})
    assert again.content == thumb.content  # from the cache
    default = Image.open(io.BytesIO(client.get(f"/v1/images/{content}/thumbnail").content))
    assert default.size == Image.open(path).size  # never enlarged (96 x 72 is below 256)
    for missing in ("info", "thumbnail"):
        assert client.get(f"/v1/images/987654/{missing}").status_code == 404
    assert client.get("/v1/images/987654").status_code == 404
    assert client.get(f"/v1/images/{content}/thumbnail", params={"size": 5000}).status_code == 422


def test_a_query_image_that_cannot_be_decoded_is_422(client):
    response = client.post("/v1/search", files=[("files", ("q.jpg", b"\xff\xd8\xff nope", "image/jpeg"))])
    assert response.status_code == 422
    assert response.json()["results"][0]["path"] == "q.jpg" and response.json()["results"][0]["error"]


def test_without_a_library_search_and_images_are_404(make_client):
    client = make_client()
    for path in ("/v1/search?q=x", "/v1/images/1", "/v1/images/1/info", "/v1/images/1/thumbnail",
                 "/v1/images/1/similar"):
        response = client.get(path)
        assert response.status_code == 404 and "no library" in response.json()["detail"]
    assert client.post("/v1/search", json={"q": ["x"]}).status_code == 404
    assert client.get("/healthz").json()["library"] is False


def test_a_library_that_cannot_answer_is_409(make_client, tmp_path):
    Library.open(tmp_path / "empty", create=True).close()
    client = make_client(library=tmp_path / "empty")
    response = client.get("/v1/search", params={"q": "x"})
    assert response.status_code == 409 and "no embeddings yet" in response.json()["detail"]
    assert client.get("/v1/search", params={"tag": "x"}).status_code == 409
    assert client.post("/v1/search", json={"q": ["x"], "images": [{"data": base64.b64encode(encoded(1)).decode()}]}
                       ).status_code == 409


def test_tag_filters_take_spaces_and_any_case_and_unknown_names_are_422_naming_them(client, lib):
    from ..conftest import JOYTAG_TINY

    carried = {t.tag for hit in lib.search(tags=(), max_nsfw=1.0, limit=100) for t in hit.tags}
    spaced = sorted(t for t in carried if "_" in t and t.replace("_", "").isalpha())[0]
    exact = client.get("/v1/search", params={"tag": spaced, "limit": 100}).json()["results"]
    typed = client.get("/v1/search", params={"tag": spaced.replace("_", " ").title(), "limit": 100})
    assert typed.status_code == 200 and typed.json()["results"] == exact and exact
    # a tag of the tagger that no image carries is known: it filters nothing out
    vocabulary = (JOYTAG_TINY / "top_tags.txt").read_text().split()
    absent = next(t for t in vocabulary if t not in carried)
    assert len(client.get("/v1/search", params={"no_tag": absent, "limit": 100}).json()["results"]) == 12
    for params in ({"tag": "lnog_hair"}, {"q": "x", "no_tag": "lnog_hair"}):
        response = client.get("/v1/search", params=params)
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["unknown_tags"] == ["lnog_hair"]
        assert "has no tag named 'lnog_hair' (did you mean 'long_hair'?)" in body["detail"]
    response = client.post("/v1/search", json={"q": ["x"], "tags": [spaced, "nope_nope"]})
    assert response.status_code == 422 and response.json()["unknown_tags"] == ["nope_nope"]


def test_search_queries_run_their_text_tower_on_the_engines_model_thread(client, monkeypatch):
    import threading

    embedder = client.app.state.service.models.load_embedder()
    threads = []
    real = type(embedder).embed_texts

    def recording(self, texts, *args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(self, texts, *args, **kwargs)

    monkeypatch.setattr(type(embedder), "embed_texts", recording)
    response = client.get("/v1/search", params={"q": "a query never asked before 7f3a", "limit": 3})
    assert response.status_code == 200, response.text
    assert threads and set(threads) == {"taglens-models"}


def test_thumbnails_are_admitted_bounded_and_cached_on_disk(make_client, library, monkeypatch):
    """A burst of thumbnails decodes at most ``decode_workers`` at once, each counted in the queue
    (a full queue answers 503), and a thumbnail is kept in the library: a new server (a restart)
    serves it without decoding again."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import taglens.server.catalog as catalog_module

    real_decode = catalog_module.decode
    running, most, decoded = [0], [0], []
    lock = threading.Lock()

    def slow_decode(path, options):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            decoded.append((path, options))
        time.sleep(0.2)
        try:
            return real_decode(path, options)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(catalog_module, "decode", slow_decode)
    client = make_client(library=library["folder"], decode_workers=2, queue_size=64, max_pixels=10_000_000)
    ids = sorted({row["content"] for row in client.app.state.catalog.library.conn.execute("SELECT content FROM files")})
    size = 40 + len(decoded)  # a size no other test asked for: nothing cached yet
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: client.get(f"/v1/images/{i}/thumbnail", params={"size": size}), ids[:8]))
    assert [a.status_code for a in answers] == [200] * 8
    assert most[0] <= 2 and len(decoded) == 8
    assert all(options.max_pixels == 10_000_000 and options.draft for _, options in decoded)
    budget = client.app.state.service.thumbnail_budget
    assert 96 * 72 <= budget.most <= 2 * 96 * 72 and budget.used == 0  # each held its header's pixels
    assert any((library["folder"] / "thumbnails").glob("*.jpg"))

    restarted = make_client(library=library["folder"], decode_workers=2)
    again = restarted.get(f"/v1/images/{ids[0]}/thumbnail", params={"size": size})
    assert again.status_code == 200 and len(decoded) == 8  # from the disk cache

    full = make_client(library=library["folder"], queue_size=1, max_images_per_request=1)
    with full.app.state.service.admit(1):
        busy = full.get(f"/v1/images/{ids[1]}/thumbnail", params={"size": size + 1})
    assert busy.status_code == 503 and "retry-after" in busy.headers
