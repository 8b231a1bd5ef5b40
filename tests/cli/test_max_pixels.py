"""``--max-pixels`` through the installed entry point: taglens's limit is the only one, above or
below Pillow's own (89.5 MP, refusing beyond 2x), with taglens's message and no
DecompressionBombWarning lines."""

from __future__ import annotations

import json

from ..unit.test_images import png_bytes
from .installed import run_taglens


def records(path) -> dict[str, dict]:
    return {json.loads(line)["path"].rsplit("/", 1)[-1]: json.loads(line) for line in path.read_text().splitlines()}


def test_a_raised_limit_is_the_only_limit(checkpoints, tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "beyond.png").write_bytes(png_bytes(14000, 14000))           # 196 MP: Pillow refuses it
    (folder / "warned.png").write_bytes(png_bytes(11000, 11000, rows=1))   # 121 MP: Pillow warns about it
    out = tmp_path / "out.jsonl"
    result = run_taglens("tag", folder, "--model", checkpoints["joytag"], "--max-pixels", 150_000_000, "-o", out)
    assert result.returncode == 0, result.stderr
    assert "DecompressionBombWarning" not in result.stderr and "decompression bomb" not in result.stderr
    found = records(out)
    assert found["beyond.png"]["error"] == "too large: 14000x14000 = 196000000 pixels, limit 150000000"
    assert found["warned.png"].get("error") is None and found["warned.png"]["tags"]


def test_a_lowered_limit_says_so_in_taglens_words(checkpoints, tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes(2000, 2000, rows=2000))
    out = tmp_path / "out.jsonl"
    result = run_taglens("tag", tmp_path / "a.png", "--model", checkpoints["joytag"], "--max-pixels", 1_000_000,
                         "-o", out)
    assert result.returncode == 1  # every image failed
    assert records(out)["a.png"]["error"] == "too large: 2000x2000 = 4000000 pixels, limit 1000000"
    assert "Traceback" not in result.stderr
