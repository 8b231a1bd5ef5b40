"""``--preprocess gpu``: JPEG decode with nvJPEG and the resize on the GPU. Fast, not exact.

The exact path (the default) decodes with Pillow and resizes with Pillow's filters on the CPU,
about 24 ms of one core per 1024x768 photo: a GPU that runs the three default models at a
thousand images a second would need 25+ cores of it. This mode reads and hashes the file on the
CPU, decodes a plain JPEG on the device (``torchvision.io.decode_jpeg(device="cuda")``) and
runs each transform's geometry there (`resize_on_device`: each transform's ``device_geometry``,
JoyTag's white square, transformers' resize and centre crop) with torch's antialiased filters, ending in the same uint8 image and
lookup table as the exact path (`taglens.engine.transfer`). torch's antialiased bicubic and
bilinear follow Pillow's kernels, but nvJPEG's IDCT and upsampling differ from libjpeg's and the
resize accumulates in a different order, so pixels move by a few levels; the deviation on scores
is measured by ``benchmarks/gpu.py`` and documented in docs/analyze.md.

Whatever the device cannot take goes the exact way, image by image: a file that is not a
baseline 8-bit RGB JPEG (PNG, CMYK, greyscale, an EXIF turn), a decode error on the device, a
transform without a device recipe. Without CUDA or torchvision the whole run is exact and
`unavailable` says why in one line.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import ExifTags, Image

from taglens.engine.prepare import Prepared, Transform, prepare_source, read_bytes
from taglens.engine.transfer import ImageBytes
from taglens.errors import ImageDecodeError
from taglens.io.decode import DecodeOptions, ImageSource, describe_source
from taglens.records import Record

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
_NVJPEG_LOCK = threading.Lock()

MODES = ("exact", "gpu")
Decoder = Callable[[bytes, Any], Any]
"""(JPEG bytes, device) -> (3, H, W) uint8 tensor on the device."""


def unavailable(device: Any, transforms: Sequence[Transform]) -> str | None:
    """Why ``--preprocess gpu`` cannot run here (None when it can)."""
    if getattr(device, "type", str(device)) != "cuda":
        return "the models run on the CPU, not a CUDA GPU"
    try:
        import torchvision.io  # noqa: F401
    except ImportError:
        return "torchvision is not installed (pip install torchvision, the build matching torch)"
    missing = [type(t).__name__ for t in transforms if not has_device_recipe(t)]
    if missing:
        return f"{', '.join(sorted(set(missing)))} has no device recipe"
    return None


def has_device_recipe(transform: Transform) -> bool:
    """Whether ``transform`` says how to run its geometry on a device (a ``device_geometry``
    method: (3, H, W) uint8 tensor -> (3, H', W') uint8 on the same device)."""
    return callable(getattr(transform, "device_geometry", None))


def nvjpeg_decode(data: bytes, device: Any) -> torch.Tensor:
    """torchvision's GPU JPEG decode: (3, H, W) uint8 on ``device``. One decode at a time (the
    decode threads still read, hash and parse headers in parallel): torchvision's nvJPEG handle
    is shared by the process, and its thread safety is not documented."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    with _NVJPEG_LOCK:
        return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)


def prepare_on_device(source: ImageSource, transforms: Sequence[Transform], options: DecodeOptions,
                      device: Any, *, hash_files: bool = True, skip: Callable[[str], bool] | None = None,
                      decoder: Decoder = nvjpeg_decode) -> Prepared:
    """`prepare_source` with a plain JPEG decoded and resized on ``device``; anything else (and
    any failure there) the exact way. ``skip`` as in `prepare_source`. Never raises."""
    if not isinstance(source, (str, bytes, bytearray, memoryview)) and not hasattr(source, "__fspath__"):
        return prepare_source(source, transforms, options, hash_files=hash_files, skip=skip)
    name = describe_source(source)
    facts: dict[str, Any] = {}
    try:
        data = read_bytes(source, options, name, facts, hash_files)
    except ImageDecodeError as exc:
        return Prepared(Record(path=name, error=exc.reason, **facts))
    if skip is not None and "sha256" in facts and skip(facts["sha256"]):
        return Prepared(Record(path=name, **facts))
    size = _plain_jpeg_size(data, options)
    if size is not None:
        try:
            image = decoder(data, device)
            arrays = {t: ImageBytes(resize_on_device(t, image), t.table)  # type: ignore[attr-defined]
                      for t in transforms}
            return Prepared(Record(path=name, width=size[0], height=size[1], **facts), arrays)
        except Exception as exc:  # nvJPEG refuses some files Pillow reads: those go the exact way
            log.debug("device decode failed for %s (%s); decoding on the CPU", name, exc)
    prepared = prepare_source(data, transforms, options, hash_files=False)
    prepared.record = prepared.record.with_fields(path=name, **facts)
    return prepared


def _plain_jpeg_size(data: bytes, options: DecodeOptions) -> tuple[int, int] | None:
    """(width, height) of a baseline-decodable 8-bit RGB JPEG with no EXIF turn within the pixel
    limit; None for anything the exact path should take."""
    if not data.startswith(b"\xff\xd8"):
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "JPEG" or im.mode != "RGB":
                return None
            if im.getexif().get(ExifTags.Base.Orientation, 1) not in (None, 1):
                return None
            width, height = im.size
    except Exception:
        return None
    return (width, height) if width * height <= options.max_pixels else None


# ----------------------------------------------------------------------------- the geometry on the device


def resize_on_device(transform: Transform, image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) uint8 -> (H', W', 3) uint8 on the same device: ``transform``'s geometry (its
    ``device_geometry``, built from `taglens.engine.device_geometry`)."""
    if not has_device_recipe(transform):
        raise TypeError(f"{type(transform).__name__} has no device recipe")
    return transform.device_geometry(image).permute(1, 2, 0).contiguous()


def pillow_decode(data: bytes, device: Any) -> torch.Tensor:
    """A `Decoder` with Pillow on the host, the tensor then moved to ``device``: lets the device
    geometry run (and be measured) where nvJPEG is absent."""
    import torch

    with Image.open(io.BytesIO(data)) as im:
        array = np.asarray(im.convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous().to(device)
