"""Output files, the same for every command that writes one, through the installed ``taglens``:
the format follows the ``--output`` name; every Parquet file has one schema that ``library import``
reads; an output that cannot be written is one line (exit 1) before any model loads, leaving
nothing behind; files get the umask's permissions; CSV name lists are unambiguous."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ..conftest import photo
from ..faults import subprocess_env
from .entry_point import taglens


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        photo(40 + 3 * i, 30 + i, seed=i).save(folder / f"p{i}.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return folder


def model_flags(checkpoints, command):
    if command == "analyze":
        return ["--tagger", checkpoints["joytag"], "--nsfw-model", checkpoints["vit"], "--tasks", "tag,nsfw"]
    model = {"tag": "joytag", "classify": "siglip64", "embed": "siglip64", "nsfw": "vit"}[command]
    return ["--model", checkpoints[model], *(["--labels", "a cat,a dog"] if command == "classify" else [])]


# --- the format follows the file name -------------------------------------------------------------

def read_csv(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


@pytest.mark.parametrize("command, name, check", [
    ("tag", "out.csv", lambda p: read_csv(p)[0].keys() >= {"tags", "tag_scores", "tag_error"}),
    ("tag", "out.txt", lambda p: all("\t" in line for line in p.read_text().splitlines())),
    ("classify", "out.csv", lambda p: json.loads(read_csv(p)[-1]["labels"])),
    ("nsfw", "out.csv", lambda p: read_csv(p)[-1]["nsfw_label"] in ("normal", "nsfw")),
    ("analyze", "out.parquet", lambda p: pq.read_table(p).num_rows == 4),
    ("embed", "out.npy", lambda p: np.load(p).shape == (3, 32)),
])
def test_the_output_suffix_decides_the_format(checkpoints, images, tmp_path, command, name, check):
    out = tmp_path / name
    result = taglens(command, images, *model_flags(checkpoints, command), "-o", out, "-q")
    assert result.returncode == 0, result.stderr
    assert check(out)


@pytest.mark.parametrize("command, args, message", [
    ("tag", ["-o", "x.parquet"], "this command writes .jsonl, .ndjson, .csv, .txt files (parquet is not one"),
    ("classify", ["-o", "x.out"], "its name does not say which"),
    ("nsfw", ["-o", "x.csv", "-f", "jsonl"], "--output x.csv names a csv file, but --format is jsonl"),
    ("analyze", ["-o", "x.jsonl", "-f", "parquet"], "names a jsonl file, but --format is parquet"),
    ("analyze", ["-f", "parquet"], "--format parquet needs --output FILE"),
    ("embed", ["-o", "x.csv"], "this command writes .jsonl, .ndjson, .parquet, .pq, .npy files"),
])
def test_a_name_that_contradicts_the_format_or_says_none_is_a_usage_error(images, tmp_path, command, args,
                                                                          message):
    never = ["--tagger" if command == "analyze" else "--model", tmp_path / "never-loaded"]
    result = taglens(command, images, *never, *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]


def test_a_name_without_a_suffix_takes_the_format_given(checkpoints, images, tmp_path):
    out = tmp_path / "results"
    result = taglens("nsfw", images, "--model", checkpoints["vit"], "-o", out, "-f", "csv", "-q")
    assert result.returncode == 0, result.stderr
    assert read_csv(out)[0].keys() >= {"nsfw_label", "nsfw_error"}
    # a device is written in place, never replaced through a temporary file and a rename
    result = taglens("nsfw", images, "--model", checkpoints["vit"], "-o", "/dev/stdout", "-f", "csv", "-q")
    assert result.returncode == 0, result.stderr
    assert list(csv.DictReader(io.StringIO(result.stdout)))[0].keys() >= {"nsfw_label", "nsfw_error"}
    assert os.path.islink("/dev/stdout") or not os.path.isfile("/dev/stdout")


# --- one Parquet schema ---------------------------------------------------------------------------

def test_embed_parquet_is_the_analyze_schema_and_imports_into_the_library(checkpoints, images, tmp_path):
    embedded, analyzed = tmp_path / "emb.parquet", tmp_path / "all.parquet"
    assert taglens("embed", images, "--model", checkpoints["siglip64"], "-o", embedded, "-q").returncode == 0
    result = taglens("analyze", images, "--tasks", "embed", "--siglip", checkpoints["siglip64"], "-o", analyzed, "-q")
    assert result.returncode == 0, result.stderr
    assert pq.read_schema(embedded) == pq.read_schema(analyzed)  # columns, types and metadata
    one, two = pq.read_table(embedded).to_pylist(), pq.read_table(analyzed).to_pylist()
    for a, b in zip(one, two):
        assert a["path"] == b["path"] and a["sha256"] == b["sha256"] and (a["error"] is None) == (b["error"] is None)
        if a["embedding"] is not None:
            assert np.allclose(a["embedding"], b["embedding"], atol=1e-6)

    library = tmp_path / "lib"
    imported = taglens("library", "import", embedded, "--library", library)
    assert imported.returncode == 0, imported.stderr
    assert "4 rows from 1 file: 3 stored" in imported.stderr and "1 error skipped" in imported.stderr
    found = taglens("search", "a photo", "--library", library, "-f", "jsonl")
    assert found.returncode == 0, found.stderr
    assert sorted(json.loads(line)["path"] for line in found.stdout.splitlines()) == \
        sorted(str(p) for p in images.glob("p*.png"))


def test_library_import_reads_an_older_embed_file(checkpoints, images, tmp_path):
    """``taglens embed`` used to write ``taglens.model_id`` and only path, error, embedding."""
    paths = sorted(str(p) for p in images.glob("p*.png"))
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(paths), 8)).astype(np.float32)
    table = pa.table({"path": paths, "error": pa.array([None] * len(paths), pa.string()),
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 8)})
    old = tmp_path / "old.parquet"
    pq.write_table(table.replace_schema_metadata({"taglens.model_id": "some/siglip", "taglens.revision": "abc",
                                                  "taglens.kind": "siglip", "taglens.dim": "8"}), old)
    result = taglens("library", "import", old, "--library", tmp_path / "lib")
    assert result.returncode == 0, result.stderr
    assert "3 stored" in result.stderr
    stats = json.loads(taglens("library", "stats", "--json", "--library", tmp_path / "lib").stdout)
    assert [(m["task"], m["model_id"], m["revision"], m["results"]) for m in stats["models"]] == \
        [("embed", "some/siglip", "abc", 3)]


# --- outputs that cannot be written ---------------------------------------------------------------

def unwritable_cases(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    return {"under a file": (blocker / "out", "is not a folder"),
            "missing folder": (tmp_path / "no-such-folder" / "out", "does not exist")}


@pytest.mark.parametrize("command, suffix, case", [
    (command, suffix, case) for command, suffix in [("tag", ".jsonl"), ("analyze", ".parquet"), ("embed", ".npy"),
                                                    ("nsfw", ".csv")]
    for case in ("under a file", "missing folder")
] + [("nsfw --copy-to", "", "under a file")])  # --copy-to creates its folder when it is missing
def test_an_output_that_cannot_be_written_is_one_line_before_any_model_loads(images, tmp_path, command, suffix,
                                                                             case):
    target, reason = unwritable_cases(tmp_path)[case]
    target = target.with_name(target.name + suffix)
    before = sorted(p.name for p in tmp_path.iterdir())
    name, *flag = command.split()
    # the model does not exist: the output is refused before anything tries to load it
    never = ["--tagger" if name == "analyze" else "--model", tmp_path / "no-model"]
    result = taglens(name, images, *never, *([*flag, target] if flag else ["-o", target]))
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot write {target}" in lines[0] and reason in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_disk_that_fills_up_leaves_no_file(checkpoints, images, tmp_path):
    """ENOSPC injected where a full disk reports it to a file system that allocates on flush."""
    out = tmp_path / "out" / "tags.jsonl"
    out.parent.mkdir()
    env = subprocess_env(tmp_path / "faults", TAGLENS_TEST_ENOSPC="1")
    result = taglens("tag", images, "--model", checkpoints["joytag"], "-o", out, "-q", env=env)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == f"Error: cannot write {out}: No space left on device"
    assert list(out.parent.iterdir()) == []


@pytest.fixture
def mount(tmp_path):
    """``mount(options)``: a tmpfs at a new folder (root with CAP_SYS_ADMIN only; skipped elsewhere),
    unmounted after the test."""
    mounted = []

    def make(options: str):
        folder = tmp_path / f"mnt-{uuid.uuid4().hex[:6]}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or done.returncode})")
        mounted.append(folder)
        return folder

    yield make
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.mark.parametrize("command, name", [("tag", "tags.jsonl"), ("analyze", "all.parquet"),
                                           ("embed", "emb.npy"), ("nsfw --copy-to", "quarantine")])
def test_a_read_only_file_system_refuses_even_root(checkpoints, images, mount, command, name):
    folder = mount("ro,size=1m")
    name_, *flag = command.split()
    target = folder / name
    result = taglens(name_, images, *model_flags(checkpoints, name_), *([*flag, target] if flag else ["-o", target]))
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == f"Error: cannot write {target}: Read-only file system"


@pytest.mark.parametrize("command, name", [("analyze", "all.jsonl"), ("analyze", "all.parquet"),
                                           ("embed", "emb.npy"), ("nsfw --copy-to", "quarantine")])
def test_a_full_file_system(checkpoints, images, mount, command, name):
    folder = mount("size=256k")
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:  # fill it to the last byte
        try:
            while f.write(b"\0" * 4096):
                pass
        except OSError:
            pass
    name_, *flag = command.split()
    target = folder / name
    result = taglens(name_, images, *model_flags(checkpoints, name_), *([*flag, target] if flag else ["-o", target]))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    if flag:  # each flagged file that could not be copied is named; the journal may not even start
        assert "No space left on device" in result.stderr
    else:
        assert result.stderr.strip().splitlines()[-1].startswith(f"Error: cannot write {target}: ")
        assert "No space left on device" in result.stderr.strip().splitlines()[-1]
        assert sorted(p.name for p in folder.iterdir()) == ["filler"]


def fill(folder, leave: int) -> None:
    """Fill the file system of ``folder`` until ``leave`` bytes are free."""
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    with open(folder / "filler", "wb") as f:
        f.write(b"\0" * max(free - leave, 0))


@pytest.fixture
def many_images(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(24):
        photo(48, 40, seed=i).save(folder / f"p{i:02d}.png")
    return folder


@pytest.mark.parametrize("name", ["all.jsonl", "all.csv", "all.parquet"])
def test_a_disk_that_fills_mid_run_is_one_line_and_leaves_no_part(checkpoints, many_images, mount, name):
    folder = mount("size=256k")
    fill(folder, 12 * 1024)  # room for the first records, not for all of them
    target = folder / name
    result = taglens("analyze", many_images, *model_flags(checkpoints, "analyze"), "-o", target, "-q")
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == f"Error: cannot write {target}: No space left on device" or (
        name.endswith(".parquet") and result.stderr.strip().startswith(f"Error: cannot write {target}: ")
        and "No space left on device" in result.stderr and len(result.stderr.strip().splitlines()) == 1), \
        result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["filler"]


def test_index_on_a_full_disk_is_one_line_and_the_library_stays_usable(checkpoints, many_images, mount):
    folder = mount("size=1m")
    library = folder / "lib"
    env = {"TAGLENS_LIBRARY": str(library)}
    args = ["index", many_images, "--tasks", "tag", "--tagger", checkpoints["joytag"], "-q"]
    first = taglens(*args[:1], many_images / "p00.png", *args[2:], env=env)
    assert first.returncode == 0, first.stderr
    fill(folder, 48 * 1024)  # room to open the library, not to index the rest
    result = taglens(*args, env=env)
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: cannot write the library: database or disk is full; free some space"), line
    (folder / "filler").unlink()
    again = taglens(*args, env=env)
    assert again.returncode == 0, again.stderr
    stats = taglens("library", "stats", env=env)
    assert stats.returncode == 0 and "24 indexed" in stats.stdout, stats.stdout


def test_stale_part_files_of_a_killed_run_are_removed_and_live_ones_kept(checkpoints, images, tmp_path):
    import sys
    import textwrap

    out = tmp_path / "tags.jsonl"
    stale = tmp_path / f".{out.name}.0badc0de.part"
    stale.write_bytes(b"\0" * 4096)  # what a SIGKILLed run leaves: nobody holds it
    os.utime(stale, (1, 1))
    live = tmp_path / f".{out.name}.1234abcd.part"  # another run, still writing: it holds its lock
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(live)!r}, os.O_WRONLY | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.utime({str(live)!r}, (1, 1))
        print("locked", flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        unrelated = tmp_path / ".other.jsonl.0badc0de.part"
        unrelated.write_bytes(b"x")
        os.utime(unrelated, (1, 1))
        result = taglens("tag", images, *model_flags(checkpoints, "tag"), "-o", out, "-q")
        assert result.returncode == 0, result.stderr
        assert out.is_file() and not stale.exists() and live.exists() and unrelated.exists()
    finally:
        holder.communicate("")


# --- permissions ----------------------------------------------------------------------------------

@pytest.mark.parametrize("command, name", [("tag", "tags.jsonl"), ("analyze", "all.parquet"),
                                           ("embed", "emb.npy")])
def test_output_files_get_the_umask_s_permissions(checkpoints, images, tmp_path, command, name):
    out = tmp_path / name
    result = taglens(command, images, *model_flags(checkpoints, command), "-o", out, "-q",
                     preexec_fn=lambda: os.umask(0o027))
    assert result.returncode == 0, result.stderr
    written = [out] + ([out.with_suffix(".paths.txt")] if name.endswith(".npy") else [])
    assert [stat.S_IMODE(p.stat().st_mode) for p in written] == [0o640] * len(written)


def test_a_replaced_output_keeps_its_permissions(tmp_path):
    from taglens.io.atomic import AtomicFile

    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    out.chmod(0o604)
    with AtomicFile(out) as f:
        f.stream.write("new\n")
    assert out.read_text() == "new\n" and stat.S_IMODE(out.stat().st_mode) == 0o604


# --- CSV name lists -------------------------------------------------------------------------------

def test_csv_label_lists_read_back_exactly_whatever_the_labels_hold(checkpoints, images, tmp_path):
    labels = ["a bowl of fruit, on a table", 'a "quoted" dog', "a cat"]
    (tmp_path / "labels.txt").write_text("\n".join(labels) + "\n")
    out = tmp_path / "labels.csv"
    result = taglens("classify", images, "--model", checkpoints["siglip64"], "--labels-file", tmp_path / "labels.txt",
                     "-o", out, "-q")
    assert result.returncode == 0, result.stderr
    for row in read_csv(out):
        if row["error"]:
            assert row["labels"] == "" and row["label_scores"] == ""
            continue
        names = json.loads(row["labels"])
        assert sorted(names) == sorted(labels) and names == list(json.loads(row["label_scores"]))
