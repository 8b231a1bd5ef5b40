"""The library end to end with the real model families on the tiny checkpoints: JoyTag, SigLIP
(and CLIP) and the ViT NSFW classifier, loaded through `taglens.library.load_models` exactly as
``taglens index`` loads them. Expected values come from transformers and from each family's own
Python API, never from the library."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from taglens.engine import EngineOptions
from taglens.library import Library, load_models
from taglens.models.vit_classifier import NsfwDetector
from taglens.models.joytag import Tagger
from taglens.models.siglip import Embedder

from .conftest import make_photos, picture

OPTIONS = EngineOptions(batch_size=4, workers=2)
SRC = Path(__file__).resolve().parents[3] / "src"


def sources(checkpoints, siglip="siglip64", **kwargs):
    names = {"tagger": checkpoints["joytag"], "siglip": checkpoints[siglip], "nsfw_model": checkpoints["vit"]}
    names.update(kwargs)
    return load_models(**names, device="cpu")


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("real") / "photos"
    make_photos(folder, 6)
    picture(50, 40, 70).convert("L").convert("RGB").save(folder / "grey.png")  # a different kind of picture
    return folder


@pytest.fixture(scope="module")
def indexed(checkpoints, photo_folder, tmp_path_factory):
    lib = Library.open(tmp_path_factory.mktemp("real-lib"), create=True)
    report = lib.index([photo_folder], sources(checkpoints), options=OPTIONS)
    assert (report.computed, report.errors, sorted(report.loaded)) == (7, 0, ["embed", "nsfw", "tag"])
    yield lib
    lib.close()


def paths_of(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.iterdir())


def test_an_indexed_image_queried_by_itself_comes_first_with_cosine_one(indexed, photo_folder):
    for path in paths_of(photo_folder):
        hits = indexed.search(image=path, limit=2)
        assert hits[0].path == path
        assert hits[0].score == pytest.approx(1.0, abs=1e-3)
        assert hits[1].score < hits[0].score


def test_stored_embeddings_are_the_embedders_own(indexed, checkpoints, photo_folder):
    paths = paths_of(photo_folder)
    expected = Embedder.from_pretrained(checkpoints["siglip64"], device="cpu").embed_images(paths)
    index = indexed.vector_index()
    content = {r["path"]: r["content"] for r in indexed.conn.execute("SELECT path, content FROM files")}
    stored = index.vectors(np.array([content[p] for p in paths]))
    assert np.abs(stored - expected).max() < 1e-3  # float16 storage
    query = paths[3]
    outside = photo_folder.parent / "outside.jpg"  # not in the library: embedded now, through the engine
    Image.open(query).save(outside, quality=95)
    hits = indexed.search(image=str(outside), limit=7)
    expected_outside = Embedder.from_pretrained(checkpoints["siglip64"], device="cpu").embed_images([str(outside)])[0]
    cosines = {p: float(v @ expected_outside) for p, v in zip(paths, expected)}
    assert [h.path for h in hits] == sorted(cosines, key=lambda p: -cosines[p])
    np.testing.assert_allclose([h.score for h in hits], [cosines[h.path] for h in hits], atol=2e-3)


def test_text_scores_are_siglips_calibrated_probability(indexed, checkpoints, photo_folder):
    """sigmoid(logit_scale * cos + logit_bias), from transformers' own SiglipModel and processor."""
    from transformers import AutoModel, AutoProcessor

    folder = checkpoints["siglip64"]
    model = AutoModel.from_pretrained(folder, use_safetensors=True).eval()
    processor = AutoProcessor.from_pretrained(folder)
    paths = paths_of(photo_folder)
    images = [Image.open(p).convert("RGB") for p in paths]
    query = "a dog on a beach"
    inputs = processor(text=[query], images=images, padding="max_length", return_tensors="pt")
    with torch.no_grad():
        expected = torch.sigmoid(model(**inputs).logits_per_image[:, 0]).numpy()
    hits = indexed.search(query, limit=len(paths))
    got = {h.path: h.score for h in hits}
    assert set(got) == set(paths)
    np.testing.assert_allclose([got[p] for p in paths], expected, atol=2e-3)
    assert [h.score for h in hits] == sorted(got.values(), reverse=True)
    cut = float(np.median(list(got.values())))
    above = indexed.search(query, min_score=cut, limit=len(paths))
    assert {h.path for h in above} == {p for p in paths if got[p] >= cut}


def test_tag_and_nsfw_filters_on_real_records(indexed, checkpoints, photo_folder):
    paths = paths_of(photo_folder)
    tagged = {r.path: {t.tag for t in r.tags} for r in Tagger.from_pretrained(checkpoints["joytag"], device="cpu")(paths)}
    unsafe = {r.path: r.nsfw.scores["nsfw"]
              for r in NsfwDetector.from_pretrained(checkpoints["vit"], device="cpu")(paths)}
    # a tag some images have and others do not, judged by the tagger itself
    counts = {t: sum(t in tags for tags in tagged.values()) for tags in tagged.values() for t in tags}
    tag = min((t for t in counts if 0 < counts[t] < len(paths)), key=lambda t: (abs(counts[t] - len(paths) / 2), t))
    with_tag = indexed.search(tags=[tag], limit=100)
    assert {h.path for h in with_tag} == {p for p in paths if tag in tagged[p]}
    assert all(tag in {t.tag for t in h.tags} for h in with_tag)
    without = indexed.search(no_tags=[tag], limit=100)
    assert {h.path for h in without} == {p for p in paths if tag not in tagged[p]}
    cut = float(np.median(list(unsafe.values())))
    safe = indexed.search(image=paths[0], max_nsfw=cut, limit=100)
    assert {h.path for h in safe} == {p for p in paths if unsafe[p] <= cut}
    for hit in safe:
        assert hit.nsfw.scores["nsfw"] == pytest.approx(unsafe[hit.path], abs=1e-6)


def test_a_new_siglip_re_embeds_only_and_search_follows_it(checkpoints, photo_folder, tmp_path):
    lib = Library.open(tmp_path / "lib", create=True)
    lib.index([photo_folder], sources(checkpoints), options=OPTIONS)
    tags_before = lib.conn.execute("SELECT * FROM tags ORDER BY content, tag").fetchall()
    nsfw_before = lib.conn.execute("SELECT * FROM nsfw ORDER BY content").fetchall()
    again = lib.index([photo_folder], sources(checkpoints, siglip="siglip16"), options=OPTIONS)
    assert (again.unchanged, again.computed, again.loaded) == (0, 7, ["embed"])
    assert lib.conn.execute("SELECT * FROM tags ORDER BY content, tag").fetchall() == tags_before
    assert lib.conn.execute("SELECT * FROM nsfw ORDER BY content").fetchall() == nsfw_before
    assert lib.embed_model()["model_id"] == str(checkpoints["siglip16"])
    expected = Embedder.from_pretrained(checkpoints["siglip16"], device="cpu")
    hits = lib.search("a cat", limit=7)
    vectors = expected.embed_images([h.path for h in hits])
    probability = expected.text_probability(vectors @ expected.embed_texts(["a cat"])[0])
    np.testing.assert_allclose([h.score for h in hits], probability, atol=2e-3)
    lib.close()


def test_clip_library_search_scores_cosines(checkpoints, photo_folder, tmp_path):
    lib = Library.open(tmp_path / "lib", create=True)
    lib.index([photo_folder], load_models(tagger=None, nsfw_model=None, siglip=checkpoints["clip"], device="cpu"),
              options=OPTIONS)
    clip = Embedder.from_pretrained(checkpoints["clip"], device="cpu")
    assert clip.logit_bias is None
    paths = paths_of(photo_folder)
    cosines = clip.embed_images(paths) @ clip.embed_texts(["a red car"])[0]
    hits = lib.search("a red car", limit=len(paths))
    got = {h.path: h.score for h in hits}
    np.testing.assert_allclose([got[p] for p in paths], cosines, atol=2e-3)
    with pytest.raises(Exception, match="no tags"):
        lib.search("a red car", tags=["dog"])
    lib.close()


def test_reindexing_an_unchanged_folder_loads_no_model_and_imports_no_torch(checkpoints, photo_folder, tmp_path):
    lib = Library.open(tmp_path / "lib", create=True)
    lib.index([photo_folder], sources(checkpoints), options=OPTIONS)
    lib.close()
    script = (
        "import sys, json\n"
        "from taglens.library import Library, load_models\n"
        f"lib = Library.open({str(tmp_path / 'lib')!r})\n"
        f"models = load_models(tagger={str(checkpoints['joytag'])!r}, siglip={str(checkpoints['siglip64'])!r}, "
        f"nsfw_model={str(checkpoints['vit'])!r})\n"
        f"r = lib.index([{str(photo_folder)!r}], models)\n"
        "print(json.dumps([r.unchanged, r.computed, r.hashed, r.loaded, 'torch' in sys.modules]))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(SRC))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == '[7, 0, 0, [], false]'


def test_an_nsfw_classifier_without_an_nsfw_label_filters_by_its_unsafe_labels(checkpoints, photo_folder, tmp_path):
    lib = Library.open(tmp_path / "lib", create=True)
    [source] = load_models(tagger=None, siglip=None, nsfw_model=checkpoints["vit_multi"], device="cpu")
    assert source.job().positive_labels == ("porn", "hentai", "sexy")
    lib.index([photo_folder], [source], options=OPTIONS)
    paths = paths_of(photo_folder)
    scores = {r.path: r.nsfw.scores for r in NsfwDetector.from_pretrained(
        checkpoints["vit_multi"], device="cpu", positive_label="porn")(paths)}
    unsafe = {p: max(s["porn"], s["hentai"], s["sexy"]) for p, s in scores.items()}
    cut = float(np.median(list(unsafe.values())))
    assert {h.path for h in lib.search(max_nsfw=cut, limit=100)} == {p for p in paths if unsafe[p] <= cut}
    lib.close()


def test_a_job_failing_on_an_image_keeps_its_other_results_and_is_retried_next_run(checkpoints, tmp_path,
                                                                                   monkeypatch):
    from taglens.library import db

    from ...faults import poison_nsfw, write_poison

    folder = tmp_path / "photos"
    make_photos(folder, 3)
    poison = write_poison(folder / "poison.png")
    poison_nsfw(monkeypatch)
    with Library.open(tmp_path / "lib", create=True) as lib:
        report = lib.index([folder], sources(checkpoints), options=OPTIONS)
        assert (report.computed, report.partial, report.errors) == (4, 1, 0)
        assert "4 computed (1 partial: retried next run)" in report.line()
        row = db.file_by_path(lib.conn, str(poison))
        assert row["status"] == "ok" and row["error"] is None  # the file is fine; one job was not
        stored = {table: lib.conn.execute(f"SELECT count(*) AS n FROM {table} WHERE content = ?",
                                          (row["content"],)).fetchone()["n"]
                  for table in ("tag_sets", "embeddings", "nsfw", "task_errors")}
        assert stored == {"tag_sets": 1, "embeddings": 1, "nsfw": 0, "task_errors": 1}
        [failed] = lib.conn.execute("SELECT m.task, e.error FROM task_errors e JOIN models m ON m.id = e.model"
                                    ).fetchall()
        assert failed["task"] == "nsfw" and "injected" in failed["error"]
        assert [m["failed"] for m in lib.stats()["models"] if m["task"] == "nsfw"] == [1]
        assert [h.path for h in lib.search("a photo", limit=10)].count(str(poison)) == 1  # its embedding is searchable

        monkeypatch.undo()  # the classifier works again: only the missing result is computed
        again = lib.index([folder], sources(checkpoints), options=OPTIONS)
        assert (again.unchanged, again.computed, again.partial, again.loaded) == (3, 1, 0, ["nsfw"])
        assert lib.conn.execute("SELECT count(*) AS n FROM task_errors").fetchone()["n"] == 0
        assert lib.conn.execute("SELECT count(*) AS n FROM nsfw WHERE content = ?", (row["content"],)
                                ).fetchone()["n"] == 1
