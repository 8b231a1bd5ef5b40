"""Search with fake models: self-queries, calibrated text relevance, combined queries, filters."""

from __future__ import annotations

import numpy as np
import pytest

from taglens.engine import EngineOptions
from taglens.errors import LibraryError, UnknownTagError
from taglens.io.decode import decode_image
from taglens.library import Library
from taglens.library.search import split_weight

from .fakes import Pixels, embed_pixels, nsfw_for, tags_for, text_vector

OPTIONS = EngineOptions(batch_size=2, workers=2)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def reference(photos):
    """What the fakes make of each file, computed without the library."""
    out = {}
    for path in sorted(photos.iterdir()):
        pixels = Pixels()(decode_image(str(path)))
        out[str(path)] = {"vector": embed_pixels(pixels), "tags": {t.tag for t in tags_for(pixels)},
                          "unsafe": nsfw_for(pixels).scores["nsfw"]}
    return out


def discriminating_tag(ref):
    """A tag some of the pictures have and some do not."""
    counts = {}
    for r in ref.values():
        for t in r["tags"]:
            counts[t] = counts.get(t, 0) + 1
    tag = min(counts, key=lambda t: abs(counts[t] - len(ref) / 2))
    assert 0 < counts[tag] < len(ref)
    return tag


@pytest.fixture
def indexed(lib, photos, models):
    lib.index([photos], models[0], options=OPTIONS)
    return lib


@pytest.mark.parametrize("exact_limit", [1000, 2])  # exact scan, and the HNSW path
def test_an_indexed_image_queried_by_itself_comes_first_with_cosine_one(tmp_path, photos, models, embedder,
                                                                        exact_limit):
    lib = Library.open(tmp_path / "l", create=True, embedder_loader=lambda *a: embedder, exact_limit=exact_limit)
    lib.index([photos], models[0], options=OPTIONS)
    assert lib.vector_index().kind == ("exact" if exact_limit > 6 else "hnsw")
    for path in sorted(photos.iterdir()):
        hits = lib.search(image=str(path), limit=3)
        assert hits[0].path == str(path)
        assert hits[0].score == pytest.approx(1.0, abs=2e-3)
        assert hits[1].score < 0.9
    lib.close()


def test_image_scores_are_cosines_of_the_embeddings(indexed, photos):
    ref = reference(photos)
    query = sorted(ref)[2]
    hits = indexed.search(image=query, limit=6)
    expected = sorted(((float(ref[p]["vector"] @ ref[query]["vector"]), p) for p in ref), reverse=True)
    assert [h.path for h in hits] == [p for _, p in expected]
    np.testing.assert_allclose([h.score for h in hits], [s for s, _ in expected], atol=2e-3)


def test_an_image_outside_the_library_is_embedded_through_the_engine(indexed, photos, tmp_path, embedder):
    from PIL import Image

    outside = tmp_path / "outside.jpg"
    Image.open(sorted(photos.iterdir())[1]).save(outside, quality=70)
    hits = indexed.search(image=str(outside), limit=1)
    assert hits[0].path == str(sorted(photos.iterdir())[1]) and hits[0].score > 0.98
    assert embedder.jobs and embedder.jobs[0].calls == 1


def test_text_relevance_is_siglips_calibrated_probability(indexed, photos, embedder):
    ref = reference(photos)
    t = text_vector("a red square")
    expected = sorted(((float(sigmoid(10.0 * (ref[p]["vector"] @ t) - 1.0)), p) for p in ref), reverse=True)
    hits = indexed.search("a red square", limit=6)
    assert [h.path for h in hits] == [p for _, p in expected]
    np.testing.assert_allclose([h.score for h in hits], [s for s, _ in expected], atol=1e-3)
    cut = expected[2][0] - 1e-4
    assert [h.path for h in indexed.search("a red square", min_score=cut, limit=6)] == [p for _, p in expected[:3]]


def test_combined_query_with_weights_and_minus(indexed, photos):
    ref = reference(photos)
    image = sorted(ref)[0]
    t, m = text_vector("beach"), text_vector("people")

    def score(p):
        v = ref[p]["vector"]
        return (2 * sigmoid(10 * (v @ t) - 1) + 1 * (v @ ref[image]["vector"]) - 0.5 * sigmoid(10 * (v @ m) - 1)) / 3

    expected = sorted(((float(score(p)), p) for p in ref), reverse=True)
    hits = indexed.search("2:beach", image=image, minus=[(0.5, "people")], limit=6)
    assert [h.path for h in hits] == [p for _, p in expected]
    np.testing.assert_allclose([h.score for h in hits], [s for s, _ in expected], atol=2e-3)


def test_split_weight():
    assert split_weight("2:beach") == (2.0, "beach")
    assert split_weight("0.5:a: b") == (0.5, "a: b")
    assert split_weight("photo: a dog") == (1.0, "photo: a dog")
    assert split_weight("beach") == (1.0, "beach")


def test_tag_and_nsfw_filters(indexed, photos):
    ref = reference(photos)
    some_tag = discriminating_tag(ref)
    with_tag = {p for p, r in ref.items() if some_tag in r["tags"]}
    query = sorted(ref)[0]
    assert {h.path for h in indexed.search(image=query, tags=[some_tag], limit=50)} == with_tag
    assert {h.path for h in indexed.search(image=query, no_tags=[some_tag], limit=50)} == set(ref) - with_tag
    unsafe = sorted(r["unsafe"] for r in ref.values())
    cut = (unsafe[2] + unsafe[3]) / 2
    safe = {p for p, r in ref.items() if r["unsafe"] <= cut}
    assert {h.path for h in indexed.search(image=query, max_nsfw=cut, limit=50)} == safe
    # filters alone list the matching files in path order, without scores
    hits = indexed.search(tags=[some_tag], max_nsfw=cut, limit=50)
    assert [h.path for h in hits] == sorted(with_tag & safe) and all(h.score is None for h in hits)
    hit = indexed.search(image=query, limit=1)[0]
    assert {t.tag for t in hit.tags} == ref[query]["tags"]
    assert hit.nsfw.scores["nsfw"] == pytest.approx(ref[query]["unsafe"], abs=1e-6)


def test_filters_on_the_approximate_path(tmp_path, photos, models, embedder):
    lib = Library.open(tmp_path / "l", create=True, embedder_loader=lambda *a: embedder, exact_limit=2)
    lib.index([photos], models[0], options=OPTIONS)
    ref = reference(photos)
    some_tag = discriminating_tag(ref)
    with_tag = {p for p, r in ref.items() if some_tag in r["tags"]}
    # a filtered set at or below exact_limit is scanned exactly; above it, candidates are widened
    assert {h.path for h in lib.search("x", tags=[some_tag], limit=50)} == with_tag
    assert {h.path for h in lib.search("x", no_tags=[some_tag], limit=50)} == set(ref) - with_tag
    lib.close()


def test_tag_filters_take_any_case_and_spaces_and_refuse_unknown_names(indexed, photos):
    ref = reference(photos)
    some_tag = discriminating_tag(ref)
    with_tag = {p for p, r in ref.items() if some_tag in r["tags"]}
    assert {h.path for h in indexed.search(tags=[f" {some_tag.upper()} "], limit=50)} == with_tag
    assert {h.path for h in indexed.search(no_tags=[some_tag.title()], limit=50)} == set(ref) - with_tag
    # the fake tagger's tag list is not on this machine: known names are those some image carries
    with pytest.raises(UnknownTagError, match=r"the library has no tags named 'nope', 'nor this'; none of its "
                                              r"images carries such a tag") as caught:
        indexed.search("x", tags=[some_tag, "nope"], no_tags=["nor this"])
    assert caught.value.unknown == ["nope", "nor this"]


def test_json_shape(indexed, photos):
    hit = indexed.search(image=str(sorted(photos.iterdir())[0]), limit=1)[0].to_json()
    assert set(hit) == {"path", "score", "tags", "nsfw"}
    assert isinstance(hit["tags"], list) and set(hit["nsfw"]) == {"label", "score", "scores", "flagged"}


def test_errors_are_typed(lib, photos, models):
    with pytest.raises(LibraryError, match="no embeddings"):
        lib.search("x")
    lib.index([photos], models[0], options=OPTIONS)
    with pytest.raises(LibraryError, match="not only ones to push away from"):
        lib.search(minus="x")
    with pytest.raises(LibraryError, match="no such file"):
        lib.search(image="/nonexistent.png")


def test_search_refuses_an_embedder_that_is_not_the_indexed_checkpoint(tmp_path, photos, models):
    from .fakes import FakeEmbedder

    lib = Library.open(tmp_path / "l", create=True, embedder_loader=lambda *a: FakeEmbedder(revision="other"))
    lib.index([photos], models[0], options=OPTIONS)
    with pytest.raises(LibraryError, match="re-embed"):
        lib.search("x")
    lib.close()


def test_an_embedding_is_a_query_image_and_exclude_leaves_contents_out(indexed, photos):
    """What the HTTP service passes: embeddings it computed itself, and image ids to leave out."""
    ref = reference(photos)
    path = sorted(ref)[0]
    by_file = indexed.search(image=path, limit=4)
    by_vector = indexed.search(image=[ref[path]["vector"]], limit=4)
    assert [h.path for h in by_vector] == [h.path for h in by_file]
    assert [h.score for h in by_vector] == pytest.approx([h.score for h in by_file], abs=1e-3)  # stored as float16
    content = indexed.conn.execute("SELECT content FROM files WHERE path = ?", (path,)).fetchone()["content"]
    without = indexed.search(image=[ref[path]["vector"]], limit=3, exclude={content})
    assert [h.path for h in without] == [h.path for h in by_file[1:4]]
