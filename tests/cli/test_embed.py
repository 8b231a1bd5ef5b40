"""``taglens embed``: Parquet, .npy and JSONL outputs of image and text embeddings."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from taglens.cli import cli
from taglens.models.siglip import Embedder

from ..conftest import photo


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed-images")
    (root / "sub").mkdir()
    photo(64, 48, 1).save(root / "a.png")
    photo(40, 70, 2).convert("L").save(root / "b.png")
    photo(50, 50, 3).save(root / "sub" / "c.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return root


@pytest.fixture(scope="module")
def embedder(checkpoints):
    return Embedder.from_pretrained(checkpoints["siglip64"], device="cpu")


def invoke(*args: str):
    return CliRunner().invoke(cli, ["embed", "-q", *args], catch_exceptions=False)


def good_paths(folder) -> list[str]:
    return [str(folder / "a.png"), str(folder / "b.png"), str(folder / "sub" / "c.png")]


def test_parquet_holds_paths_fixed_size_embeddings_and_errors(checkpoints, folder, embedder, tmp_path):
    out = tmp_path / "emb.parquet"
    result = invoke(str(folder), "-m", str(checkpoints["siglip64"]), "-o", str(out))
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), embedder.dim)
    # the record schema of `taglens analyze -f parquet` (taglens.io.arrow), with its metadata
    assert table.column_names == ["path", "error", "sha256", "size", "mtime", "width", "height", "embedding",
                                  "embed_error"]
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert meta == {"taglens.embed.model_id": embedder.model_id, "taglens.embed.revision": embedder.revision}
    rows = table.to_pylist()
    assert [r["path"] for r in rows] == [str(folder / "a.png"), str(folder / "b.png"), str(folder / "broken.jpg"),
                                         str(folder / "sub" / "c.png")]
    broken = rows[2]
    assert broken["embedding"] is None and broken["error"]
    good = [r for r in rows if r["error"] is None]
    matrix = np.array([r["embedding"] for r in good], np.float32)
    assert np.abs(matrix - embedder.embed_images([r["path"] for r in good])).max() < 1e-6
    assert not list(tmp_path.glob(".*.part"))


def test_npy_rows_match_the_paths_file_and_transformers(checkpoints, folder, embedder, tmp_path):
    from transformers import AutoModel, AutoProcessor

    from taglens.io.decode import decode_image

    out = tmp_path / "emb.npy"
    result = invoke(str(folder), "-m", str(checkpoints["siglip64"]), "-o", str(out))
    assert result.exit_code == 0, result.output
    matrix = np.load(out)
    paths = (tmp_path / "emb.paths.txt").read_text().splitlines()
    assert paths == good_paths(folder)
    assert matrix.dtype == np.float32 and matrix.shape == (3, embedder.dim)
    assert np.abs(np.linalg.norm(matrix, axis=1) - 1).max() < 1e-6
    model = AutoModel.from_pretrained(checkpoints["siglip64"], use_safetensors=True).eval()
    pixels = AutoProcessor.from_pretrained(checkpoints["siglip64"])(
        images=[decode_image(p) for p in paths], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
    assert np.abs(matrix - expected.numpy()).max() < 1e-5


def test_jsonl_to_stdout(checkpoints, folder):
    result = invoke(str(folder / "a.png"), str(folder / "broken.jpg"), "-m", str(checkpoints["clip"]))
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records[0]["embedding"]) == 24 and "error" in records[1]
    assert np.linalg.norm(records[0]["embedding"]) == pytest.approx(1, abs=1e-6)


@pytest.mark.parametrize("suffix", [".npy", ".parquet", ".jsonl"])
def test_text_embeddings(checkpoints, embedder, tmp_path, suffix):
    texts = ["a red car", "a cat on a sofa"]
    out = tmp_path / f"texts{suffix}"
    result = invoke("--text", texts[0], "--text", texts[1], "-m", str(checkpoints["siglip64"]), "-o", str(out))
    assert result.exit_code == 0, result.output
    if suffix == ".npy":
        matrix = np.load(out)
    elif suffix == ".parquet":
        table = pq.read_table(out)
        assert table.column("text").to_pylist() == texts
        matrix = np.array(table.column("embedding").to_pylist(), np.float32)
    else:
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert [x["text"] for x in lines] == texts
        matrix = np.array([x["embedding"] for x in lines], np.float32)
    assert np.abs(matrix - embedder.embed_texts(texts)).max() < 1e-6


def test_usage_errors(checkpoints, folder, tmp_path):
    model = ["-m", str(checkpoints["siglip64"])]
    both = invoke(str(folder), "--text", "a cat", *model)
    assert both.exit_code == 2 and "not both" in both.output
    nothing = invoke(*model)
    assert nothing.exit_code == 2 and "nothing to embed" in nothing.output
    unknown = invoke(str(folder), *model, "-o", str(tmp_path / "emb.xyz"))
    assert unknown.exit_code == 2 and "cannot tell the format" in unknown.output
    binary_to_stdout = invoke(str(folder), *model, "-f", "npy")
    assert binary_to_stdout.exit_code == 2 and "needs --output" in binary_to_stdout.output
    forced = invoke(str(folder / "a.png"), *model, "-f", "npy", "-o", str(tmp_path / "vectors.bin"))
    assert forced.exit_code == 0 and np.load(tmp_path / "vectors.bin").shape[0] == 1
