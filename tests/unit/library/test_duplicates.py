"""Near-duplicates among resized and recompressed copies, on both index kinds."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from taglens.engine import EngineOptions
from taglens.library import Library

from .conftest import picture

OPTIONS = EngineOptions(batch_size=4, workers=2)


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "dups"
    folder.mkdir()
    for i in range(5):
        picture(i, 96, 72).save(folder / f"orig{i}.png")
    original = Image.open(folder / "orig0.png")
    original.save(folder / "orig0_q60.jpg", quality=60)
    original.resize((64, 48), Image.LANCZOS).save(folder / "orig0_small.jpg", quality=85)
    Image.open(folder / "orig3.png").save(folder / "orig3_q40.jpg", quality=40)
    shutil.copy(folder / "orig4.png", folder / "orig4_copy.png")
    return folder


@pytest.mark.parametrize("exact_limit", [1000, 2])
def test_recompressed_and_resized_copies_are_grouped(tmp_path, folder, models, embedder, exact_limit):
    lib = Library.open(tmp_path / "l", create=True, embedder_loader=lambda *a: embedder, exact_limit=exact_limit)
    lib.index([folder], models[0], options=OPTIONS)
    groups = lib.duplicates(threshold=0.95)
    as_names = sorted(tuple(p.rsplit("/", 1)[1] for p in g.paths) for g in groups)
    assert as_names == [("orig0.png", "orig0_q60.jpg", "orig0_small.jpg"), ("orig3.png", "orig3_q40.jpg"),
                        ("orig4.png", "orig4_copy.png")]
    by_first = {g.paths[0].rsplit("/", 1)[1]: g for g in groups}
    assert by_first["orig4.png"].similarity == 1.0
    assert 0.95 <= by_first["orig0.png"].similarity < 1.0
    # above every copy's similarity nothing but the byte-identical pair is left
    assert [len(g.paths) for g in lib.duplicates(threshold=0.99999)] == [2]
    lib.close()
