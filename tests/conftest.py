"""Shared fixtures: tiny checkpoints in the hub's folder layout, written once per test session,
and small generated images."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FIXTURES = Path(__file__).parent / "fixtures"
JOYTAG_TINY = FIXTURES / "joytag-tiny"
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "pillow-test-images"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# the CPU route probe's decisions (taglens.engine.cpu_probe) go to a folder of this session's own
os.environ.setdefault("TAGLENS_CACHE_DIR", tempfile.mkdtemp(prefix="taglens-cache-"))


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random-weight checkpoints, each exactly as a hub snapshot folder is laid out (``*_tf5``:
    as transformers 5's ``save_pretrained`` of the model and its processor lays it out)."""
    from taglens.testing import write_clip, write_siglip, write_vit_classifier

    root = tmp_path_factory.mktemp("checkpoints")
    return {
        "siglip16": write_siglip(root / "siglip16", text_length=16),
        "siglip64": write_siglip(root / "siglip64", text_length=64, seed=1),
        "clip": write_clip(root / "clip"),
        "vit": write_vit_classifier(root / "vit"),
        "vit_multi": write_vit_classifier(root / "vit_multi", labels=("normal", "porn", "hentai", "sexy"),
                                          multi_label=True, seed=2),
        "joytag": JOYTAG_TINY,
        # The same kinds as transformers 5's own save_pretrained writes them (processor_config.json).
        "siglip16_tf5": write_siglip(root / "siglip16_tf5", text_length=16, seed=3, layout="transformers"),
        "clip_tf5": write_clip(root / "clip_tf5", seed=4, layout="transformers"),
        "vit_tf5": write_vit_classifier(root / "vit_tf5", seed=5, layout="transformers"),
    }


def photo(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """A smooth RGB gradient with a few blocks: photo-like enough for resizing to matter."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1), (x + y) * 127 / max(width + height, 1)], -1)
    for _ in range(3):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        base[y0:y0 + height // 4, x0:x0 + width // 4] = rng.integers(0, 256, 3)
    return Image.fromarray(base.astype(np.uint8), "RGB")


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """A folder with a few good images of different kinds and one corrupt file."""
    return write_image_folder(tmp_path / "images")


def write_image_folder(folder: Path) -> Path:
    """a.jpg, b.png (grey), sub/c.webp, d.png (translucent RGBA) and a corrupt broken.jpg."""
    (folder / "sub").mkdir(parents=True)
    photo(64, 48, 1).save(folder / "a.jpg", quality=92)
    photo(40, 70, 2).convert("L").save(folder / "b.png")
    photo(50, 50, 3).save(folder / "sub" / "c.webp")
    rgba = photo(30, 60, 4).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "d.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return folder
