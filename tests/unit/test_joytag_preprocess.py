"""JoyTag's preprocessing: the reference recipe bit for bit on ordinary images, bounded memory on
absurdly thin ones (where it is documented to deviate), and a transform the engine can share."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from taglens.models import joytag as joytag_preprocess
from taglens.models.joytag import CLIP_MEAN, CLIP_STD, JoyTagTransform, exact_square_affordable

from ..conftest import photo


def reference_square(image: Image.Image, size: int) -> Image.Image:
    """The README / HF Space steps: paste on a white square (floor offsets), BICUBIC when needed."""
    side = max(image.size)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return square if side == size else square.resize((size, size), Image.BICUBIC)


def reference_tensor(image: Image.Image, size: int) -> np.ndarray:
    """uint8 -> / 255 -> (x - mean) / std, with torch float32 arithmetic as torchvision does it."""
    x = torch.from_numpy(np.asarray(reference_square(image, size)).copy()).permute(2, 0, 1) / 255.0
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(CLIP_STD, dtype=torch.float32)[:, None, None]
    return ((x - mean) / std).numpy()


SHAPES = [(70, 50), (45, 30), (40, 90), (448, 448), (300, 448), (449, 448), (1000, 3), (3, 1000), (1, 1), (640, 427)]


@pytest.mark.parametrize("width, height", SHAPES)
def test_exact_on_ordinary_images(width, height):
    image = photo(width, height, seed=width + height)
    transform = JoyTagTransform(448)
    np.testing.assert_array_equal(np.asarray(transform.pad_and_resize(image)), np.asarray(reference_square(image, 448)))
    np.testing.assert_array_equal(transform(image), reference_tensor(image, 448))  # bit-identical


def test_other_modes_are_converted_like_the_reference():
    image = photo(50, 30, seed=1).convert("L")
    transform = JoyTagTransform(64)
    np.testing.assert_array_equal(transform(image), reference_tensor(image.convert("RGB"), 64))


def test_transform_is_frozen_and_shared_by_value():
    a, b = JoyTagTransform(448), JoyTagTransform(448)
    assert a == b and hash(a) == hash(b) and a.input_size == 448 and JoyTagTransform(64) != a
    with pytest.raises(AttributeError):
        a.input_size = 224  # type: ignore[misc]
    out = a(photo(30, 20))
    assert out.shape == (3, 448, 448) and out.dtype == np.float32 and out.flags.c_contiguous


def test_where_the_exact_path_ends():
    assert exact_square_affordable(8192, 1) and exact_square_affordable(1, 8192)
    assert not exact_square_affordable(8193, 1) and not exact_square_affordable(1, 100_000)
    assert exact_square_affordable(9504, 6336)  # a 60 MP camera frame: square <= 2x the image
    assert not exact_square_affordable(20_000, 3000)  # a long panorama


@pytest.mark.parametrize("width, height", [(1, 100_000), (100_000, 1), (37, 250_000)])
def test_thin_images_never_build_the_square(monkeypatch, width, height):
    made = []
    real_new = Image.new

    def recording_new(mode, size, *args, **kwargs):
        made.append(size[0] * size[1])
        return real_new(mode, size, *args, **kwargs)

    monkeypatch.setattr(joytag_preprocess.Image, "new", recording_new)
    image = real_new("RGB", (width, height), (200, 30, 30))
    out = JoyTagTransform(448)(image)
    assert out.shape == (3, 448, 448)
    assert max(made) <= 2 * width * height + 4 * max(width, height) + 4096**2  # near the image's own size
    # The red line is far thinner than a pixel of the output: the result is white, slightly tinted.
    white = JoyTagTransform(448)(real_new("RGB", (448, 448), (255, 255, 255)))
    assert np.abs(out - white).max() < 0.2


@pytest.mark.parametrize("width, height", [(40, 3000), (3000, 130), (2, 2900), (1400, 2999)])
def test_beyond_the_bound_the_result_stays_close_to_the_reference(monkeypatch, width, height):
    monkeypatch.setattr(joytag_preprocess, "MAX_SQUARE_SIDE", 500)  # force the bounded path at a testable size
    image = photo(width, height, seed=7)
    assert not exact_square_affordable(width, height)
    ours = np.asarray(JoyTagTransform(64).pad_and_resize(image)).astype(int)
    reference = np.asarray(reference_square(image, 64)).astype(int)
    difference = np.abs(ours - reference)
    assert difference.max() <= 3 and difference.mean() < 0.2
