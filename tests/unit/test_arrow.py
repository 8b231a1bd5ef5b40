"""Records round-trip through Arrow/Parquet with every job's fields, errors keeping their rows and
a failed job's reason beside the other jobs' columns."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from taglens.io.arrow import fields_for_tasks, record_schema, records_from_table, records_to_table
from taglens.records import LabelScore, NsfwResult, Record, TagScore
from taglens.io.sinks import ParquetSink


def sample_records() -> list[Record]:
    v = np.linspace(-1, 1, 4, dtype=np.float32)
    return [
        Record(path="a.jpg", sha256="ab" * 32, size=10, mtime=1.5, width=4, height=3,
               tags=(TagScore("cat", 0.9), TagScore(":d", 0.41)), labels=(LabelScore("a dog", 0.25),),
               nsfw=NsfwResult("normal", 0.8, {"normal": 0.8, "nsfw": 0.2}, False), embedding=v),
        Record(path="bad.jpg", error="truncated image data", size=3),
        Record(path="b.png", sha256="cd" * 32, size=11, mtime=2.0, width=1, height=1, tags=(),
               labels=(), nsfw=NsfwResult("nsfw", 0.7, {"normal": 0.3, "nsfw": 0.7}, True), embedding=v[::-1].copy()),
        # the SigLIP job (classify+embed) failed on this one: tags and NSFW kept
        Record(path="c.png", sha256="ef" * 32, size=12, mtime=3.0, width=2, height=2, tags=(TagScore("cat", 0.5),),
               nsfw=NsfwResult("normal", 0.9, {"normal": 0.9, "nsfw": 0.1}, False),
               task_errors={"classify": "classify+embed failed (boom)", "embed": "classify+embed failed (boom)"}),
    ]


def test_round_trip_through_parquet(tmp_path):
    records = sample_records()
    fields = fields_for_tasks(["nsfw", "embed", "tag", "classify"])
    assert fields == ("tags", "labels", "nsfw", "embedding")
    sink = ParquetSink(tmp_path / "out.parquet", 4, fields=fields, facts=True, metadata={"k": "v"}, row_group_size=2)
    for record in records:
        sink.write(record)
    sink.commit()
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column_names == ["path", "error", "sha256", "size", "mtime", "width", "height",
                                  "tags", "labels", "nsfw", "embedding",
                                  "tag_error", "classify_error", "nsfw_error", "embed_error"]
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 4)
    partial = table.to_pylist()[3]
    assert partial["tags"] and partial["nsfw"] and partial["labels"] is None and partial["embedding"] is None
    assert partial["error"] is None and partial["tag_error"] is None and partial["nsfw_error"] is None
    assert partial["classify_error"] == partial["embed_error"] == "classify+embed failed (boom)"
    back = list(records_from_table(table))
    assert back == records  # embedding is compare=False in Record; checked below
    for a, b in zip(back, records):
        assert (a.embedding is None) == (b.embedding is None or b.error is not None)
        if b.embedding is not None and b.error is None:
            assert np.array_equal(a.embedding, b.embedding)


def test_only_the_fields_asked_for():
    schema = record_schema(("tags",))
    table = records_to_table([Record(path="x", tags=(TagScore("a", 0.5),))], schema)
    assert table.column_names == ["path", "error", "tags", "tag_error"]
    assert table.to_pylist() == [{"path": "x", "error": None, "tags": [{"tag": "a", "score": 0.5}], "tag_error": None}]
