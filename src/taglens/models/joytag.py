"""JoyTag, the multi-label Danbooru-style tagger: its configuration as data, its preprocessing,
the loaded model (`Tagger`) and its engine job (`TagJob`).

    tagger = Tagger.from_pretrained()                     # fancyfeast/joytag, or a folder
    records = tagger(["a.jpg", "b.png"], threshold=0.4)   # one Record per image, through the engine
    job = tagger.job(TagSelection(top_k=20))              # the engine Job, for combined passes

The network (a CNN stem, sin-cos positions, layer-scaled pre-norm blocks) and its strict
checkpoint loading are `taglens.models.joytag_vit`, imported when a model loads. Which tags a run
keeps is `taglens.models.tag_selection`. Scores are sigmoids of float32 logits, whatever the
model's dtype.

**Preprocessing**, exactly as the reference (the JoyTag README and its HF Space) does it.

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

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from taglens.engine import EngineOptions, run
from taglens.engine.placement import CompiledForward, Placement
from taglens.engine.transfer import ImageBytes, Pending, fetch
from taglens.io.decode import ImageSource, is_single_source
from taglens.models.hub import resolve_model
from taglens.models.registry import FamilyConfig
from taglens.models.tag_selection import ResolvedSelection, TagSelection
from taglens.records import Record

if TYPE_CHECKING:
    import torch

    from taglens.models.joytag_vit import JoyTag, JoyTagConfig
    from taglens.models.request import TaskRequest

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

CONFIG = FamilyConfig(
    name="joytag",
    tasks=("tag",),
    hub_id="fancyfeast/joytag",
    summary="JoyTag: 448 px ViT with a CNN stem, 5813 Danbooru-style tags, an independent sigmoid each",
    input_size=448,
    resample="bicubic",
    mean=CLIP_MEAN,
    std=CLIP_STD,
    license="apache-2.0",
    url="https://github.com/fpgaminer/joytag",
    threshold=0.4,
    int8_float32_layers=("head",),
)


# ----------------------------------------------------------------------------- preprocessing


MAX_SQUARE_SIDE = 8192
_WHITE = (255, 255, 255)


@dataclass(frozen=True)
class JoyTagTransform:
    """A frozen, hashable recipe: RGB image -> (3, input_size, input_size) float32."""

    input_size: int = CONFIG.input_size
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __call__(self, image: Image.Image) -> np.ndarray:
        return self.to_bytes(image).normalised()

    def to_bytes(self, image: Image.Image) -> ImageBytes:
        """Steps 1 and 2 only: the (S, S, 3) uint8 square and the table for step 3 (which then
        runs on the model's device, see `taglens.engine.transfer`)."""
        return ImageBytes(np.asarray(self.pad_and_resize(image)), self.table)

    def device_geometry(self, image: torch.Tensor) -> torch.Tensor:
        """Steps 1 and 2 on a (3, H, W) uint8 tensor on any device (``--preprocess gpu``):
        the white square, bicubic to ``input_size``."""
        from taglens.engine import device_geometry

        square = device_geometry.pad_square(image, _WHITE[0])
        return device_geometry.resize(square, self.input_size, self.input_size, int(Image.Resampling.BICUBIC))

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
    def table(self) -> np.ndarray:
        """(3, 256) float32: ``(float32(v) / 255 - mean) / std`` for every byte value ``v`` (the
        reference's ``pil_to_tensor(image) / 255.0`` then ``Normalize``, in float32)."""
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


# ----------------------------------------------------------------------------- the tagger


class Tagger:
    """A loaded JoyTag checkpoint: its tags, preprocessing, placement and identity.

    Loading is the expensive part; the tagger is then shared by every job made from it.
    """

    def __init__(self, model: JoyTag, tags: Sequence[str], *, placement: Placement, model_id: str, revision: str):
        import torch

        if len(tags) != model.config.n_tags:
            raise ValueError(f"{len(tags)} tag names for a model with {model.config.n_tags} outputs")
        self.placement = placement
        # channels_last lets oneDNN / cuDNN run the stem's convolutions in their fast layout
        # (same numbers; about 1.3x faster stem in float32, 1.8x in bfloat16 on CPU).
        self.model = placement.module(model, keep_float32=CONFIG.int8_float32_layers).to(
            memory_format=torch.channels_last)
        self._forward: Callable[[torch.Tensor], torch.Tensor] = self.model
        self.config: JoyTagConfig = model.config
        self.tags: tuple[str, ...] = tuple(tags)
        self.transform = JoyTagTransform(model.config.image_size)
        self.model_id = model_id
        self.revision = revision

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike = CONFIG.hub_id,
        revision: str | None = None,
        device: str = "auto",
        dtype: str = "float32",
        tf32: bool = False,
    ) -> Tagger:
        """Load a hub id (default ``fancyfeast/joytag``) or a folder holding ``config.json``,
        ``model.safetensors`` and ``top_tags.txt``. ``device``: auto, cpu, cuda, cuda:N;
        ``dtype``: float32, bfloat16, float16, int8 (CPU); ``tf32``: let float32 CUDA matmuls and cuDNN
        convolutions use TF32 (off: IEEE float32, see `taglens.engine.placement`)."""
        from taglens.models.joytag_vit import CONFIG_FILE, JoyTagConfig, load_model, load_tags

        placement = Placement.resolve(device, dtype, tf32=tf32)
        resolved = resolve_model(model, revision)
        config = JoyTagConfig.from_file(resolved.folder / CONFIG_FILE)
        tags = load_tags(resolved.folder, config.n_tags)
        network = load_model(resolved.folder, config)
        return cls(network, tags, placement=placement, model_id=resolved.model_id, revision=resolved.revision)

    def scores(self, pixels: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) float32 preprocessed pixels (or a uint8 `ByteBatch`) -> (B, n_tags) float32
        sigmoid scores."""
        return self.launch_scores(pixels).result()

    def launch_scores(self, pixels: Any) -> Pending:
        """`scores`, queued on the device; the host waits only at ``.result()``."""
        import torch

        with torch.inference_mode():
            logits = self._forward(self.placement.batch(pixels, channels_last=True)).float()
            return fetch(torch.sigmoid(logits))

    def compile(self) -> None:
        """Compile the forward pass with ``torch.compile`` (see `taglens.engine.placement.CompiledForward`)."""
        self._forward = CompiledForward(self.model)

    def job(self, selection: TagSelection | None = None) -> TagJob:
        """The engine job that fills each record's ``tags`` (name ``"tag"``)."""
        return TagJob(self, (selection or TagSelection()).resolve(self.tags, CONFIG.threshold))

    def __call__(
        self,
        images: ImageSource | Iterable[ImageSource],
        threshold: float | None = None,
        top_k: int | None = None,
        *,
        thresholds: Mapping[str, float] | None = None,
        exclude: Iterable[str] = (),
        selection: TagSelection | None = None,
        batch_size: int = 8,
        options: EngineOptions | None = None,
    ) -> list[Record]:
        """Tag one image or many (paths, bytes, file objects, PIL images, arrays): one `Record`
        per image, in order. A file that cannot be read or decoded gives a record with ``error``
        set, never an exception."""
        if selection is None:
            selection = TagSelection(threshold, thresholds or {}, top_k, frozenset(exclude))
        sources = [images] if is_single_source(images) else list(images)  # type: ignore[arg-type]
        return list(run(sources, [self.job(selection)], options or EngineOptions(batch_size=batch_size)))

    def __repr__(self) -> str:
        return (f"Tagger({self.model_id!r}, revision={self.revision!r}, tags={len(self.tags)}, "
                f"device={self.placement.device}, dtype={self.placement.dtype})")


@dataclass(frozen=True, eq=False)
class TagJob:
    """An engine `Job`: a batch of JoyTag inputs -> ``{"tags": (TagScore, ...)}`` per image."""

    tagger: Tagger
    selection: ResolvedSelection
    name: str = "tag"

    @property
    def transform(self) -> JoyTagTransform:
        return self.tagger.transform

    @property
    def model_id(self) -> str:
        return self.tagger.model_id

    @property
    def revision(self) -> str:
        return self.tagger.revision

    @property
    def forward_key(self) -> Tagger:
        """Jobs with the same key share one forward pass (see `forward` / `finish`)."""
        return self.tagger

    takes_bytes = True
    """Its inputs may come as uint8 `ByteBatch`es, normalised on the model's device."""

    def forward(self, pixels: np.ndarray) -> np.ndarray:
        """The model's part, shared by every selection: (B, C, S, S) -> (B, n_tags) scores."""
        return self.tagger.scores(pixels)

    def launch(self, pixels: Any) -> Pending:
        """`forward` queued on the device (the engine waits for it after every model's pass)."""
        return self.tagger.launch_scores(pixels)

    def finish(self, scores: np.ndarray) -> list[dict[str, Any]]:
        """This job's part: each row of `forward`'s scores -> its record fields."""
        return [{"tags": self.selection.select(row)} for row in scores]

    def __call__(self, pixels: np.ndarray) -> list[dict[str, Any]]:
        return self.finish(self.forward(pixels))


# ----------------------------------------------------------------------------- the family's interface


def load(model: str | os.PathLike = CONFIG.hub_id, revision: str | None = None, *, device: str = "auto",
         dtype: str = "float32", tf32: bool = False) -> Tagger:
    """The loaded family, shared by every job made from it (`taglens.models.modelset.ModelSet`)."""
    return Tagger.from_pretrained(model, revision, device=device, dtype=dtype, tf32=tf32)


def job_for(tagger: Tagger, request: TaskRequest) -> TagJob:
    """The ``tag`` job of a request."""
    return tagger.job(request.tag_selection)
