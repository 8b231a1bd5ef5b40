"""File-tree helpers for the quarantine tests: build trees of distinct images, snapshot them as
{relative path: sha256}, and check that every original file exists exactly once, unchanged."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

from .conftest import photo


def write_images(root: Path, names: list[str], *, size: int = 24) -> dict[str, str]:
    """Write a distinct PNG at each relative name; return the snapshot of ``root``."""
    for i, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        photo(size + i % 7, size + i % 5, seed=100 + i).save(path, format="PNG")
    return snapshot(root)


def snapshot(root: Path, *, skip_journal: bool = True) -> dict[str, str]:
    """{path relative to root: sha256} of every file below ``root`` (hidden files included)."""
    out = {}
    if not root.exists():
        return out
    for dirpath, _, files in os.walk(root):
        for name in files:
            if skip_journal and name.endswith("journal.jsonl"):
                continue
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def journal_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def moved_map(journal: Path) -> dict[str, str]:
    """{absolute source: absolute destination} of every entry the journal says is done and not undone."""
    state: dict[int, str] = {}
    intents: dict[int, dict] = {}
    for line in journal_lines(journal):
        if line["op"] == "intent":
            intents[line["id"]] = line
            state[line["id"]] = "pending"
        elif line["op"] in ("done", "failed", "undone"):
            state[line["id"]] = line["op"]
        elif line["op"] == "undo-failed":
            state[line["id"]] = "done"
    return {intents[i]["src"]: intents[i]["dst"] for i, s in state.items() if s == "done"}


def assert_each_file_once(original: dict[str, str], source: Path, quarantine: Path, *, copies: bool = False,
                          before_q: dict[str, str] | None = None) -> None:
    """Every original file is in exactly one place with its original bytes: at its own path,
    or (moved) at a place inside the quarantine. With ``copies``, every original stays in place
    and the quarantine holds only exact copies of originals. ``before_q`` are files that were in
    the quarantine before and must still be there, unchanged. No stray temporary files."""
    now_src = snapshot(source)
    now_q = snapshot(quarantine)
    for rel, digest in (before_q or {}).items():
        assert now_q.pop(rel, None) == digest, f"{rel}, in the quarantine before, was changed"
    assert not [p for p in list(now_src) + list(now_q) if ".taglens-" in p], "temporary file left behind"
    for rel, digest in now_src.items():
        assert original.get(rel) == digest, f"{rel} in the source tree is not an original file"
    if copies:
        assert now_src == original
        assert set(now_q.values()) <= set(original.values())
        assert len(set(now_q.values())) == len(now_q), "a file was copied twice"
        return
    missing = {rel: d for rel, d in original.items() if rel not in now_src}
    # Each missing original is in the quarantine exactly once, and nothing else is there.
    assert Counter(now_q.values()) == Counter(missing.values()), (missing, now_q)
