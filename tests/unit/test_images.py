"""Decoding: every supported input kind, every mode, EXIF turns, limits, and hostile bytes."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from taglens.errors import ImageDecodeError
from taglens.io.decode import DecodeOptions, decode, decode_image

from ..conftest import CORPUS, photo


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def close(pixel, expected, tol=12) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, expected))


# --- formats -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF"])
def test_common_formats_decode_to_rgb(fmt):
    source = photo(48, 32)
    data = encode(source, fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP", "AVIF") else {}))
    decoded = decode(data)
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (48, 32)
    assert (decoded.width, decoded.height) == (48, 32)
    assert decoded.format == fmt
    tol = 60 if fmt in ("GIF", "AVIF") else 30  # palette / chroma subsampling
    assert np.abs(np.asarray(decoded.image, int) - np.asarray(source, int)).mean() < tol / 4
    assert close(decoded.image.getpixel((0, 0)), source.getpixel((0, 0)), tol)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (20, 10), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    image = decode_image(buf.getvalue())
    assert image.size == (20, 10)
    assert close(image.getpixel((5, 5)), (255, 0, 0), 2)


def test_heif_without_plugin_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_heif(name, *args, **kwargs):
        if name == "pillow_heif":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_heif)
    fake_heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    with pytest.raises(ImageDecodeError, match="pillow-heif"):
        decode(fake_heic, name="IMG_0001.HEIC")


# --- inputs of every kind ------------------------------------------------------------------------

def test_path_bytes_file_object_pil_and_array_agree(tmp_path):
    source = photo(30, 20)
    path = tmp_path / "x.png"
    source.save(path)
    expected = np.asarray(source)
    for item in (path, str(path), path.read_bytes(), bytearray(path.read_bytes()), open(path, "rb"), source, expected):
        assert np.array_equal(np.asarray(decode_image(item)), expected), type(item)


@pytest.mark.parametrize(
    "array, expected",
    [
        (np.full((4, 5), 200, np.uint8), (200, 200, 200)),
        (np.full((4, 5, 1), 7, np.uint8), (7, 7, 7)),
        (np.full((4, 5, 3), (1, 2, 3), np.uint8), (1, 2, 3)),
        (np.full((4, 5), 32768, np.uint16), (128, 128, 128)),
        (np.full((4, 5, 3), 0.5, np.float32), (128, 128, 128)),
        (np.ones((4, 5), bool), (255, 255, 255)),
        (np.concatenate([np.zeros((4, 5, 3), np.uint8), np.zeros((4, 5, 1), np.uint8)], -1), (255, 255, 255)),
    ],
)
def test_numpy_arrays(array, expected):
    image = decode_image(array)
    assert image.mode == "RGB" and image.size == (5, 4)
    assert image.getpixel((2, 2)) == expected


@pytest.mark.parametrize("array", [np.zeros((4, 5, 2), np.uint8), np.zeros((3,), np.uint8),
                                   np.zeros((4, 5), np.int64), np.zeros((0, 5), np.uint8)])
def test_bad_arrays_raise_decode_error(array):
    with pytest.raises(ImageDecodeError, match="array"):
        decode(array)


# --- modes -----------------------------------------------------------------------------------------

def test_rgba_composites_onto_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    image.putpixel((1, 1), (0, 0, 255, 255))
    image.putpixel((2, 2), (0, 0, 0, 128))
    out = decode_image(encode(image, "PNG"))
    assert out.getpixel((0, 0)) == (255, 255, 255)  # fully transparent red -> white
    assert out.getpixel((1, 1)) == (0, 0, 255)
    assert close(out.getpixel((2, 2)), (127, 127, 127), 1)


def test_la_composites_onto_white():
    image = Image.new("LA", (4, 4), (0, 0))
    image.putpixel((0, 0), (0, 255))
    out = decode_image(encode(image, "PNG"))
    assert out.getpixel((0, 0)) == (0, 0, 0)
    assert out.getpixel((3, 3)) == (255, 255, 255)


def test_palette_png_with_transparency_composites_onto_white():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((1, 1), 1)
    data = encode(image, "PNG", transparency=0)
    assert Image.open(io.BytesIO(data)).info.get("transparency") == 0
    out = decode_image(data)
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 1)) == (0, 255, 0)


def test_sixteen_bit_png_is_scaled_not_clipped():
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = np.asarray(decode_image(data))[0, :, 0]
    assert out.tolist() == [0, 1, 128, 255]


def test_cmyk_jpeg():
    image = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red in CMYK
    data = encode(image, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = decode_image(data)
    assert out.mode == "RGB"
    assert close(out.getpixel((8, 8)), (255, 0, 0), 10)


@pytest.mark.parametrize("mode, value, expected", [("1", 1, (255, 255, 255)), ("L", 90, (90, 90, 90)),
                                                   ("I", 65535, (255, 255, 255)), ("F", 0.5, (128, 128, 128)),
                                                   ("YCbCr", (76, 85, 255), (254, 0, 0))])
def test_other_modes_convert_to_rgb(mode, value, expected):
    out = decode_image(Image.new(mode, (3, 3), value))
    assert out.mode == "RGB"
    assert close(out.getpixel((1, 1)), expected, 2)


# --- EXIF orientation ------------------------------------------------------------------------------

# Stored image: 40x20, red block top-left, green block top-right. Where each lands when displayed,
# from the EXIF specification's meaning of each orientation value (not from Pillow's table).
RED, GREEN = (255, 0, 0), (0, 255, 0)
ORIENTATIONS = {
    1: ((40, 20), "TL", "TR"),
    2: ((40, 20), "TR", "TL"),
    3: ((40, 20), "BR", "BL"),
    4: ((40, 20), "BL", "BR"),
    5: ((20, 40), "TL", "BL"),
    6: ((20, 40), "TR", "BR"),
    7: ((20, 40), "BR", "TR"),
    8: ((20, 40), "BL", "TL"),
}


def corner(image: Image.Image, name: str) -> tuple[int, int, int]:
    w, h = image.size
    x = 3 if name[1] == "L" else w - 4
    y = 3 if name[0] == "T" else h - 4
    return image.getpixel((x, y))


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_by_pixel_position(orientation, fmt):
    stored = Image.new("RGB", (40, 20), (255, 255, 255))
    stored.paste(RED, (0, 0, 8, 8))
    stored.paste(GREEN, (32, 0, 40, 8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    decoded = decode(encode(stored, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {})))
    size, red_at, green_at = ORIENTATIONS[orientation]
    assert decoded.image.size == size
    assert (decoded.width, decoded.height) == size
    assert close(corner(decoded.image, red_at), RED, 40)
    assert close(corner(decoded.image, green_at), GREEN, 40)


def test_corrupt_exif_keeps_image_as_stored():
    data = bytearray(encode(photo(20, 10), "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff"))
    assert decode_image(bytes(data)).size == (20, 10)


# --- JPEG draft mode --------------------------------------------------------------------------------

def test_jpeg_draft_is_off_by_default():
    data = encode(photo(1600, 1200), "JPEG", quality=90)
    full = decode(data, DecodeOptions(target_size=32))  # 37x the target: drafted at 1/8 if it were on
    assert full.draft_scale == 1 and full.image.size == (1600, 1200)
    assert DecodeOptions().draft is False
    with Image.open(io.BytesIO(data)) as reference:
        assert np.array_equal(np.asarray(full.image), np.asarray(reference.convert("RGB")))


def test_jpeg_draft_decodes_at_reduced_scale_only_when_twice_the_target():
    data = encode(photo(1600, 1200), "JPEG", quality=90)
    drafted = decode(data, DecodeOptions(target_size=224, draft=True))
    assert drafted.draft_scale == 4 and drafted.image.size == (400, 300)
    assert (drafted.width, drafted.height) == (1600, 1200)  # the file's real size is kept
    assert min(drafted.image.size) >= 224
    full = decode(data, DecodeOptions(target_size=224, draft=False))
    assert full.draft_scale == 1 and full.image.size == (1600, 1200)
    near = decode(data, DecodeOptions(target_size=700, draft=True))  # 1200 // 700 < 2: no draft
    assert near.draft_scale == 1 and near.image.size == (1600, 1200)
    assert decode(data, DecodeOptions(draft=True)).draft_scale == 1  # no target, no draft


def test_draft_with_exif_turn_reports_displayed_size():
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(photo(1600, 800), "JPEG", exif=exif.tobytes())
    drafted = decode(data, DecodeOptions(target_size=200, draft=True))
    assert drafted.draft_scale > 1
    assert (drafted.width, drafted.height) == (800, 1600)
    assert drafted.image.size == (800 // drafted.draft_scale, 1600 // drafted.draft_scale)


# --- limits and failures ------------------------------------------------------------------------

def png_bytes(width: int, height: int, rows: int = 4) -> bytes:
    """A greyscale PNG header for width x height whose data holds only a few rows: a bomb whose
    danger lies in its header, which is all a safe decoder may read before refusing it."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    raw = zlib.compress((b"\x00" + b"\x00" * width) * rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def test_png_bomb_over_the_limit_is_refused_before_decoding():
    start = time.perf_counter()
    with pytest.raises(ImageDecodeError, match="too large"):
        decode(png_bytes(30000, 30000), name="bomb.png")
    with pytest.raises(ImageDecodeError, match="too large: 10000x10000"):
        decode(png_bytes(10000, 10000), DecodeOptions(max_pixels=50_000_000))
    assert time.perf_counter() - start < 2


def test_a_real_zero_filled_bomb_under_a_small_limit():
    rows = zlib.compressobj()
    body = b"".join(rows.compress(b"\x00" * 4001) for _ in range(4000)) + rows.flush()
    data = png_bytes(4000, 4000, rows=0)
    data = data.replace(data[data.index(b"IDAT") - 4:data.index(b"IEND") - 4], b"")  # drop the stub IDAT

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    data = data[:-12] + chunk(b"IDAT", body) + data[-12:]
    assert len(data) < 100_000  # 16 megapixels in under 100 kB
    with pytest.raises(ImageDecodeError, match="too large"):
        decode(data, DecodeOptions(max_pixels=1_000_000))
    assert decode(data).image.size == (4000, 4000)


def test_max_file_size(tmp_path):
    path = tmp_path / "big.png"
    photo(64, 64).save(path)
    with pytest.raises(ImageDecodeError, match="file too large"):
        decode(path, DecodeOptions(max_bytes=100))
    with pytest.raises(ImageDecodeError, match="file too large"):
        decode(path.read_bytes(), DecodeOptions(max_bytes=100))


@pytest.mark.parametrize("size", [(1, 100000), (100000, 1)])
def test_extreme_aspect_ratio(size):
    image = decode_image(encode(Image.new("L", size, 77), "PNG"))
    assert image.size == size and image.getpixel((0, 0)) == (77, 77, 77)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageDecodeError) as info:
        decode(path)
    assert info.value.reason == "empty file"
    assert str(path) in str(info.value)


def test_truncated_jpeg(tmp_path):
    data = encode(photo(200, 150), "JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="truncated") as info:
        decode(path)
    assert info.value.source == str(path)


def test_truncated_png():
    data = encode(photo(200, 150), "PNG")
    with pytest.raises(ImageDecodeError, match="truncated|corrupt"):
        decode(data[: len(data) // 2])


def test_random_bytes_named_jpg(tmp_path):
    path = tmp_path / "noise.jpg"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(ImageDecodeError, match="not an image"):
        decode(path)


def test_text_file_and_missing_file_and_folder(tmp_path):
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(ImageDecodeError, match="not an image"):
        decode(tmp_path / "notes.png")
    with pytest.raises(ImageDecodeError, match="no such file"):
        decode(tmp_path / "missing.png")
    with pytest.raises(ImageDecodeError, match="folder"):
        decode(tmp_path)


def test_eps_is_refused_without_running_ghostscript():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(ImageDecodeError, match="EPS|not an image"):
        decode(eps)


def test_no_global_pillow_setting_changes():
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, dict(Image.OPEN), list(Image.ID))
    decode(encode(photo(), "JPEG"), DecodeOptions(max_pixels=10**9, target_size=16))
    with pytest.raises(ImageDecodeError):
        decode(png_bytes(30000, 30000), DecodeOptions(max_pixels=10))
    after = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, dict(Image.OPEN), list(Image.ID))
    assert before == after
    # Outside a taglens decode, Pillow's own bound still warns and refuses as configured.
    with pytest.warns(Image.DecompressionBombWarning):
        Image.open(io.BytesIO(png_bytes(10000, 10000))).close()
    with pytest.raises(Image.DecompressionBombError, match="could be decompression bomb"):
        Image.open(io.BytesIO(png_bytes(14000, 14000)))


@pytest.mark.parametrize("side, limit", [
    (1500, 3_000_000),   # beyond Pillow's refusal bound (2x its limit), within ours: decoded
    (1200, 3_000_000),   # in Pillow's warning band, within ours: decoded, no warning
    (1500, 2_000_000),   # beyond ours: our refusal, our message
    (800, 500_000),      # below Pillow's bound but beyond ours: our refusal
])
def test_max_pixels_is_the_only_limit(monkeypatch, side, limit):
    """Pillow's bound (lowered here to 1 MP so the test stays small) plays no part: above or below
    it the limit is taglens's, with taglens's message, and no DecompressionBombWarning is raised."""
    import warnings

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    data = png_bytes(side, side, rows=side)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any DecompressionBombWarning fails the test
        if side * side <= limit:
            assert decode(data, DecodeOptions(max_pixels=limit)).image.size == (side, side)
            return
        with pytest.raises(ImageDecodeError) as info:
            decode(data, DecodeOptions(max_pixels=limit))
    assert info.value.reason == f"too large: {side}x{side} = {side * side} pixels, limit {limit}"


def test_at_pillows_real_bound_the_message_is_ours():
    with pytest.raises(ImageDecodeError) as info:  # Pillow itself refuses this header (> 2 x 89.5 MP)
        decode(png_bytes(14000, 14000), DecodeOptions(max_pixels=150_000_000))
    assert info.value.reason == "too large: 14000x14000 = 196000000 pixels, limit 150000000"


# --- property-based: arbitrary bytes ----------------------------------------------------------------

def _valid_files() -> list[bytes]:
    base = photo(24, 16)
    out = [encode(base, f) for f in ("PNG", "GIF", "BMP", "TIFF", "WEBP")]
    out.append(encode(base, "JPEG", quality=80))
    out.append(encode(base.convert("RGBA"), "PNG"))
    out.append(encode(Image.new("I;16", (8, 8), 1000), "PNG"))
    return out


VALID = _valid_files()


def assert_rgb_or_decode_error(data: bytes) -> None:
    try:
        image = decode_image(data, DecodeOptions(max_pixels=4_000_000))
    except ImageDecodeError as exc:
        assert exc.reason and exc.source == "<bytes>"
    else:
        assert image.mode == "RGB" and image.width > 0 and image.height > 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_give_rgb_or_decode_error(data):
    assert_rgb_or_decode_error(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
       st.integers(0, 10**6))
def test_mutated_images_give_rgb_or_decode_error(valid, flips, cut):
    data = bytearray(valid)
    for position, value in flips:
        data[position % len(data)] = value
    assert_rgb_or_decode_error(bytes(data[: max(1, cut % (len(data) + 1))]))


# --- Pillow's own hostile test images ---------------------------------------------------------------

@pytest.mark.corpus
@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is only on the team's machines")
def test_pillow_corpus_every_file_decodes_or_fails_cleanly():
    files = sorted(p for p in CORPUS.rglob("*") if p.is_file())
    assert len(files) >= 900
    ok = failed = 0
    for path in files:
        start = time.perf_counter()
        try:
            image = decode_image(path)
            assert image.mode == "RGB"
            ok += 1
        except ImageDecodeError as exc:
            assert str(path) in str(exc)
            failed += 1
        assert time.perf_counter() - start < 10, path
    assert ok > 700 and failed > 50


# --- headers that declare more than their file holds ------------------------------------------------

def blp_declaring(height: int, size: int) -> bytes:
    """A BLP2 file of ``size`` bytes whose header declares 1 x ``height`` pixels: the shape of the
    fuzzed files that made Pillow allocate up to 645 MB before failing "truncated"."""
    head = b"BLP2" + struct.pack("<ibbbb", 1, 1, 8, 0, 0) + struct.pack("<II", 1, height)
    head += struct.pack("<16I", 148, *[0] * 15) + struct.pack("<16I", size - 148, *[0] * 15)
    return (head + bytes(range(256)) * 8)[:size]


DECODE_BOUND_MB = 64  # the most a refused file may add to the peak RSS of the process decoding it


def peak_growth_mb(files: list[bytes]) -> tuple[float, list[str]]:
    """Decode ``files`` in a fresh child process: how far its peak RSS (ru_maxrss) rose, and the errors."""
    import pickle
    import subprocess
    import sys

    script = (
        "import pickle, resource, sys\n"
        "from taglens.io.decode import DecodeOptions, decode_bytes\n"
        "from taglens.errors import ImageDecodeError\n"
        "files = pickle.loads(sys.stdin.buffer.read())\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "errors = []\n"
        "for data in files:\n"
        "    try:\n"
        "        decode_bytes(data, DecodeOptions(), name='f')\n"
        "        errors.append(None)\n"
        "    except ImageDecodeError as exc:\n"
        "        errors.append(exc.reason if hasattr(exc, 'reason') else str(exc))\n"
        "grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024\n"
        "sys.stdout.buffer.write(pickle.dumps((grew, errors)))\n")
    done = subprocess.run([sys.executable, "-c", script], input=pickle.dumps(files), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    return pickle.loads(done.stdout)


def test_small_files_declaring_huge_images_are_refused_within_a_memory_bound():
    files = [blp_declaring(h, n) for h, n in [(83_886_338, 284), (67_108_880, 1539), (47_884_801, 889),
                                               (16_777_474, 187)]]
    if CORPUS.is_dir():
        files += [p.read_bytes() for p in sorted(CORPUS.glob("timeout-*.blp")) + sorted(CORPUS.glob("timeout-*.dds"))]
    grew, errors = peak_growth_mb(files)
    assert all(e is not None and "truncated image data" in e and "declared" in e for e in errors), errors
    assert grew < DECODE_BOUND_MB, f"peak RSS rose {grew:.0f} MB decoding {len(files)} refused files"
