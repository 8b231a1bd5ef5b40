"""Turning command-line arguments into image paths."""

from __future__ import annotations

import io
import os

from taglens.io.inputs import image_suffixes, iter_image_paths


def make_tree(root):
    for rel in ["a.jpg", "b.PNG", "notes.txt", ".hidden.jpg", "sub/c.webp", "sub/deeper/d.tif", ".cache/e.jpg", "f.eps"]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_folders_are_walked_recursively_sorted_skipping_hidden_and_non_images(tmp_path):
    make_tree(tmp_path)
    found = [os.path.relpath(p, tmp_path) for p in iter_image_paths([str(tmp_path)])]
    assert found == ["a.jpg", "b.PNG", os.path.join("sub", "c.webp"), os.path.join("sub", "deeper", "d.tif")]


def test_no_recursive_keeps_top_level(tmp_path):
    make_tree(tmp_path)
    found = [os.path.basename(p) for p in iter_image_paths([str(tmp_path)], recursive=False)]
    assert found == ["a.jpg", "b.PNG"]


def test_explicit_files_pass_whatever_their_suffix_even_missing(tmp_path):
    make_tree(tmp_path)
    args = [str(tmp_path / "notes.txt"), str(tmp_path / "missing.jpg")]
    assert list(iter_image_paths(args)) == args


def test_stdin_dash_reads_paths(tmp_path):
    make_tree(tmp_path)
    stdin = io.StringIO(f"{tmp_path / 'a.jpg'}\n\n{tmp_path / 'sub'}\r\n")
    found = list(iter_image_paths(["-"], stdin=stdin))
    assert found == [str(tmp_path / "a.jpg"), os.path.join(str(tmp_path / "sub"), "c.webp"),
                     os.path.join(str(tmp_path / "sub"), "deeper", "d.tif")]


def test_paths_are_streamed_lazily(tmp_path):
    make_tree(tmp_path)
    stream = iter_image_paths([str(tmp_path)])
    assert next(stream).endswith("a.jpg")


def test_suffixes_cover_the_common_formats_and_refuse_postscript():
    suffixes = image_suffixes()
    assert {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif", ".heic"} <= suffixes
    assert ".eps" not in suffixes and ".ps" not in suffixes


def test_a_walk_takes_every_suffix_whose_files_decode(tmp_path):
    """An ``.mpo`` (opened by Pillow's JPEG plugin) is walked, as it decodes when named: every
    registered suffix whose sample file decodes is in the walk."""
    from PIL import Image

    from taglens.io.decode import decode

    Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "a.mpo", format="MPO")
    decode(tmp_path / "a.mpo")
    assert [os.path.basename(p) for p in iter_image_paths([str(tmp_path)])] == ["a.mpo"]
    Image.init()
    for ext, fmt in Image.registered_extensions().items():
        if fmt in Image.OPEN or fmt == "MPO":
            assert ext in image_suffixes() or ext in {".eps", ".ps", ".h5", ".hdf", ".grib", ".bufr", ".fit",
                                                      ".fits", ".mpg", ".mpeg", ".wmf", ".emf"}, ext
