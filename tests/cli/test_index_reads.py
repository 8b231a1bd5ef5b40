"""`taglens index` reads each new or changed file once: counted in the installed entry point's
own process by an audit hook (every ``open`` of a file under the photo folder is logged)."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

from ..conftest import photo
from .entry import taglens

HOOK = '''
import os, sys
_root = os.environ["TAGLENS_TEST_READ_ROOT"]
_log = os.open(os.environ["TAGLENS_TEST_READ_LOG"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

def _hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes)):
        path = os.fsdecode(args[0])
        if path.startswith(_root) and not os.path.isdir(path):
            os.write(_log, os.fsencode(path) + b"\\n")

sys.addaudithook(_hook)
'''


def opens(log: Path) -> Counter:
    return Counter(log.read_bytes().decode("utf-8", "surrogateescape").splitlines()) if log.exists() else Counter()


def index(photos: Path, library: Path, checkpoints, hook: Path, log: Path):
    env = dict(os.environ, PYTHONPATH=str(hook), TAGLENS_TEST_READ_ROOT=str(photos), TAGLENS_TEST_READ_LOG=str(log),
               HF_HUB_OFFLINE="1")
    result = taglens("index", photos, "--library", library, "--tagger", checkpoints["joytag"], "--siglip",
                     checkpoints["siglip16"], "--nsfw-model", checkpoints["vit"], "--device", "cpu", "--workers", "2",
                     env=env)
    assert result.returncode == 0, result.stderr
    return result


def test_index_reads_each_new_or_changed_file_once(tmp_path, checkpoints):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(5):
        photo(64 + 8 * i, 48, seed=i).save(photos / f"p{i}.png")
    shutil.copy(photos / "p0.png", photos / "z-copy.png")  # the same bytes twice: computed once
    library = tmp_path / "lib"

    first = index(photos, library, checkpoints, hook, tmp_path / "first.log")
    read = opens(tmp_path / "first.log")
    assert read == Counter({str(p): 1 for p in photos.iterdir()}), read
    assert "6 files: 0 unchanged, 1 reused, 5 computed, 0 errors" in first.stderr

    os.rename(photos / "p1.png", photos / "renamed.png")  # known bytes under a new name
    photo(200, 50, seed=9).save(photos / "p2.png")  # changed bytes
    second = index(photos, library, checkpoints, hook, tmp_path / "second.log")
    read = opens(tmp_path / "second.log")
    assert read == Counter({str(photos / "renamed.png"): 1, str(photos / "p2.png"): 1}), read
    assert "6 files: 4 unchanged, 1 reused, 1 computed, 0 errors, 1 removed" in second.stderr
