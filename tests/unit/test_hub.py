"""Model resolution: local folders, the hub cache (offline), and the safetensors-only rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from taglens.errors import CheckpointError, ModelNotFoundError, UnsafeCheckpointError
from taglens.models.hub import resolve_model

SRC = str(Path(__file__).resolve().parents[2] / "src")


def test_local_folder_is_used_as_is(checkpoints):
    resolved = resolve_model(checkpoints["vit"])
    assert resolved.folder == checkpoints["vit"].resolve()
    assert resolved.model_id == str(checkpoints["vit"].resolve())
    assert resolved.revision.startswith("local-")


def test_local_revision_changes_when_weights_change(tmp_path, checkpoints):
    import shutil

    folder = shutil.copytree(checkpoints["vit"], tmp_path / "vit")
    before = resolve_model(folder).revision
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes() + b"")
    os.utime(weights, ns=(1, 1))
    assert resolve_model(folder).revision != before


def test_pickle_only_folder_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(UnsafeCheckpointError, match="pytorch_model.bin.*safetensors only"):
        resolve_model(tmp_path)


def test_a_folder_that_is_no_checkpoint_says_what_one_holds(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"is not a checkpoint folder: it has no \*.safetensors weights; "
                                              r"a checkpoint folder.* holds config.json and model.safetensors"):
        resolve_model(tmp_path)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"")
    with pytest.raises(CheckpointError, match="it has no config.json and no \\*.safetensors weights;.*top_tags.txt"):
        resolve_model(photos)


def test_missing_folder_path(tmp_path, monkeypatch):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model(str(tmp_path / "nope" / "deeper"))
    monkeypatch.chdir(tmp_path)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: pytest.fail("asked the hub"))
    with pytest.raises(ModelNotFoundError, match=r"model folder 'nosuchdir' does not exist \(a hub id has the form org/name"):
        resolve_model("nosuchdir")
    with pytest.raises(ModelNotFoundError, match="is a file"):
        (tmp_path / "f.txt").write_text("x")
        resolve_model(tmp_path / "f.txt")


def _resolve_in_subprocess(model: str, hf_home: Path, revision: str | None = None) -> subprocess.CompletedProcess:
    code = (
        "import sys, json\n"
        "from taglens.models.hub import resolve_model\n"
        "from taglens.errors import TaglensError\n"
        "try:\n"
        f"    r = resolve_model({model!r}, {revision!r})\n"
        "    print(json.dumps({'folder': str(r.folder), 'id': r.model_id, 'revision': r.revision}))\n"
        "except TaglensError as e:\n"
        "    print(type(e).__name__ + ': ' + str(e)); sys.exit(3)\n"
    )
    env = dict(os.environ, HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", PYTHONPATH=SRC)
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_offline_hub_id_not_in_cache_says_what_to_do(tmp_path):
    result = _resolve_in_subprocess("fancyfeast/joytag", tmp_path / "hf")
    assert result.returncode == 3, result.stderr
    message = result.stdout
    assert message.startswith("ModelNotFoundError")
    assert "'fancyfeast/joytag'" in message and "HF_HUB_OFFLINE" in message
    assert "/path/to/joytag" in message and "hf download fancyfeast/joytag" in message
    assert "--" not in message  # the same text answers every command's own flag, and the HTTP service


def fake_cache(hf_home: Path, repo: str, source: Path, commit: str) -> Path:
    """Lay out a snapshot exactly as huggingface_hub's cache stores it (blobs, refs, snapshots)."""
    root = hf_home / "hub" / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (root / "blobs").mkdir()
    for i, file in enumerate(sorted(source.iterdir())):
        blob = root / "blobs" / f"blob{i}"
        blob.write_bytes(file.read_bytes())
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    return snapshot


def test_hub_id_resolves_from_cache_with_hf_home_and_offline(tmp_path, checkpoints):
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = fake_cache(tmp_path / "hf", "acme/tiny-vit", checkpoints["vit"], commit)
    result = _resolve_in_subprocess("acme/tiny-vit", tmp_path / "hf")
    assert result.returncode == 0, result.stdout + result.stderr
    found = json.loads(result.stdout)
    assert Path(found["folder"]) == snapshot
    assert found["id"] == "acme/tiny-vit" and found["revision"] == commit
    pinned = _resolve_in_subprocess("acme/tiny-vit", tmp_path / "hf", revision=commit)
    assert json.loads(pinned.stdout)["revision"] == commit
    other = _resolve_in_subprocess("acme/tiny-vit", tmp_path / "hf", revision="f" * 40)
    assert other.returncode == 3 and "at revision" in other.stdout


def test_cached_hub_snapshot_with_only_pickles_is_refused(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "config.json").write_text("{}")
    (source / "pytorch_model.bin").write_bytes(b"pickle")
    fake_cache(tmp_path / "hf", "acme/pickled", source, "a" * 40)
    result = _resolve_in_subprocess("acme/pickled", tmp_path / "hf")
    assert result.returncode == 3
    assert "UnsafeCheckpointError" in result.stdout and "acme/pickled" in result.stdout
