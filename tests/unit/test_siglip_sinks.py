"""The embedding sinks: Parquet row groups and nulls, .npy with its paths file, and nothing left
behind when a run is discarded."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from taglens.records import Record
from taglens.io.sinks import NpySink, ParquetSink


def vectors(n: int, dim: int = 5) -> np.ndarray:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_parquet_row_groups_nulls_and_metadata(tmp_path):
    out = tmp_path / "e.parquet"
    sink = ParquetSink(out, 5, metadata={"taglens.model_id": "m"}, row_group_size=3)
    data = vectors(7)
    for i, v in enumerate(data):
        sink.write(Record(path=f"{i}.jpg", embedding=v) if i != 4 else Record(path="4.jpg", error="bad"))
    assert not out.exists()
    sink.close()
    sink.commit()
    meta = pq.ParquetFile(out).metadata
    assert meta.num_row_groups == 3 and meta.num_rows == 7
    table = pq.read_table(out)
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 5)
    assert table.schema.metadata[b"taglens.model_id"] == b"m"
    rows = table.to_pylist()
    assert rows[4] == {"path": "4.jpg", "embedding": None, "error": "bad", "embed_error": None}
    for i in (0, 3, 6):
        assert rows[i]["error"] is None and np.array_equal(np.array(rows[i]["embedding"], np.float32), data[i])
    assert [p.name for p in tmp_path.iterdir()] == ["e.parquet"]


def test_discarded_outputs_leave_nothing(tmp_path):
    parquet = ParquetSink(tmp_path / "e.parquet", 5)
    parquet.write(Record(path="a.jpg", embedding=vectors(1)[0]))
    parquet.discard()
    npy = NpySink(tmp_path / "e.npy", 5)
    npy.write(Record(path="a.jpg", embedding=vectors(1)[0]))
    npy.discard()
    assert list(tmp_path.iterdir()) == []


def test_npy_keeps_embedded_rows_and_their_paths(tmp_path):
    sink = NpySink(tmp_path / "e.npy", 5)
    data = vectors(3)
    sink.write(Record(path="a.jpg", embedding=data[0]))
    sink.write(Record(path="bad.jpg", error="truncated image data"))
    sink.write(Record(path="c d.jpg", embedding=data[2]))
    sink.close()
    sink.commit()
    assert np.array_equal(np.load(tmp_path / "e.npy"), data[[0, 2]])
    assert (tmp_path / "e.paths.txt").read_text().splitlines() == ["a.jpg", "c d.jpg"]
