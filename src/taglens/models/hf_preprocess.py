"""transformers' image-processor recipe, resolved by transformers itself and run on lookup tables.

Used by every transformers-based family (SigLIP, SigLIP 2 fixed-size, CLIP, image classifiers).
`load_transform` asks transformers for the checkpoint's image processor
(``AutoImageProcessor.from_pretrained(folder, backend="pil")``), so ``preprocessor_config.json``,
the ``processor_config.json`` that transformers 5's ``save_pretrained`` writes (the image processor
nested inside it) and every omitted key mean exactly what they mean to transformers: an omitted
``resample`` is the processor class's own (bicubic for SigLIP and CLIP, bilinear for ViT). Its
resolved attributes then become an `HfImageTransform`, which matches transformers' Pillow backend
value for value:

1. resize with Pillow (``resample``) either to ``size.height x size.width`` or so the shortest
   edge is ``size.shortest_edge`` (long edge ``int(short * long / short_in)``);
2. optional centre crop to ``crop_size`` (zero padding where the image is smaller);
3. ``x = float32(float64(u8) * rescale_factor)``, then ``(x - mean) / std`` in float32.

Step 3 runs through a per-channel 256-entry lookup table computed with exactly that arithmetic,
so the result is bit-identical to the processor's and several times faster. A processor with
steps of its own (ConvNeXt's ``crop_pct``, padding, aspect-ratio bounds, ...) is run as it is
(`ProcessorTransform`): exact, without the lookup-table speed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
from PIL import Image

from taglens.engine.transfer import ImageBytes
from taglens.errors import CheckpointError

if TYPE_CHECKING:
    import torch

# Where a shortest-edge resize before a centre crop would make an image of more pixels than this
# (a 1:300 panorama under a 224 px recipe; a 1x100000 strip would need gigabytes), resize only the
# source region that lands in the crop: the same output grid, within a few grey levels of the
# processor's. Below it the processor's own steps are taken, bit for bit.
MAX_RESIZED_PIXELS = 2**24

# The processor methods whose Pillow-backend versions `HfImageTransform` reproduces; a processor
# class that overrides any of them has a recipe of its own and is run as it is.
_STANDARD_STEPS = ("preprocess", "_preprocess_image_like_inputs", "_prepare_image_like_inputs", "process_image",
                   "_standardize_kwargs", "_preprocess", "resize", "center_crop", "rescale", "normalize")


def load_image_processor(folder: str | Path) -> Any:
    """transformers' own image processor for a checkpoint folder (its Pillow backend, the one
    whose arithmetic `HfImageTransform` reproduces)."""
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(folder, backend="pil")
    except Exception as exc:  # OSError (no config), ValueError (unknown type), KeyError, ...
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{folder}: transformers cannot load its image processor from preprocessor_config.json or "
            f"processor_config.json ({text})"
        ) from None
    validate = getattr(processor, "_validate_preprocess_kwargs", None)  # what its __call__ would refuse
    try:
        if validate is not None:
            validate(**{name: getattr(processor, name, None) for name in getattr(processor, "_valid_kwargs_names", ())})
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{folder}: its image processor settings are refused by transformers ({exc})") from None
    return processor


def load_transform(folder: str | Path) -> ImageTransform:
    """The checkpoint's image preprocessing: an `HfImageTransform` for the standard recipe, else
    a `ProcessorTransform` running the processor itself."""
    processor = load_image_processor(folder)
    try:
        return HfImageTransform.from_processor(processor)
    except NotImplementedError:
        return ProcessorTransform.of(processor)


@dataclass(frozen=True)
class HfImageTransform:
    """A frozen, hashable preprocessing recipe: equal recipes share one tensor per image."""

    resample: int
    height: int | None = None
    width: int | None = None
    shortest_edge: int | None = None
    crop: tuple[int, int] | None = None
    rescale_factor: float | None = 1 / 255
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> HfImageTransform:
        """The recipe of a checkpoint whose processor is the standard one (see `load_transform`
        for any checkpoint)."""
        processor = load_image_processor(folder)
        try:
            return cls.from_processor(processor)
        except NotImplementedError as exc:
            raise CheckpointError(f"{folder}: {exc}") from None

    @classmethod
    def from_processor(cls, processor: Any) -> HfImageTransform:
        """Read a loaded transformers image processor's resolved attributes. Raises
        `NotImplementedError` for a processor with steps of its own (use `ProcessorTransform`)."""
        from transformers.image_processing_backends import PilBackend

        kind = type(processor)
        custom = [name for name in _STANDARD_STEPS if getattr(kind, name, None) is not getattr(PilBackend, name)]
        if not isinstance(processor, PilBackend) or custom:
            raise NotImplementedError(f"{kind.__name__} has its own steps ({', '.join(custom) or 'not Pillow'})")
        if getattr(processor, "do_pad", None):
            raise NotImplementedError(f"{kind.__name__} pads its images")
        resample = processor.resample
        fields: dict[str, Any] = {"resample": int(Image.Resampling.BILINEAR if resample is None else resample)}
        if processor.do_resize:
            size = processor.size
            if size.height and size.width and not (size.shortest_edge or size.longest_edge):
                fields.update(height=int(size.height), width=int(size.width))
            elif size.shortest_edge and not (size.longest_edge or size.height or size.width):
                fields["shortest_edge"] = int(size.shortest_edge)
            else:
                raise NotImplementedError(f"{kind.__name__} resizes by {dict(size)}")
        if processor.do_center_crop:
            fields["crop"] = (int(processor.crop_size.height), int(processor.crop_size.width))
        fields["rescale_factor"] = float(processor.rescale_factor) if processor.do_rescale else None
        if processor.do_normalize:
            fields["mean"] = tuple(float(v) for v in _three(processor.image_mean))
            fields["std"] = tuple(float(v) for v in _three(processor.image_std))
        return cls(**fields)

    @property
    def input_size(self) -> int:
        """The side the image must keep for this recipe (JPEG draft mode never goes below it)."""
        sides = [s for s in (self.height, self.width, self.shortest_edge) if s]
        return max(sides) if sides else 0

    def device_geometry(self, image: torch.Tensor) -> torch.Tensor:
        """Steps 1 and 2 on a (3, H, W) uint8 tensor on any device (``--preprocess gpu``)."""
        from taglens.engine import device_geometry

        _, h, w = image.shape
        if self.height and self.width:
            image = device_geometry.resize(image, self.height, self.width, self.resample)
        elif self.shortest_edge:
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
            new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
            image = device_geometry.resize(image, new_h, new_w, self.resample)
        if self.crop is not None:
            image = device_geometry.center_crop(image, self.crop)
        return image

    def resize(self, image: Image.Image) -> Image.Image:
        """Steps 1 and 2 on an RGB image, returning uint8 RGB."""
        if self.height and self.width:
            image = image.resize((self.width, self.height), self.resample)
        elif self.shortest_edge:
            image = self._resize_shortest_edge(image)
        if self.crop is not None and image.size != (self.crop[1], self.crop[0]):
            image = _center_crop(image, self.crop)
        return image

    def __call__(self, image: Image.Image) -> np.ndarray:
        """RGB image -> (3, H, W) float32, identical to the checkpoint's own image processor."""
        return self.to_bytes(image).normalised()

    def to_bytes(self, image: Image.Image) -> ImageBytes:
        """Steps 1 and 2 only: the uint8 image and the table for step 3 (which then runs on the
        model's device, see `taglens.engine.transfer`)."""
        return ImageBytes(np.asarray(self.resize(image)), self.table)

    def _resize_shortest_edge(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        if self.crop is not None and new_w * new_h > MAX_RESIZED_PIXELS:
            # Resize just the source box that the centre crop keeps: the same output grid.
            crop_h, crop_w = self.crop
            left, top = (new_w - crop_w) // 2, (new_h - crop_h) // 2
            sx, sy = w / new_w, h / new_h
            box = (max(0.0, left * sx), max(0.0, top * sy), min(w, (left + crop_w) * sx), min(h, (top + crop_h) * sy))
            return image.resize((min(crop_w, new_w), min(crop_h, new_h)), self.resample, box=box)
        return image.resize((new_w, new_h), self.resample)

    @cached_property
    def table(self) -> np.ndarray:
        """(3, 256) float32: the rescale + normalise arithmetic for every possible byte value."""
        values = np.arange(256, dtype=np.float64)
        if self.rescale_factor is not None:
            scaled = (values * self.rescale_factor).astype(np.float32)
        else:
            scaled = values.astype(np.float32)
        if self.mean is None or self.std is None:
            return np.stack([scaled] * 3)
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        return np.stack([(scaled - mean[c]) / std[c] for c in range(3)]).astype(np.float32)


@dataclass(frozen=True)
class ProcessorTransform:
    """A transformers image processor with steps of its own, run as it is on each image: exact,
    without the lookup tables. ``recipe`` (its class and settings) decides equality, so equal
    processors still share one tensor per image."""

    recipe: str
    input_size: int
    processor: Any = field(compare=False, repr=False)

    @classmethod
    def of(cls, processor: Any) -> ProcessorTransform:
        sides = [int(v) for attr in ("size", "crop_size") for v in dict(getattr(processor, attr, None) or {}).values()
                 if isinstance(v, int) and v > 0]
        return cls(f"{type(processor).__name__} {processor.to_json_string()}", max(sides, default=0), processor)

    def __call__(self, image: Image.Image) -> np.ndarray:
        pixels = self.processor(images=image, return_tensors="np")["pixel_values"][0]
        return np.ascontiguousarray(pixels, dtype=np.float32)


ImageTransform = Union[HfImageTransform, ProcessorTransform]


def _three(value: float | list[float]) -> list[float]:
    return [value] * 3 if isinstance(value, (int, float)) else list(value)


def _center_crop(image: Image.Image, crop: tuple[int, int]) -> Image.Image:
    """transformers' centre crop: floor offsets; where the image is smaller, zero (black) padding
    placed with ceil offsets, as its numpy code does."""
    crop_h, crop_w = crop
    w, h = image.size
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    if top >= 0 and left >= 0:
        return image.crop((left, top, left + crop_w, top + crop_h))
    new_h, new_w = max(crop_h, h), max(crop_w, w)
    pad_top, pad_left = -(-(new_h - h) // 2), -(-(new_w - w) // 2)
    canvas = Image.new("RGB", (new_w, new_h), (0, 0, 0))
    canvas.paste(image, (pad_left, pad_top))
    top, left = top + pad_top, left + pad_left
    return canvas.crop((max(0, left), max(0, top), min(new_w, left + crop_w), min(new_h, top + crop_h)))
