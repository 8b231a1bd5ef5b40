"""Image preprocessing is what transformers resolves for the folder (either layout, omitted keys
filled by the processor class), and our lookup-table run of it equals the processor, exactly."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from taglens.errors import CheckpointError
from taglens.models.hf_preprocess import HfImageTransform, ProcessorTransform, load_transform

from ..conftest import photo

IMAGES = {
    "landscape": photo(97, 61, 1),
    "portrait": photo(45, 130, 2),
    "square": photo(56, 56, 3),
    "tiny": photo(9, 7, 4),
    "grey": photo(80, 50, 5).convert("L").convert("RGB"),
}
# The keys each builder writes (the hub's files of google/siglip-*, openai/clip-*, Falconsai's ViT).
HUB_KEYS = {
    "siglip16": ("do_normalize", "do_rescale", "do_resize", "image_mean", "image_processor_type", "image_std",
                 "processor_class", "resample", "rescale_factor", "size"),
    "clip": ("crop_size", "do_center_crop", "do_convert_rgb", "do_normalize", "do_rescale", "do_resize", "image_mean",
             "image_processor_type", "image_std", "resample", "rescale_factor", "size"),
    "vit": ("do_normalize", "do_rescale", "do_resize", "image_mean", "image_processor_type", "image_std", "resample",
            "rescale_factor", "size"),
}
# transformers 5 nests the image processor in processor_config.json.
NESTED_KEYS = {
    "siglip16_tf5": ("do_convert_rgb", "do_normalize", "do_rescale", "do_resize", "image_mean", "image_processor_type",
                     "image_std", "resample", "rescale_factor", "size"),
    "clip_tf5": HUB_KEYS["clip"],
}


def processor_output(folder, image) -> np.ndarray:
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(folder)(image, return_tensors="np")["pixel_values"][0]


@pytest.mark.parametrize("name", ["siglip16", "clip", "vit", "siglip16_tf5", "clip_tf5", "vit_tf5"])
@pytest.mark.parametrize("image", sorted(IMAGES))
def test_equals_transformers_image_processor(checkpoints, name, image):
    expected = processor_output(checkpoints[name], IMAGES[image])
    ours = load_transform(checkpoints[name])(IMAGES[image])
    assert ours.dtype == np.float32 and ours.shape == expected.shape
    assert np.array_equal(ours, expected)


def test_both_layouts_give_the_same_recipe(checkpoints):
    for hub, saved in (("siglip16", "siglip16_tf5"), ("clip", "clip_tf5"), ("vit", "vit_tf5")):
        assert (checkpoints[hub] / "preprocessor_config.json").is_file()
        assert load_transform(checkpoints[saved]) == load_transform(checkpoints[hub])
    for saved in ("siglip16_tf5", "clip_tf5"):  # what transformers 5 writes: no preprocessor_config.json
        assert not (checkpoints[saved] / "preprocessor_config.json").exists()
        assert "image_processor" in json.loads((checkpoints[saved] / "processor_config.json").read_text())


def test_recipes_are_read_from_the_config(checkpoints):
    siglip = HfImageTransform.from_pretrained(checkpoints["siglip16"])
    assert (siglip.height, siglip.width, siglip.resample, siglip.mean) == (56, 56, 3, (0.5, 0.5, 0.5))
    clip = HfImageTransform.from_pretrained(checkpoints["clip"])
    assert clip.shortest_edge == 32 and clip.crop == (32, 32) and clip.input_size == 32
    vit = HfImageTransform.from_pretrained(checkpoints["vit"])
    assert vit.resample == 2 and vit.input_size == 32
    assert hash(siglip) == hash(HfImageTransform.from_pretrained(checkpoints["siglip16"]))
    assert siglip != vit


def test_the_builders_write_the_keys_listed_here(checkpoints):
    for name, keys in HUB_KEYS.items():
        assert tuple(sorted(json.loads((checkpoints[name] / "preprocessor_config.json").read_text()))) == keys
    for name, keys in NESTED_KEYS.items():
        nested = json.loads((checkpoints[name] / "processor_config.json").read_text())["image_processor"]
        assert tuple(sorted(nested)) == keys


def without_key(source, tmp_path, key):
    """A copy of a checkpoint's configs with one key removed from its image-processor config."""
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    shutil.copy(source / "config.json", folder / "config.json")
    for name in ("preprocessor_config.json", "processor_config.json"):
        if (source / name).is_file():
            config = json.loads((source / name).read_text())
            inner = config["image_processor"] if name == "processor_config.json" else config
            del inner[key]
            (folder / name).write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("name, key", [(n, k) for n, keys in (HUB_KEYS | NESTED_KEYS).items() for k in keys])
def test_an_omitted_key_means_what_it_means_to_transformers(checkpoints, tmp_path, name, key):
    """Without ``resample`` SigLIP resizes bicubic (its processor class's default), not bilinear;
    without ``size`` it resizes to 224; without ``image_processor_type`` config.json decides."""
    folder = without_key(checkpoints[name], tmp_path, key)
    for image in (IMAGES["landscape"], IMAGES["portrait"]):
        expected = processor_output(folder, image)
        ours = load_transform(folder)(image)
        assert ours.dtype == np.float32 and ours.shape == expected.shape
        assert np.array_equal(ours, expected)


def test_siglip_without_resample_is_bicubic(checkpoints, tmp_path):
    transform = load_transform(without_key(checkpoints["siglip16"], tmp_path, "resample"))
    assert transform.resample == Image.Resampling.BICUBIC


def test_a_processor_with_steps_of_its_own_is_run_as_it_is(checkpoints, tmp_path):
    """ConvNeXt resizes by ``crop_pct`` first: no lookup-table recipe, the processor itself."""
    from transformers import ConvNextImageProcessor

    folder = tmp_path / "convnext"
    ConvNextImageProcessor(size={"shortest_edge": 64}, crop_pct=0.8).save_pretrained(folder)
    transform = load_transform(folder)
    assert isinstance(transform, ProcessorTransform) and transform.input_size == 64
    assert transform == load_transform(folder) and hash(transform) == hash(load_transform(folder))
    assert transform != load_transform(checkpoints["vit"])
    for image in IMAGES.values():
        ours = transform(image)
        assert ours.dtype == np.float32 and np.array_equal(ours, processor_output(folder, image))
    with pytest.raises(CheckpointError, match="has its own steps"):
        HfImageTransform.from_pretrained(folder)


def test_a_folder_without_an_image_processor_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="cannot load its image processor"):
        load_transform(tmp_path)


def strip(size: tuple[int, int]) -> Image.Image:
    long = max(size)
    ramp = np.linspace(0, 255, long).astype(np.uint8)
    pixel = np.stack([ramp, 255 - ramp, ramp // 2], -1)  # (long, 3)
    array = np.broadcast_to(pixel[:, None, :] if size[1] == long else pixel[None, :, :], (size[1], size[0], 3))
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


@pytest.mark.parametrize("size", [(1, 5000), (5000, 1), (3, 2000)])
def test_long_strips_are_exact_up_to_the_bound(checkpoints, size):
    """A 1x5000 strip is resized to 32x160000 (5 megapixels) and cropped, as the processor does."""
    ours = load_transform(checkpoints["clip"])(strip(size))
    assert np.array_equal(ours, processor_output(checkpoints["clip"], strip(size)))


@pytest.mark.parametrize("size", [(1, 5000), (5000, 1), (3, 2000)])
def test_beyond_the_bound_only_the_kept_box_is_resized(checkpoints, monkeypatch, size):
    """Past MAX_RESIZED_PIXELS (forced low here) only the part the crop keeps is resized; the
    result stays close to the processor's (which we can afford at this size)."""
    from taglens.models import hf_preprocess

    expected = processor_output(checkpoints["clip"], strip(size))
    monkeypatch.setattr(hf_preprocess, "MAX_RESIZED_PIXELS", 10_000)
    sizes = []
    resize = Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize", lambda im, size, *a, **k: sizes.append(size) or resize(im, size, *a, **k))
    ours = load_transform(checkpoints["clip"])(strip(size))
    assert max(w * h for w, h in sizes) <= 32 * 32  # never the whole resized strip
    assert ours.shape == expected.shape == (3, 32, 32)
    assert np.abs(ours - expected).max() < 0.05
