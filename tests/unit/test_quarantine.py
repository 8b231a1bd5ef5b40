"""The quarantine: destinations, name clashes, copies, undo, and crashes at every step (raised
in-process here, real SIGKILLs of a subprocess below). After each, every original file exists
exactly once with its original bytes (sha256 of every file in both trees)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import taglens.quarantine as quarantine
import taglens.quarantine.transfers as transfer
from taglens.errors import QuarantineError
from taglens.quarantine import JOURNAL_NAME, InputRoots, Quarantine, undo

from ..trees import assert_each_file_once, journal_lines, moved_map, snapshot, write_images
from .quarantine_child import Crash, StepCounter

SRC = str(Path(__file__).resolve().parents[2] / "src")
CHILD = str(Path(__file__).with_name("quarantine_child.py"))
NAMES = ["a.png", "sub/b.png", "sub/deep/c.png", "d.png"]


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def plan(source: Path, names=NAMES) -> list[list[str]]:
    """[path, relative, sha256] for each file that still exists, as a run would put them."""
    roots = InputRoots([str(source)])
    return [[str(source / n), roots.relative(str(source / n)), sha(source / n)] for n in names
            if (source / n).exists()]


def put_all(folder: Path, mode: str, files) -> list[quarantine.Outcome]:
    """One run: open the quarantine (resolving what an earlier run left), then put each file.
    ``files`` may be a source folder, planned after the opening as a real run enumerates."""
    with Quarantine(folder, mode=mode) as q:
        if isinstance(files, Path):
            files = plan(files)
        return [q.put(p, rel, sha256=digest) for p, rel, digest in files]


# --- where files go -------------------------------------------------------------------------


def test_input_roots_for_folders_files_and_overlaps(tmp_path):
    (tmp_path / "photos/sub").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    roots = InputRoots([str(tmp_path / "photos") + "/", str(tmp_path / "photos/sub"), "-",
                        str(tmp_path / "other/x.jpg")])
    assert roots.relative(str(tmp_path / "photos/a/b.jpg")) == os.path.join("a", "b.jpg")
    assert roots.relative(str(tmp_path / "photos/sub/c.jpg")) == "c.jpg"  # the deepest folder wins
    assert roots.relative(str(tmp_path / "other/x.jpg")) == "x.jpg"  # a file on its own: its name
    assert roots.relative(str(tmp_path / "photosX/y.jpg")) == "y.jpg"  # a prefix is not a parent


def test_nested_folders_and_name_clashes(tmp_path):
    source, q = tmp_path / "photos", tmp_path / "q"
    original = write_images(source, NAMES)
    before_q = write_images(q, ["a.png", "a-1.png", "sub/b.png"])  # taken names in the quarantine
    outcomes = put_all(q, "move", source)
    assert [o.status for o in outcomes] == ["moved"] * 4
    assert [os.path.relpath(o.destination, q) for o in outcomes] == [
        "a-2.png", os.path.join("sub", "b-1.png"), os.path.join("sub", "deep", "c.png"), "d.png"]
    assert snapshot(source) == {}
    after = snapshot(q)
    assert {k: after[k] for k in before_q} == before_q  # nothing taken was overwritten
    assert {after["a-2.png"], after["sub/b-1.png"], after["sub/deep/c.png"], after["d.png"]} == set(original.values())
    lines = journal_lines(q / JOURNAL_NAME)
    intents = [x for x in lines if x["op"] == "intent"]
    assert [x["dst"] for x in intents] == [o.destination for o in outcomes]  # the free names are recorded
    assert all(x["sha256"] == original[os.path.relpath(x["src"], source)] for x in intents)


def test_copy_keeps_originals_and_is_not_repeated(tmp_path):
    source, q = tmp_path / "photos", tmp_path / "q"
    original = write_images(source, NAMES)
    assert [o.status for o in put_all(q, "copy", source)] == ["copied"] * 4
    again = put_all(q, "copy", source)  # a second run over the same files
    assert [o.status for o in again] == ["already copied"] * 4
    assert snapshot(source) == original
    assert sorted(snapshot(q).values()) == sorted(original.values())
    assert_each_file_once(original, source, q, copies=True)


def test_undo_puts_every_file_back_and_never_overwrites(tmp_path):
    source, q = tmp_path / "photos", tmp_path / "q"
    original = write_images(source, NAMES)
    put_all(q, "move", source)
    intruder = write_images(source, ["d.png"], size=50)  # a new file now sits at one original place
    outcomes = undo(q / JOURNAL_NAME)
    statuses = {os.path.relpath(o.destination, source): o.status for o in outcomes}
    assert statuses == {"a.png": "restored", "sub/b.png": "restored", "sub/deep/c.png": "restored", "d.png": "failed"}
    assert "taken" in next(o.reason for o in outcomes if o.failed)
    assert sha(source / "d.png") == intruder["d.png"]  # the newcomer is untouched
    assert snapshot(q) == {"d.png": original["d.png"]}  # the refused file stays quarantined
    assert not (q / "sub").exists()  # folders emptied by the undo are removed
    (source / "d.png").unlink()  # once the place is free, undo again finishes the job
    assert [o.status for o in undo(q / JOURNAL_NAME)] == ["restored"]
    assert snapshot(source) == original and snapshot(q) == {}
    assert undo(q / JOURNAL_NAME) == []


def test_undo_of_copies_removes_only_identical_copies(tmp_path):
    source, q = tmp_path / "photos", tmp_path / "q"
    original = write_images(source, NAMES)
    outcomes = put_all(q, "copy", source)
    (source / "a.png").unlink()  # an original the user deleted: its copy must survive
    Path(outcomes[1].destination).write_bytes(b"edited")  # a copy the user changed: kept too
    result = {os.path.relpath(o.destination, source): (o.status, o.reason) for o in undo(q / JOURNAL_NAME)}
    assert result["sub/deep/c.png"][0] == result["d.png"][0] == "copy removed"
    assert result["a.png"] == ("failed", "the original is gone; the copy is kept")
    assert result["sub/b.png"][0] == "failed" and "differs" in result["sub/b.png"][1]
    assert snapshot(q) == {"a.png": original["a.png"], "sub/b.png": hashlib.sha256(b"edited").hexdigest()}


def test_symlinks_are_not_moved_and_missing_files_are_reported(tmp_path):
    source, q = tmp_path / "photos", tmp_path / "q"
    write_images(source, ["a.png"])
    (source / "link.png").symlink_to(source / "a.png")
    with Quarantine(q) as qq:
        link = qq.put(str(source / "link.png"), "link.png")
        gone = qq.put(str(source / "nope.png"), "nope.png")
        twice = [qq.put(str(source / "a.png"), "a.png"), qq.put(str(source / "a.png"), "a.png")]
    assert link.status == "failed" and "symbolic link" in link.reason
    assert gone.status == "failed" and gone.reason == "no longer exists"
    assert [o.status for o in twice] == ["moved", "skipped"]
    assert (source / "link.png").is_symlink()


def test_a_file_changed_since_scoring_is_left_in_place(tmp_path, monkeypatch):
    source, q = tmp_path / "photos", tmp_path / "q"
    original = write_images(source, ["a.png"])
    force_cross_device(monkeypatch)
    [outcome] = put_all(q, "move", [[str(source / "a.png"), "a.png", "0" * 64]])
    assert outcome.status == "failed" and "changed since it was scored" in outcome.reason
    assert snapshot(source) == original and snapshot(q) == {}


@pytest.mark.parametrize("cross_device", [False, True])
def test_a_file_swapped_after_scoring_is_not_moved(tmp_path, monkeypatch, cross_device):
    """The replacement (never scored) stays where it is, on the same file system as across one."""
    source, q = tmp_path / "photos", tmp_path / "q"
    write_images(source, ["a.png", "b.png"])
    [scored] = plan(source, ["a.png"])
    os.replace(source / "b.png", source / "a.png")  # swapped by something else after scoring
    swapped = snapshot(source)
    if cross_device:
        force_cross_device(monkeypatch)
    [outcome] = put_all(q, "move", [scored])
    assert outcome.status == "failed" and "changed since it was scored" in outcome.reason
    assert snapshot(source) == swapped and snapshot(q) == {}


def test_a_swap_between_the_check_and_the_rename_is_moved_back(tmp_path, monkeypatch):
    source, q = tmp_path / "photos", tmp_path / "q"
    write_images(source, ["a.png", "b.png"])
    [scored] = plan(source, ["a.png"])
    real_rename = transfer.rename_noreplace

    def rename_noreplace(src, dst):
        if src == str(source / "a.png") and (source / "b.png").exists():
            os.replace(source / "b.png", source / "a.png")  # the race: after the hash, before the rename
        return real_rename(src, dst)

    monkeypatch.setattr(transfer, "rename_noreplace", rename_noreplace)
    [outcome] = put_all(q, "move", [scored])
    assert outcome.status == "failed" and "replaced after it was scored" in outcome.reason, outcome
    assert sha(source / "a.png") != scored[2] and snapshot(q) == {}
    [intent] = [line for line in journal_lines(q / JOURNAL_NAME) if line["op"] == "intent"]
    assert intent["sha256"] == scored[2]


def test_an_undeletable_original_is_not_left_in_two_places(tmp_path, monkeypatch):
    source, q = tmp_path / "photos", tmp_path / "q"
    original = write_images(source, ["a.png"])
    force_cross_device(monkeypatch)
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        if os.fspath(path) == str(source / "a.png"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    [outcome] = put_all(q, "move", plan(source, ["a.png"]))
    assert outcome.status == "failed" and "could not delete the original" in outcome.reason
    assert snapshot(source) == original and snapshot(q) == {}


def test_journal_is_locked_torn_lines_are_cut_and_garbage_refused(tmp_path):
    source, q = tmp_path / "photos", tmp_path / "q"
    write_images(source, ["a.png", "b.png"])
    with Quarantine(q):
        with pytest.raises(QuarantineError, match="in use"):
            Quarantine(q)
    journal = q / JOURNAL_NAME
    put_all(q, "move", plan(source, ["a.png"]))
    with open(journal, "a") as f:
        f.write('{"op": "intent", "id": 9, "mode": "mo')  # power lost mid-line
    outcomes = put_all(q, "move", plan(source, ["b.png"]))
    assert [o.status for o in outcomes] == ["moved"]
    assert all(line["op"] != "intent" or line["id"] != 9 for line in journal_lines(journal))
    with open(journal, "a") as f:
        f.write("not json\n")
    with pytest.raises(QuarantineError, match="not a valid journal line"):
        Quarantine(q)
    with pytest.raises(QuarantineError, match="does not exist"):
        undo(tmp_path / "missing.jsonl")
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\nno newline at the end")
    with pytest.raises(QuarantineError, match="not a taglens quarantine journal"):
        undo(notes)
    assert notes.read_text() == "my notes\nno newline at the end"  # never cut or written


def test_rename_noreplace_refuses_to_replace(tmp_path):
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    with pytest.raises(FileExistsError):
        transfer.rename_noreplace(str(tmp_path / "a"), str(tmp_path / "b"))
    assert (tmp_path / "b").read_text() == "b"
    transfer.rename_noreplace(str(tmp_path / "a"), str(tmp_path / "c"))
    assert (tmp_path / "c").read_text() == "a" and not (tmp_path / "a").exists()


def test_real_cross_device_move_and_undo(tmp_path):
    """/dev/shm is a different filesystem here: the copy + fsync + verify + delete path runs
    for real (elsewhere the same path is forced by the crash tests below)."""
    source = tmp_path / "photos"
    original = write_images(source, NAMES)
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.stat(shm).st_dev != os.stat(tmp_path).st_dev else tmp_path
    with tempfile.TemporaryDirectory(dir=base) as other:
        q = Path(other) / "q"
        assert [o.status for o in put_all(q, "move", source)] == ["moved"] * 4
        assert_each_file_once(original, source, q)
        assert snapshot(source) == {}
        assert all(o.status == "restored" for o in undo(q / JOURNAL_NAME))
        assert snapshot(source) == original and snapshot(q) == {}


# --- crashes at every step ------------------------------------------------------------------


def force_cross_device(monkeypatch):
    """Make every rename between folders fail with EXDEV, as between two filesystems."""
    real = transfer.rename_noreplace

    def rename_noreplace(src, dst):
        if not os.path.basename(src).startswith(".taglens-"):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), src, None, dst)
        return real(src, dst)

    monkeypatch.setattr(transfer, "rename_noreplace", rename_noreplace)


def crash(what: str) -> None:
    raise Crash(what)


def crash_scenario(tmp_path: Path, mode: str, force_copy: bool, crash_at: int | None) -> int:
    """Quarantine four nested files (one name clash) crashing at step ``crash_at``; then resume
    as a second run would, check, undo, check. Returns the number of steps of a full run."""
    source, q = tmp_path / "photos", tmp_path / "q"
    original = write_images(source, NAMES)
    before_q = write_images(q, ["a.png"], size=60)
    counter = StepCounter(crash_at, crash)
    with pytest.MonkeyPatch.context() as mp:
        counter.install(mp.setattr, force_copy=force_copy)
        try:
            put_all(q, mode, source)
        except Crash:
            pass
        else:
            assert crash_at is None or crash_at > counter.steps
    # Nothing is lost at the moment of the crash: every original's bytes are somewhere.
    present = set(snapshot(source).values()) | set(snapshot(q).values())
    assert set(original.values()) <= present
    # Reopening resolves the interrupted entry; a resumed run takes what is left.
    with pytest.MonkeyPatch.context() as mp:
        if force_copy:
            force_cross_device(mp)
        with Quarantine(q, mode=mode):
            pass
        check(original, source, q, before_q, mode)
        outcomes = put_all(q, mode, source)
        assert not [o for o in outcomes if o.failed]
        check(original, source, q, before_q, mode)
        if mode == "move":
            assert snapshot(source) == {}
        assert [o for o in undo(q / JOURNAL_NAME) if o.failed] == []
    assert snapshot(source) == original
    assert snapshot(q) == before_q
    return counter.steps


def check(original, source, q, before_q, mode):
    assert_each_file_once(original, source, q, copies=mode == "copy", before_q=before_q)
    moved = moved_map(q / JOURNAL_NAME)
    for src, dst in moved.items():  # the journal knows where every quarantined file is
        assert Path(dst).exists()
        if mode == "move":
            assert not Path(src).exists()


@pytest.mark.parametrize("mode,force_copy", [("move", False), ("move", True), ("copy", False)],
                         ids=["move-rename", "move-cross-device", "copy"])
def test_a_crash_at_any_step_loses_nothing(tmp_path, mode, force_copy):
    steps = crash_scenario(tmp_path / "full", mode, force_copy, None)
    assert steps > 10
    for k in range(1, steps + 1):
        crash_scenario(tmp_path / f"crash{k}", mode, force_copy, k)


@pytest.mark.parametrize("force_copy", [False, True], ids=["rename", "cross-device"])
def test_sigkill_at_many_steps_then_resume_and_undo(tmp_path, force_copy):
    """A real SIGKILL of a child process at steps spread over a run."""
    probe = run_child(tmp_path / "probe", force_copy, None)
    assert probe.returncode == 0, probe.stderr
    steps = int(probe.stdout)
    points = sorted(set(range(2, steps + 1, max(1, steps // 8))) | {steps})
    for k in points:
        root = tmp_path / f"kill{k}"
        result = run_child(root, force_copy, k)
        assert result.returncode == -9, (k, result.stderr)
        source, q = root / "photos", root / "q"
        original = json.loads((root / "original.json").read_text())
        before_q = {"a.png": json.loads((root / "before_q.json").read_text())["a.png"]}
        present = set(snapshot(source).values()) | set(snapshot(q).values())
        assert set(original.values()) <= present
        with pytest.MonkeyPatch.context() as mp:
            if force_copy:
                force_cross_device(mp)
            assert not [o for o in put_all(q, "move", source) if o.failed]
            check(original, source, q, before_q, "move")
            assert snapshot(source) == {}
            assert [o for o in undo(q / JOURNAL_NAME) if o.failed] == []
        assert snapshot(source) == original and snapshot(q) == before_q


def run_child(root: Path, force_copy: bool, kill_at: int | None) -> subprocess.CompletedProcess:
    source, q = root / "photos", root / "q"
    original = write_images(source, NAMES)
    before_q = write_images(q, ["a.png"], size=60)
    (root / "original.json").write_text(json.dumps(original))
    (root / "before_q.json").write_text(json.dumps(before_q))
    spec = {"folder": str(q), "mode": "move", "files": plan(source), "kill_at": kill_at, "force_copy": force_copy}
    (root / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, CHILD, str(root / "spec.json")], capture_output=True, text=True,
                          env=env, timeout=60)


def test_a_stranger_at_the_destination_after_a_crash_is_kept_beside_the_original(tmp_path):
    """Crash just after the intent is journaled; something else then writes a different file
    at the chosen destination. Recovery must keep both and say why."""
    source, q2 = tmp_path / "photos", tmp_path / "q2"
    original = write_images(source, ["a.png"])
    with pytest.MonkeyPatch.context() as mp:
        StepCounter(1, lambda what: crash(what) if what == "rename" else None).install(mp.setattr)
        with pytest.raises(Crash):
            put_all(q2, "move", source)
    [intent] = [x for x in journal_lines(q2 / JOURNAL_NAME) if x["op"] == "intent"]
    Path(intent["dst"]).write_bytes(b"a stranger")
    with Quarantine(q2) as qq:
        [outcome] = qq.recovered
    assert outcome.status == "failed" and "different contents" in outcome.reason
    assert snapshot(source) == original
    assert snapshot(q2) == {"a.png": hashlib.sha256(b"a stranger").hexdigest()}
