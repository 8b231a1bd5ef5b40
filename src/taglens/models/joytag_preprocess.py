"""JoyTag's preprocessing, exactly as the reference (the JoyTag README and its HF Space) does it.

The recipe, for a decoded 8-bit RGB image (taglens composites alpha onto white first; the
reference drops alpha, see docs/tag.md):

1. paste it onto a white square whose side is the image's longer side, at offsets
   ``((side - width) // 2, (side - height) // 2)`` (rounded down);
2. when the side differs from ``input_size``, resize the square with Pillow's BICUBIC filter to
   ``input_size x input_size``;
3. ``x = float32(u8) / 255`` then ``(x - mean) / std`` in float32, CLIP's mean and std.

Step 3 runs through a per-channel 256-entry lookup table computed with exactly that float32
arithmetic, so the tensor is bit-identical to the reference's.

One deliberate bound: the white square of a long, thin image can be enormous (1 x 100000 px
would need a 100000 x 100000 square, 40 GB). The exact path runs whenever the square's side is at
most ``MAX_SQUARE_SIDE`` (8192) or the square holds at most twice the image's own pixels (sides
within about 2:1), so it never costs more than a 8192 px square or twice the decoded image.
Beyond that, the square is box-reduced by an integer factor ``f = side // (4 * input_size)``
without being built (`reduced_square`: the image is reduced along its long side, padded with
white only out to the reduce grid, reduced along its short side, and pasted into a white square
of side ``ceil(side / f)``), then resized with BICUBIC from the box ``(0, 0, side / f, side / f)``,
the same geometry as the full square. This is Pillow's own ``reducing_gap`` idea at a gap of at
least 4; on noisy test images it moves a few pixels by 1-3 levels out of 255 (mean < 0.1), and
memory stays near the image's own size.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

MAX_SQUARE_SIDE = 8192
_WHITE = (255, 255, 255)


@dataclass(frozen=True)
class JoyTagTransform:
    """A frozen, hashable recipe: RGB image -> (3, input_size, input_size) float32."""

    input_size: int = 448
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __call__(self, image: Image.Image) -> np.ndarray:
        pixels = np.asarray(self.pad_and_resize(image))  # (S, S, 3) uint8
        table = self._table
        return np.stack([table[c][pixels[:, :, c]] for c in range(3)])

    def pad_and_resize(self, image: Image.Image) -> Image.Image:
        """Steps 1 and 2: the white square, resized to ``input_size`` (uint8 RGB)."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        width, height = image.size
        side = max(width, height)
        size = (self.input_size, self.input_size)
        if not exact_square_affordable(width, height):
            factor = max(2, side // (4 * self.input_size))
            reduced = reduced_square(image, factor)
            return reduced.resize(size, Image.Resampling.BICUBIC, box=(0, 0, side / factor, side / factor))
        if width == height:
            square = image  # pasting would cover the whole canvas: nothing to pad
        else:
            square = Image.new("RGB", (side, side), _WHITE)
            square.paste(image, ((side - width) // 2, (side - height) // 2))
        if side != self.input_size:
            square = square.resize(size, Image.Resampling.BICUBIC)
        return square

    @cached_property
    def _table(self) -> np.ndarray:
        """(3, 256) float32: ``(float32(v) / 255 - mean) / std`` for every byte value ``v``."""
        scaled = np.arange(256, dtype=np.float32) / np.float32(255.0)
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        return np.stack([(scaled - mean[c]) / std[c] for c in range(3)]).astype(np.float32)


def exact_square_affordable(width: int, height: int) -> bool:
    """Whether the reference's white square is built as it is (see the module docstring)."""
    side = max(width, height)
    return side <= MAX_SQUARE_SIDE or side * side <= 2 * width * height


def reduced_square(image: Image.Image, factor: int) -> Image.Image:
    """About ``white_square(image).reduce(factor)``, without ever building the white square.

    The image is box-reduced along its long side first, then padded with white only out to the
    reduce grid of the short side and reduced along it, then pasted into a white square of side
    ``ceil(side / factor)``; every other box of the square is pure white. Memory stays near the
    image's own size, however thin it is.
    """
    width, height = image.size
    side = max(width, height)
    pad_horizontally = width < height
    length = width if pad_horizontally else height
    offset = (side - length) // 2
    start = offset // factor * factor  # the band starts and ends on the reduce grid
    stop = min(side, -(-(offset + length) // factor) * factor)
    if pad_horizontally:
        image = image.reduce((1, factor))
        band = Image.new("RGB", (stop - start, image.height), _WHITE)
        band.paste(image, (offset - start, 0))
        band, at = band.reduce((factor, 1)), (start // factor, 0)
    else:
        image = image.reduce((factor, 1))
        band = Image.new("RGB", (image.width, stop - start), _WHITE)
        band.paste(image, (0, offset - start))
        band, at = band.reduce((1, factor)), (0, start // factor)
    reduced_side = -(-side // factor)
    out = Image.new("RGB", (reduced_side, reduced_side), _WHITE)
    out.paste(band, at)
    return out
