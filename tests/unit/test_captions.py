"""Caption files: names and folders, kohya-style text (underscores, emoticons, escapes, prefix),
skip / overwrite / append, and writes that are atomic even when interrupted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taglens.io import captions as captions_module
from taglens.io.captions import CaptionOptions, CaptionWriter, format_tag, is_emoticon, write_text_atomic
from taglens.errors import CaptionError
from taglens.records import Record, TagScore


def record(path, *names, error=None) -> Record:
    if error:
        return Record(path=str(path), error=error)
    return Record(path=str(path), tags=tuple(TagScore(n, 0.9 - i * 0.01) for i, n in enumerate(names)))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*.tmp"))


# ----------------------------------------------------------------------------- where


def test_caption_sits_beside_the_image_with_its_suffix_replaced(tmp_path):
    writer = CaptionWriter(CaptionOptions())
    assert writer.path_for(tmp_path / "a.jpg") == tmp_path / "a.txt"
    assert writer.path_for(tmp_path / "photo.v2.png") == tmp_path / "photo.v2.txt"
    assert CaptionWriter(CaptionOptions(extension="caption")).path_for("x/a.webp") == Path("x/a.caption")


def test_caption_dir_keeps_paths_below_the_deepest_input_folder(tmp_path):
    data, out = tmp_path / "data", tmp_path / "captions"
    writer = CaptionWriter(CaptionOptions(caption_dir=out), roots=[str(data), str(data / "sub")])
    assert writer.path_for(data / "x" / "a.jpg") == out / "x" / "a.txt"
    assert writer.path_for(data / "sub" / "deep" / "b.png") == out / "deep" / "b.txt"
    assert writer.path_for(tmp_path / "elsewhere" / "c.jpg") == out / "c.txt"  # named on its own
    relative = CaptionWriter(CaptionOptions(caption_dir=out), roots=["."])
    assert relative.path_for("./d/e.jpg") == out / "d" / "e.txt"


@pytest.mark.parametrize("bad", [".", "a/b", ""])
def test_bad_extensions_and_modes_are_refused(bad):
    with pytest.raises(ValueError):
        CaptionOptions(extension=bad)
    with pytest.raises(ValueError):
        CaptionOptions(existing="merge")


# ----------------------------------------------------------------------------- what


EMOTICONS = ["^_^", ">_<", "o_o", "0_0", "+_+", "=_=", "(o)_(o)", "<o>_<o>", "||_||", "|_|", "@_@", "x_x",
             "u_u", "6_9", ">_o", "+_-", "._.", "<|>_<|>", "3_3"]


@pytest.mark.parametrize("tag", EMOTICONS)
def test_emoticons_keep_their_underscores(tag):
    assert is_emoticon(tag)
    assert format_tag(tag, replace_underscores=True) == tag


@pytest.mark.parametrize("tag, expected", [
    ("long_hair", "long hair"), ("looking_at_viewer", "looking at viewer"), ("1girl", "1girl"),
    (":d", ":d"), (";)", ";)"), ("c:", "c:"), ("v_arms", "v arms"), ("hatsune_miku", "hatsune miku"),
    ("ângulo_holandés", "ângulo holandés"),
])
def test_replace_underscores(tag, expected):
    assert format_tag(tag, replace_underscores=True) == expected
    assert format_tag(tag) == tag  # off by default


def test_escape_parens_after_underscores():
    assert format_tag("photoshop_(medium)", escape_parens=True) == r"photoshop_\(medium\)"
    assert format_tag("photoshop_(medium)", replace_underscores=True, escape_parens=True) == r"photoshop \(medium\)"
    assert format_tag("(o)_(o)", replace_underscores=True, escape_parens=True) == r"\(o\)_\(o\)"


def test_text_joins_with_comma_space_prefix_first_and_dedupes():
    options = CaptionOptions(prefix="mychar, style one", replace_underscores=True)
    assert options.prefix == ("mychar", "style one")
    assert options.text(["long_hair", "mychar", "^_^", "long hair"]) == "mychar, style one, long hair, ^_^\n"
    assert CaptionOptions().text([]) == "\n"


# ----------------------------------------------------------------------------- existing files


def test_overwrite_replaces(tmp_path):
    (tmp_path / "a.txt").write_text("old, words\n")
    writer = CaptionWriter(CaptionOptions(existing="overwrite"))
    assert writer.write(record(tmp_path / "a.jpg", "cat", "smile")) == "written"
    assert (tmp_path / "a.txt").read_text() == "cat, smile\n"


def test_skip_leaves_the_file_and_lets_the_run_skip_the_image(tmp_path):
    (tmp_path / "a.txt").write_text("hand written\n")
    writer = CaptionWriter(CaptionOptions(existing="skip"))
    assert writer.should_skip(tmp_path / "a.jpg") and not writer.should_skip(tmp_path / "b.jpg")
    assert writer.write(record(tmp_path / "a.jpg", "cat")) == "skipped"
    assert (tmp_path / "a.txt").read_text() == "hand written\n"
    assert writer.counts["skipped"] == 2
    assert not CaptionWriter(CaptionOptions(existing="overwrite")).should_skip(tmp_path / "a.jpg")


def test_append_keeps_the_old_entries_first_and_adds_only_new_ones(tmp_path):
    (tmp_path / "a.txt").write_text("mychar, long hair, photoshop \\(medium\\), hand tag\n")
    options = CaptionOptions(existing="append", prefix="mychar", escape_parens=True)
    writer = CaptionWriter(options)
    outcome = writer.write(record(tmp_path / "a.jpg", "cat", "long_hair", "photoshop_(medium)", "^_^"))
    assert outcome == "appended"
    assert (tmp_path / "a.txt").read_text() == "mychar, long hair, photoshop \\(medium\\), hand tag, cat, ^_^\n"
    # appending to a file that is not there just writes it
    assert writer.write(record(tmp_path / "b.jpg", "cat")) == "written"
    assert (tmp_path / "b.txt").read_text() == "mychar, cat\n"


def test_append_puts_the_prefix_first_even_when_the_old_caption_lacks_it(tmp_path):
    (tmp_path / "a.txt").write_text("old one, old two")
    CaptionWriter(CaptionOptions(existing="append", prefix="trigger")).write(record(tmp_path / "a.jpg", "new"))
    assert (tmp_path / "a.txt").read_text() == "trigger, old one, old two, new\n"


def test_error_records_write_nothing(tmp_path):
    writer = CaptionWriter(CaptionOptions(existing="overwrite"))
    assert writer.write(record(tmp_path / "a.jpg", error="truncated image data")) is None
    assert not (tmp_path / "a.txt").exists()


def test_two_images_with_one_caption_name_clash_loudly(tmp_path):
    writer = CaptionWriter(CaptionOptions(existing="skip"))
    writer.write(record(tmp_path / "a.jpg", "cat"))
    assert not writer.should_skip(tmp_path / "a.png")  # the caption is this run's own, not a reason to skip
    with pytest.raises(CaptionError, match="already written for .*a.jpg in this run"):
        writer.write(record(tmp_path / "a.png", "dog"))
    assert (tmp_path / "a.txt").read_text() == "cat\n" and writer.counts["failed"] == 1


def test_caption_dir_folders_are_created(tmp_path):
    out = tmp_path / "captions"
    writer = CaptionWriter(CaptionOptions(caption_dir=out), roots=[str(tmp_path / "data")])
    writer.write(record(tmp_path / "data" / "x" / "y" / "a.jpg", "cat"))
    assert (out / "x" / "y" / "a.txt").read_text() == "cat\n"
    assert writer.summary() == "captions: 1 written"


# ----------------------------------------------------------------------------- atomic writes


def test_interrupted_rename_leaves_the_old_caption_and_no_temporary_file(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("precious, old\n")

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(captions_module.os, "replace", crash)
    writer = CaptionWriter(CaptionOptions(existing="overwrite"))
    with pytest.raises(CaptionError, match="a.txt: cannot write caption \\(No space left on device\\)"):
        writer.write(record(tmp_path / "a.jpg", "cat"))
    assert (tmp_path / "a.txt").read_text() == "precious, old\n"
    assert leftovers(tmp_path) == [] and sorted(os.listdir(tmp_path)) == ["a.txt"]


def test_write_that_dies_halfway_leaves_the_old_caption(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("precious, old\n")
    real_fdopen = os.fdopen

    class HalfWriter:
        """A file object that writes half the text, then the process is 'killed'."""

        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, text):
            self.f.write(text[: len(text) // 2])
            self.f.flush()
            raise KeyboardInterrupt  # not even an OSError: cleanup must still happen

    monkeypatch.setattr(captions_module.os, "fdopen", lambda fd, *a, **k: HalfWriter(real_fdopen(fd, *a, **k)))
    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(tmp_path / "a.txt", "a much longer new caption, with many tags\n")
    assert (tmp_path / "a.txt").read_text() == "precious, old\n"
    assert leftovers(tmp_path) == []


def test_failed_fsync_is_reported_and_cleaned_up(tmp_path, monkeypatch):
    def failing_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(captions_module.os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        write_text_atomic(tmp_path / "new.txt", "cat\n")
    assert not (tmp_path / "new.txt").exists() and leftovers(tmp_path) == []


def test_modes_new_files_follow_the_umask_replaced_files_keep_theirs(tmp_path):
    old = os.umask(0o027)
    try:
        write_text_atomic(tmp_path / "new.txt", "x\n")
    finally:
        os.umask(old)
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o640
    (tmp_path / "kept.txt").write_text("y\n")
    os.chmod(tmp_path / "kept.txt", 0o604)
    write_text_atomic(tmp_path / "kept.txt", "z\n")
    assert (tmp_path / "kept.txt").stat().st_mode & 0o777 == 0o604
    assert (tmp_path / "kept.txt").read_text() == "z\n"
