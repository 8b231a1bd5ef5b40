"""The GPU habits that run on any machine: the device geometry of ``--preprocess gpu`` (measured
against the exact path on the CPU), its fallbacks, batch sizing from memory, out-of-memory halving
inside a round of three models."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from PIL import Image

from taglens.engine import EngineOptions, run
from taglens.engine.core import Item, run_batches
from taglens.engine.device_preprocess import pillow_decode, prepare_on_device, resize_on_device, unavailable
from taglens.engine.gpu_sizing import CPU_BATCH, auto_batch_size, batch_for_memory, per_image_bytes
from taglens.engine.prepare import apply_transform, prepare_source
from taglens.io.decode import DecodeOptions
from taglens.models.hf_preprocess import HfImageTransform
from taglens.models.joytag import JoyTagTransform

from ..conftest import photo

# The worst pixel moves these recipes' device geometry made on these photos (torch's antialiased
# filters against Pillow's), in levels of 255: measured 1 at most, mean 0.09-0.14, on the CPU.
MAX_LEVELS = 2
MEAN_LEVELS = 0.3

RECIPES = {
    "joytag": JoyTagTransform(448),
    "siglip": HfImageTransform(resample=3, height=224, width=224, mean=(0.5,) * 3, std=(0.5,) * 3),
    "clip": HfImageTransform(resample=3, shortest_edge=224, crop=(224, 224), mean=(0.48, 0.45, 0.4),
                             std=(0.26, 0.26, 0.27)),
    "vit": HfImageTransform(resample=2, height=224, width=224, mean=(0.5,) * 3, std=(0.5,) * 3),
}
SIZES = [(1024, 768), (768, 1024), (300, 200), (150, 180), (448, 448), (90, 60)]


def _smooth(width, height, seed):
    """A photo-like image (smooth gradients and a few edges), not white noise."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 32), max(2, width // 32), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)


@pytest.mark.parametrize("name", RECIPES)
def test_the_device_geometry_stays_within_a_few_levels_of_pillow(name):
    import torch

    transform = RECIPES[name]
    for i, (w, h) in enumerate(SIZES):
        image = _smooth(w, h, i)
        exact = apply_transform(transform, image).pixels.astype(np.int16)
        tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
        fast = resize_on_device(transform, tensor).numpy().astype(np.int16)
        assert fast.shape == exact.shape
        diff = np.abs(fast - exact)
        assert diff.max() <= MAX_LEVELS and diff.mean() <= MEAN_LEVELS, (name, (w, h), diff.max(), diff.mean())


def test_prepare_on_device_decodes_a_jpeg_there_and_sends_the_rest_the_exact_way():
    import torch

    transforms = [RECIPES["joytag"], RECIPES["siglip"]]
    jpeg, png = io.BytesIO(), io.BytesIO()
    _smooth(320, 240, 1).save(jpeg, "JPEG", quality=95)
    _smooth(320, 240, 1).save(png, "PNG")
    calls = []

    def decoder(data, device):
        calls.append(len(data))
        return pillow_decode(data, device)

    cpu = torch.device("cpu")
    fast = prepare_on_device(jpeg.getvalue(), transforms, DecodeOptions(), cpu, decoder=decoder)
    exact = prepare_source(jpeg.getvalue(), transforms, DecodeOptions())
    assert calls and (fast.record.width, fast.record.height) == (320, 240)
    assert fast.record.sha256 == exact.record.sha256 and fast.record.size == exact.record.size
    for t in transforms:
        assert isinstance(fast.arrays[t].pixels, torch.Tensor)
        assert np.abs(fast.arrays[t].pixels.numpy().astype(int) - exact.arrays[t].pixels).max() <= MAX_LEVELS
    calls.clear()
    other = prepare_on_device(png.getvalue(), transforms, DecodeOptions(), cpu, decoder=decoder)
    assert not calls and other.record.error is None and isinstance(other.arrays[transforms[0]].pixels, np.ndarray)

    def broken(data, device):
        raise RuntimeError("nvjpeg says no")

    fallback = prepare_on_device(jpeg.getvalue(), transforms, DecodeOptions(), cpu, decoder=broken)
    assert fallback.record.error is None and np.array_equal(fallback.arrays[transforms[0]].pixels,
                                                            exact.arrays[transforms[0]].pixels)
    bad = prepare_on_device(b"\xff\xd8 not really", transforms, DecodeOptions(), cpu, decoder=decoder)
    assert bad.record.error and bad.arrays is None


def test_fast_mode_says_why_it_cannot_run_and_the_run_stays_exact(caplog, checkpoints):
    import torch

    from taglens.models import joytag

    assert "CPU" in unavailable(torch.device("cpu"), [RECIPES["joytag"]])
    tagger = joytag.load(checkpoints["joytag"], device="cpu")
    images = [photo(seed=i) for i in range(3)]
    with caplog.at_level(logging.WARNING):
        fast = list(run(images, [tagger.job()], EngineOptions(batch_size=2, preprocess="gpu")))
    assert any("--preprocess gpu" in r.getMessage() and "exact way" in r.getMessage() for r in caplog.records)
    exact = list(run(images, [tagger.job()], EngineOptions(batch_size=2)))
    assert [r.tags for r in fast] == [r.tags for r in exact]
    with pytest.raises(ValueError, match="preprocess"):
        list(run(images, [tagger.job()], EngineOptions(preprocess="fastest")))


def test_batch_for_memory_is_a_capped_power_of_two():
    mib = 1 << 20
    assert batch_for_memory(100 * 1024 * mib, 230 * mib) == 128  # half of 100 GiB / 230 MiB = 222
    assert batch_for_memory(10**15, 1, cap=256) == 256
    assert batch_for_memory(100 * mib, 300 * mib) == 1
    assert batch_for_memory(8 * 300 * mib, 300 * mib) == 4
    assert per_image_bytes([448, 224]) == 64 * 3 * 4 * (448 * 448 + 224 * 224)
    assert auto_batch_size("cpu", [448]) == CPU_BATCH


class _OomAbove:
    """A fake model job that runs out of memory on batches larger than ``limit``."""

    def __init__(self, name, limit):
        self.name, self.limit, self.batches = name, limit, []

    @property
    def forward_key(self):
        return self

    def forward(self, pixels):
        if len(pixels) > self.limit:
            raise MemoryError("CUDA out of memory (injected)")
        self.batches.append(len(pixels))
        return pixels.reshape(len(pixels), -1).mean(axis=1)

    def finish(self, rows):
        return [{self.name: float(r)} for r in rows]


def test_an_injected_oom_in_one_model_of_a_round_halves_only_its_batch():
    rng = np.random.default_rng(0)
    inputs = [rng.random((3, 4, 4), dtype=np.float32) for _ in range(8)]
    tight, roomy = _OomAbove("tight", 2), _OomAbove("roomy", 8)
    results = run_batches([[Item((tight,), x) for x in inputs], [Item((roomy,), x) for x in inputs]])
    assert results[0].fits == 2 and results[1].fits is None
    assert tight.batches == [2, 2, 2, 2] and roomy.batches == [8]
    for result, name in zip(results, ("tight", "roomy")):
        got = [outcome[0][name] for outcome in result.outcomes]
        assert got == pytest.approx([float(x.mean()) for x in inputs], abs=1e-6)


def test_through_the_engine_an_oom_model_keeps_every_record_and_the_others_are_untouched():
    class Shrunk:
        input_size = 8

        def __call__(self, image):
            return np.asarray(image.convert("RGB").resize((8, 8)), np.float32).transpose(2, 0, 1) / 255

        def __hash__(self):
            return 1

        def __eq__(self, other):
            return isinstance(other, Shrunk)

    tight, roomy = _OomAbove("width", 1), _OomAbove("height", 4)  # fields a Record has
    tight.transform = roomy.transform = Shrunk()
    tight.model_id = roomy.model_id = "fake"
    tight.revision = roomy.revision = "0"
    records = list(run([photo(seed=i) for i in range(8)], [tight, roomy], EngineOptions(batch_size=4)))
    assert len(records) == 8 and all(r.error is None for r in records)
    assert tight.batches == [1] * 8 and roomy.batches == [4, 4]
    assert all(r.width is not None and r.height is not None for r in records)


def test_the_transformers_families_run_sdpa_attention_and_joytag_takes_channels_last(checkpoints):
    """SDPA (flash attention on a GPU) is what transformers picks for SigLIP and ViT; JoyTag's conv
    stem gets its batches channels-last, the layout the device's gather makes for free."""
    import torch

    from taglens.models import joytag, siglip, vit_classifier

    assert siglip.load(checkpoints["siglip16"], device="cpu").model.model.config._attn_implementation == "sdpa"
    assert vit_classifier.load(checkpoints["vit"], device="cpu").model.config._attn_implementation == "sdpa"
    tagger = joytag.load(checkpoints["joytag"], device="cpu")
    seen = []
    forward = tagger._forward
    tagger._forward = lambda x: seen.append(x.is_contiguous(memory_format=torch.channels_last)) or forward(x)
    tagger.job()([tagger.transform(photo())])
    assert seen == [True]


def test_a_batch_mixing_device_decoded_and_exact_images_is_collated_and_normalised_alike():
    import torch

    from taglens.engine.transfer import ByteBatch, DeviceTransfer, collate

    transform = RECIPES["siglip"]
    images = [_smooth(320, 240, i) for i in range(3)]
    host = [apply_transform(transform, image) for image in images]
    mixed = [host[0], type(host[1])(torch.from_numpy(host[1].pixels.copy()), host[1].table), host[2]]
    batch = collate(mixed, takes_bytes=True)
    assert isinstance(batch, ByteBatch) and isinstance(batch.pixels, torch.Tensor)
    got = DeviceTransfer(torch.device("cpu")).normalised(batch).numpy()
    assert np.array_equal(got, np.stack([transform(image) for image in images]))
