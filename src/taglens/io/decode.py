"""Decoding and input safety: every image taglens looks at comes through `decode`, once.

The recipe, in order:

1. Read the bytes (refusing empty files and files over ``max_bytes``).
2. Open the header with Pillow (EPS is refused: it runs Ghostscript on the input), check the
   pixel count against ``max_pixels`` before any pixel is decoded (decompression bombs).
3. Only when asked (``draft=True``, off by default): for a JPEG at least twice the largest
   size a model needs in both directions, decode at a reduced DCT scale (draft mode). It is
   faster and moves the scores; docs/decoding.md gives the measured deviation.
4. Decode the first frame, apply the EXIF orientation, composite any alpha onto white and
   convert to 8-bit RGB (16-bit greyscale is scaled, not clipped).

Every failure raises `ImageDecodeError` naming the input and the reason. No global Pillow
setting is changed, and ``max_pixels`` is the only pixel limit: while taglens decodes, each of
Pillow's own decompression-bomb checks (the header, GIF frames, TIFF tiles, ...) applies
taglens's limit with taglens's message instead of ``Image.MAX_IMAGE_PIXELS``, and never prints a
``DecompressionBombWarning``. Outside a taglens decode Pillow behaves exactly as configured.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from taglens.errors import ImageDecodeError

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, Image.Image, np.ndarray]

# Pillow's own default decompression-bomb bound (about 89.5 megapixels), kept as taglens's default.
# Raise or lower it with DecodeOptions(max_pixels=...): it replaces Pillow's bound during a decode.
DEFAULT_MAX_PIXELS = 89_478_485
DEFAULT_MAX_BYTES = 256 * 1024 * 1024

# Ghostscript-backed formats execute an interpreter on the input: never opened.
_REFUSED_FORMATS = frozenset({"EPS"})
_DRAFT_FORMATS = frozenset({"JPEG", "MPO"})
# The most pixels one byte of a file can hold, for formats whose payload has a bounded rate (BLP:
# palette, raw, DXT at 0.5 byte/pixel, or JPEG; DDS: DXT or raw), with a wide margin: a header
# declaring more is a truncated file, refused before the decoder allocates what it declares.
# Formats whose compression has no such bound (PNG, TIFF G4, WebP, GIF, ...) are bounded by
# ``max_pixels`` (and in the server by its decode budget) only.
PIXELS_PER_BYTE = {"BLP": 1024, "DDS": 16}
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_WHITE = (255, 255, 255)

# ISO base-media brands (bytes 8..12 after "ftyp") of the HEIF family that Pillow cannot read itself.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})


@dataclass(frozen=True)
class DecodeOptions:
    """Limits and switches for `decode`.

    The default is a full decode, so every model sees the pixels the reference implementations
    see. ``draft=True`` opts into JPEG draft mode: it runs only when ``target_size`` (the largest
    side any model resizes to, e.g. 448 for JoyTag) is set and the image is at least twice that
    size in both directions.
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    draft: bool = False
    target_size: int | None = None


@dataclass(frozen=True)
class DecodedImage:
    """An 8-bit RGB image and what we learned while decoding it.

    ``width`` and ``height`` are the full-resolution size as displayed (after the EXIF turn),
    even when draft mode decoded fewer pixels; ``draft_scale`` is 1 for a full decode.
    """

    image: Image.Image
    width: int
    height: int
    format: str | None
    draft_scale: int = 1


def describe_source(source: ImageSource) -> str:
    """A short name for an input, used in error messages and records."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if isinstance(source, Image.Image):
        return "<PIL image>"
    if isinstance(source, np.ndarray):
        return "<array>"
    return getattr(source, "name", None) or "<file object>"


def is_single_source(images: object) -> bool:
    """Whether ``images`` is one image (a path, bytes, a PIL image, an array or a binary file
    object) rather than an iterable of them: the Python API's calls take either."""
    return isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray)) or hasattr(
        images, "read")


def read_source_bytes(source: str | os.PathLike | BinaryIO, options: DecodeOptions, name: str) -> bytes:
    """Read a path or file object whole, enforcing ``max_bytes`` before reading more than that."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            size = path.stat().st_size
            if path.is_dir():
                raise ImageDecodeError(name, "is a folder, not a file")
            if size > options.max_bytes:
                raise ImageDecodeError(name, f"file too large: {size} bytes, limit {options.max_bytes}")
            with open(path, "rb") as f:
                data = f.read(options.max_bytes + 1)
        except FileNotFoundError:
            raise ImageDecodeError(name, "no such file") from None
        except PermissionError:
            raise ImageDecodeError(name, "permission denied") from None
        except IsADirectoryError:
            raise ImageDecodeError(name, "is a folder, not a file") from None
        except OSError as exc:
            raise ImageDecodeError(name, f"cannot read file ({exc.strerror or exc})") from None
    else:
        try:
            data = source.read(options.max_bytes + 1)
        except Exception as exc:  # any file-like object may fail in its own way
            raise ImageDecodeError(name, f"cannot read input ({type(exc).__name__}: {exc})") from None
        if not isinstance(data, (bytes, bytearray)):
            raise ImageDecodeError(name, "file object must be opened in binary mode")
    if len(data) > options.max_bytes:
        raise ImageDecodeError(name, f"file too large: more than {options.max_bytes} bytes")
    return bytes(data)


def decode(source: ImageSource, options: DecodeOptions | None = None, *, name: str | None = None) -> DecodedImage:
    """Turn a path, bytes, a binary file object, a PIL image or a numpy array into 8-bit RGB.

    Raises `ImageDecodeError` (and nothing else) for any input that cannot be decoded.
    """
    options = options or DecodeOptions()
    name = name or describe_source(source)
    if isinstance(source, Image.Image):
        return _from_pil(source, name, options)
    if isinstance(source, np.ndarray):
        image = _from_array(source, name)
        return DecodedImage(image, image.width, image.height, None)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > options.max_bytes:
            raise ImageDecodeError(name, f"file too large: {len(data)} bytes, limit {options.max_bytes}")
    else:
        data = read_source_bytes(source, options, name)
    return decode_bytes(data, options, name=name)


def decode_image(source: ImageSource, options: DecodeOptions | None = None, *, name: str | None = None) -> Image.Image:
    """`decode`, returning only the RGB image."""
    return decode(source, options, name=name).image


def decode_bytes(data: bytes, options: DecodeOptions, *, name: str) -> DecodedImage:
    """Decode an encoded image held in memory (the engine reads and hashes files first)."""
    if not data:
        raise ImageDecodeError(name, "empty file")
    with pixel_limit(options.max_pixels):
        if _is_heif(data):
            return _decode_heif(data, options, name)
        try:
            im = Image.open(io.BytesIO(data), formats=_allowed_formats())
        except UnidentifiedImageError:
            raise ImageDecodeError(name, _unidentified_reason(data)) from None
        except Image.DecompressionBombError as exc:
            raise ImageDecodeError(name, f"too large: {exc}") from None
        except Exception as exc:  # Pillow's plugins raise many types on hostile headers
            raise ImageDecodeError(name, f"corrupt image header ({_exc_text(exc)})") from None
        with im:
            return _from_opened(im, options, name, file_bytes=len(data))


# --- taglens's pixel limit in place of Pillow's -------------------------------------------------------

_PIXEL_LIMIT: ContextVar[int | None] = ContextVar("taglens_pixel_limit", default=None)


@contextlib.contextmanager
def pixel_limit(max_pixels: int) -> Iterator[None]:
    """Within this block (this thread or task only), Pillow's decompression-bomb checks apply
    ``max_pixels`` with taglens's message, and warn never."""
    _install_pixel_check()
    token = _PIXEL_LIMIT.set(max_pixels)
    try:
        yield
    finally:
        _PIXEL_LIMIT.reset(token)


def _limit_text(width: int, height: int, limit: int) -> str:
    return f"{width}x{height} = {width * height} pixels, limit {limit}"


def _install_pixel_check() -> None:
    """Route Pillow's `Image._decompression_bomb_check` (which every plugin calls through the
    module) through taglens's limit while `pixel_limit` is active; idempotent."""
    original = Image._decompression_bomb_check
    if getattr(original, "taglens", False):
        return

    def check(size: tuple[int, int], *, error_only: bool = False) -> None:
        limit = _PIXEL_LIMIT.get()
        if limit is None:
            return original(size, error_only=error_only)
        width, height = max(1, size[0]), max(1, size[1])
        if width * height > limit:
            raise Image.DecompressionBombError(_limit_text(width, height, limit))

    check.taglens = True  # type: ignore[attr-defined]
    Image._decompression_bomb_check = check


def _from_opened(im: Image.Image, options: DecodeOptions, name: str, *, file_bytes: int | None = None) -> DecodedImage:
    fmt = im.format
    width, height = im.size
    _check_pixels(width, height, options, name)
    _check_density(width, height, fmt, file_bytes, name)
    draft_scale = 1
    if options.draft and options.target_size and fmt in _DRAFT_FORMATS:
        draft_scale = _apply_draft(im, options.target_size)
    try:
        im.load()
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(name, f"too large: {exc}") from None
    except (OSError, SyntaxError, EOFError) as exc:
        text = str(exc).lower()
        if "truncated" in text or "broken data stream" in text or isinstance(exc, EOFError):
            raise ImageDecodeError(name, "truncated image data") from None
        raise ImageDecodeError(name, f"corrupt image data ({_exc_text(exc)})") from None
    except MemoryError:
        raise ImageDecodeError(name, "corrupt image data (decoder ran out of memory)") from None
    except Exception as exc:
        raise ImageDecodeError(name, f"corrupt image data ({_exc_text(exc)})") from None
    rgb, turned = _to_rgb_upright(im, name)
    if turned:
        width, height = height, width
    return DecodedImage(rgb, width, height, fmt, draft_scale)


def _from_pil(im: Image.Image, name: str, options: DecodeOptions) -> DecodedImage:
    _check_pixels(im.width, im.height, options, name)
    try:
        with pixel_limit(options.max_pixels):
            im.load()
    except Exception as exc:
        raise ImageDecodeError(name, f"corrupt image data ({_exc_text(exc)})") from None
    rgb, _ = _to_rgb_upright(im, name)
    return DecodedImage(rgb, rgb.width, rgb.height, im.format)


def _check_pixels(width: int, height: int, options: DecodeOptions, name: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError(name, f"corrupt image header (size {width}x{height})")
    if width * height > options.max_pixels:
        raise ImageDecodeError(name, f"too large: {_limit_text(width, height, options.max_pixels)}")


def _check_density(width: int, height: int, fmt: str | None, file_bytes: int | None, name: str) -> None:
    """Refuse a header that declares more pixels than its file can hold (`PIXELS_PER_BYTE`): a
    decoder allocates the declared size before it finds the data missing (a 284-byte BLP declaring
    84 megapixels took 645 MB to fail "truncated")."""
    most = PIXELS_PER_BYTE.get(fmt or "")
    if most is not None and file_bytes is not None and width * height > most * file_bytes:
        raise ImageDecodeError(name, f"truncated image data: {width}x{height} = {width * height} pixels declared "
                                     f"in a {file_bytes}-byte {fmt} file, which holds at most {most} per byte")


def _apply_draft(im: Image.Image, target: int) -> int:
    """Ask libjpeg for the smallest DCT scale that keeps both sides at or above ``target``."""
    if min(im.width // target, im.height // target) < 2:
        return 1
    before = im.width
    try:
        im.draft(im.mode if im.mode in ("RGB", "L", "CMYK") else None, (target, target))
    except Exception:  # a draft request never makes a decode fail; fall back to full size
        return 1
    return max(1, before // max(1, im.width))


def _to_rgb_upright(im: Image.Image, name: str) -> tuple[Image.Image, bool]:
    """Apply the EXIF turn, then flatten to 8-bit RGB. Returns the image and whether w/h swapped."""
    orientation = _exif_orientation(im)
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        try:
            im = ImageOps.exif_transpose(im)
        except Exception:
            orientation = 1
    try:
        rgb = to_rgb(im)
    except ImageDecodeError:
        raise
    except Exception as exc:
        raise ImageDecodeError(name, f"unsupported colour mode {im.mode} ({_exc_text(exc)})") from None
    return rgb, orientation in (5, 6, 7, 8)


def _exif_orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
        return int(value) if value in range(1, 9) else 1
    except Exception:  # corrupt EXIF never stops a decode: the image is kept as stored
        return 1


def to_rgb(im: Image.Image) -> Image.Image:
    """Flatten any Pillow mode to 8-bit RGB: alpha onto white, 16-bit scaled, floats clipped."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA") if mode not in _SIXTEEN_BIT_MODES else _sixteen_to_l(im).convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in _SIXTEEN_BIT_MODES:
        return _sixteen_to_l(im).convert("RGB")
    if mode == "F":
        values = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0, posinf=255.0, neginf=0.0)
        if values.size and values.max() <= 1.0:
            values = values * 255.0
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L").convert("RGB")
    return im.convert("RGB")


def _sixteen_to_l(im: Image.Image) -> Image.Image:
    """Scale 16-bit samples (0..65535) to 8-bit (0..255) with rounding; larger values clip."""
    values = np.asarray(im).astype(np.int64)
    scaled = (np.clip(values, 0, 65535) * 255 + 32767) // 65535
    return Image.fromarray(scaled.astype(np.uint8), "L")


def _from_array(array: np.ndarray, name: str) -> Image.Image:
    """HxW (grey), HxWx1, HxWx3 (RGB) or HxWx4 (RGBA) arrays; uint8, uint16, bool or float in [0, 1]."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or 0 in a.shape:
        raise ImageDecodeError(name, f"array of shape {a.shape} is not an HxW, HxWx3 or HxWx4 image")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        a = ((a.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        a = np.clip(np.rint(np.nan_to_num(a.astype(np.float64), nan=0.0) * 255.0), 0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise ImageDecodeError(name, f"array dtype {a.dtype} is not uint8, uint16, bool or float")
    mode = "L" if a.ndim == 2 else ("RGB" if a.shape[2] == 3 else "RGBA")
    return to_rgb(Image.fromarray(np.ascontiguousarray(a), mode))


def _allowed_formats() -> list[str]:
    Image.init()
    return [f for f in Image.OPEN if f not in _REFUSED_FORMATS]


def _is_heif(data: bytes) -> bool:
    return data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS


def _decode_heif(data: bytes, options: DecodeOptions, name: str) -> DecodedImage:
    try:
        import pillow_heif
    except ImportError:
        raise ImageDecodeError(
            name, "unsupported format: HEIC/HEIF needs pillow-heif (pip install 'taglens[heif]')"
        ) from None
    try:
        heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
        _check_pixels(heif.size[0], heif.size[1], options, name)
        im = heif.to_pillow()
    except ImageDecodeError:
        raise
    except Exception as exc:
        raise ImageDecodeError(name, f"corrupt HEIF image ({_exc_text(exc)})") from None
    return _from_opened(im, options, name)


def _unidentified_reason(data: bytes) -> str:
    if data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis"):
        return "unsupported format: AVIF needs Pillow built with libavif (Pillow >= 11.3 wheels have it)"
    if data[:2] == b"\xff\xd8":
        return "truncated or corrupt JPEG (header unreadable)"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "truncated or corrupt PNG (header unreadable)"
    if data[:4] == b"%!PS" or data[:4] == b"\xc5\xd0\xd3\xc6":
        return "unsupported format: PostScript/EPS is refused (it would run Ghostscript)"
    return "not an image (format not recognised)"


def _exc_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__
