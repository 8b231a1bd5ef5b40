"""Listing and reading inputs for the Ray job: local arguments expand exactly as the local
engine's, URIs (file://, fsspec's memory://) are walked and read through pyarrow filesystems."""

from __future__ import annotations

import os

import fsspec
import pytest

from taglens.errors import ImageDecodeError
from taglens.io.inputs import iter_image_paths
from taglens.io.locations import is_uri, list_locations, read_location

from ..conftest import photo


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / ".cache").mkdir()
    photo(20, 10, 1).save(root / "b.png")
    photo(20, 10, 2).save(root / "a.jpg")
    photo(20, 10, 3).save(root / "sub" / "c.webp")
    photo(20, 10, 4).save(root / ".cache" / "hidden.png")
    (root / "notes.txt").write_text("not an image")
    return root


def test_is_uri():
    assert is_uri("s3://bucket/key") and is_uri("file:///tmp/x") and is_uri("gs://b")
    assert not is_uri("/tmp/x") and not is_uri("C:\\photos") and not is_uri("photos/a.jpg")


@pytest.mark.parametrize("recursive", [True, False])
def test_local_arguments_expand_as_the_local_engine_does(tree, recursive):
    arguments = [str(tree), str(tree / "missing.jpg")]
    found = list(list_locations(arguments, recursive=recursive))
    assert [x.path for x in found] == list(iter_image_paths(arguments, recursive=recursive))
    assert all(not x.remote and x.fs_path == os.path.abspath(x.path) for x in found)


def test_a_quoted_local_glob_is_expanded(tree):
    found = [x.path for x in list_locations([str(tree / "*.png"), str(tree / "**" / "*.webp")])]
    assert found == [str(tree / "b.png"), str(tree / "sub" / "c.webp")]


def test_a_file_uri_folder_is_walked_like_a_local_folder(tree):
    uri = "file://" + str(tree)
    found = list(list_locations([uri + "/"]))
    assert [x.path for x in found] == [uri + "/a.jpg", uri + "/b.png", uri + "/sub/c.webp"]
    assert [x.fs_path for x in found] == [str(tree / "a.jpg"), str(tree / "b.png"), str(tree / "sub" / "c.webp")]
    assert all(x.remote for x in found)
    assert found[0].mtime == pytest.approx(os.stat(tree / "a.jpg").st_mtime, abs=1e-5)
    assert [x.path for x in list_locations([uri], recursive=False)] == [uri + "/a.jpg", uri + "/b.png"]
    assert read_location(found[1], 10**6) == (tree / "b.png").read_bytes()


def test_a_uri_glob_and_a_missing_uri(tree):
    uri = "file://" + str(tree)
    assert [x.path for x in list_locations([uri + "/*.png"])] == [uri + "/b.png"]
    assert [x.path for x in list_locations([uri + "/**/*.webp"])] == [uri + "/sub/c.webp"]
    assert [x.path for x in list_locations([uri + "/**"])] == [
        uri + "/a.jpg", uri + "/b.png", uri + "/notes.txt", uri + "/sub/c.webp"]  # a glob names files itself
    missing = list(list_locations([uri + "/nope.jpg"]))
    assert [x.path for x in missing] == [uri + "/nope.jpg"]
    with pytest.raises(ImageDecodeError, match="no such file"):
        read_location(missing[0], 100)


def test_fsspec_protocols_work_where_pyarrow_has_none():
    fs = fsspec.filesystem("memory")
    fs.pipe({"/taglens-test/x/one.png": b"1", "/taglens-test/x/two.jpg": b"22", "/taglens-test/x/skip.txt": b"3"})
    try:
        found = list(list_locations(["memory://taglens-test/x"]))
        assert [x.path for x in found] == ["memory://taglens-test/x/one.png", "memory://taglens-test/x/two.jpg"]
        assert read_location(found[1], 100) == b"22"
        assert len(read_location(found[1], 0)) == 1  # at most max_bytes + 1: the decoder refuses it
    finally:
        fs.rm("/taglens-test", recursive=True)
