"""transformers' image-processor recipe, read from a checkpoint's ``preprocessor_config.json``.

Used by every transformers-based family (SigLIP, SigLIP 2 fixed-size, CLIP, ViT classifiers).
The recipe, matching transformers' Pillow backend value for value:

1. resize with Pillow (``resample`` from the config) either to ``size.height x size.width`` or so
   the shortest edge is ``size.shortest_edge`` (long edge ``int(short * long / short_in)``);
2. optional centre crop to ``crop_size`` (zero padding where the image is smaller);
3. ``x = float32(float64(u8) * rescale_factor)``, then ``(x - mean) / std`` in float32.

Steps 3 runs through a per-channel 256-entry lookup table computed with exactly that
arithmetic, so the result is bit-identical to the processor's and several times faster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from taglens.errors import CheckpointError

# Where a shortest-edge resize would make the long side this many times the crop, resize only
# the source region that lands in the crop (an extreme panorama would otherwise need gigabytes).
_MAX_LONG_SIDE_FACTOR = 16


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
        path = Path(folder) / "preprocessor_config.json"
        try:
            config = json.loads(path.read_text())
        except FileNotFoundError:
            raise CheckpointError(f"{path}: missing (the checkpoint's image preprocessing is read from it)") from None
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: unreadable ({exc})") from None
        return cls.from_config(config, source=str(path))

    @classmethod
    def from_config(cls, config: dict[str, Any], *, source: str = "preprocessor_config.json") -> HfImageTransform:
        size = config.get("size") or {}
        if isinstance(size, int):
            size = {"shortest_edge": size} if not config.get("default_to_square", True) else {"height": size, "width": size}
        fields: dict[str, Any] = {"resample": int(config.get("resample", Image.Resampling.BILINEAR))}
        if config.get("do_resize", True):
            if "height" in size and "width" in size:
                fields.update(height=int(size["height"]), width=int(size["width"]))
            elif set(size) == {"shortest_edge"}:
                fields["shortest_edge"] = int(size["shortest_edge"])
            else:
                raise CheckpointError(f"{source}: resize by {size} is not supported (height/width or shortest_edge)")
        if config.get("do_center_crop", False):
            crop = config.get("crop_size") or {}
            if isinstance(crop, int):
                crop = {"height": crop, "width": crop}
            fields["crop"] = (int(crop["height"]), int(crop["width"]))
        fields["rescale_factor"] = float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True) else None
        if config.get("do_normalize", True):
            fields["mean"] = tuple(float(v) for v in _three(config.get("image_mean", 0.5)))
            fields["std"] = tuple(float(v) for v in _three(config.get("image_std", 0.5)))
        return cls(**fields)

    @property
    def input_size(self) -> int:
        """The side the image must keep for this recipe (JPEG draft mode never goes below it)."""
        sides = [s for s in (self.height, self.width, self.shortest_edge) if s]
        return max(sides) if sides else 0

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
        pixels = np.asarray(self.resize(image))
        table = self._table
        return np.stack([table[c][pixels[:, :, c]] for c in range(3)])

    def _resize_shortest_edge(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        if self.crop is not None and new_long > _MAX_LONG_SIDE_FACTOR * max(self.crop):
            # Resize just the source box that the centre crop keeps: the same output grid.
            crop_h, crop_w = self.crop
            left, top = (new_w - crop_w) // 2, (new_h - crop_h) // 2
            sx, sy = w / new_w, h / new_h
            box = (max(0.0, left * sx), max(0.0, top * sy), min(w, (left + crop_w) * sx), min(h, (top + crop_h) * sy))
            return image.resize((min(crop_w, new_w), min(crop_h, new_h)), self.resample, box=box)
        return image.resize((new_w, new_h), self.resample)

    @cached_property
    def _table(self) -> np.ndarray:
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
