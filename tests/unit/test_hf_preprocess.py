"""Our reading of preprocessor_config.json equals the checkpoint's own image processor, exactly."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from taglens.models.hf_preprocess import HfImageTransform

from ..conftest import photo

IMAGES = {
    "landscape": photo(97, 61, 1),
    "portrait": photo(45, 130, 2),
    "square": photo(56, 56, 3),
    "tiny": photo(9, 7, 4),
    "grey": photo(80, 50, 5).convert("L").convert("RGB"),
}


@pytest.mark.parametrize("name", ["siglip16", "clip", "vit"])
@pytest.mark.parametrize("image", sorted(IMAGES))
def test_equals_transformers_image_processor(checkpoints, name, image):
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(checkpoints[name])
    expected = processor(IMAGES[image], return_tensors="np")["pixel_values"][0]
    ours = HfImageTransform.from_pretrained(checkpoints[name])(IMAGES[image])
    assert ours.dtype == np.float32 and ours.shape == expected.shape
    assert np.array_equal(ours, expected)


def test_recipes_are_read_from_the_config(checkpoints):
    siglip = HfImageTransform.from_pretrained(checkpoints["siglip16"])
    assert (siglip.height, siglip.width, siglip.resample, siglip.mean) == (56, 56, 3, (0.5, 0.5, 0.5))
    clip = HfImageTransform.from_pretrained(checkpoints["clip"])
    assert clip.shortest_edge == 32 and clip.crop == (32, 32) and clip.input_size == 32
    vit = HfImageTransform.from_pretrained(checkpoints["vit"])
    assert vit.resample == 2 and vit.input_size == 32
    assert hash(siglip) == hash(HfImageTransform.from_pretrained(checkpoints["siglip16"]))
    assert siglip != vit


@pytest.mark.parametrize("size", [(1, 5000), (5000, 1), (3, 2000)])
def test_extreme_aspect_ratio_resizes_only_the_kept_box(checkpoints, size):
    """A 1x5000 strip would be resized to 32x160000 before the crop; we resize only the part the
    crop keeps. The result stays close to the processor's (which we can afford at this size)."""
    from transformers import AutoImageProcessor

    long = max(size)
    ramp = np.linspace(0, 255, long).astype(np.uint8)
    pixel = np.stack([ramp, 255 - ramp, ramp // 2], -1)  # (long, 3)
    array = np.broadcast_to(pixel[:, None, :] if size[1] == long else pixel[None, :, :], (size[1], size[0], 3))
    image = Image.fromarray(np.ascontiguousarray(array), "RGB")
    expected = AutoImageProcessor.from_pretrained(checkpoints["clip"])(image, return_tensors="np")["pixel_values"][0]
    ours = HfImageTransform.from_pretrained(checkpoints["clip"])(image)
    assert ours.shape == expected.shape == (3, 32, 32)
    assert np.abs(ours - expected).max() < 0.05
