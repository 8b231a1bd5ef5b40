"""Fixtures for the library tests: distinct generated pictures, and a library using the fakes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from taglens.library import Library

from .fakes import FakeEmbedder, fake_models


def picture(seed: int, width: int = 64, height: int = 48) -> Image.Image:
    """A smooth random colour field: different seeds give unrelated pictures."""
    rng = np.random.default_rng(seed)
    grid = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), "RGB")
    return grid.resize((width, height), Image.BICUBIC)


def make_photos(folder: Path, n: int, start: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        path = folder / f"img{i:03d}.png"
        picture(i).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    make_photos(folder, 6)
    return folder


@pytest.fixture
def embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture
def lib(tmp_path: Path, embedder: FakeEmbedder):
    library = Library.open(tmp_path / "lib", create=True, embedder_loader=lambda model_id, revision: embedder)
    yield library
    library.close()


@pytest.fixture
def models():
    return fake_models()
