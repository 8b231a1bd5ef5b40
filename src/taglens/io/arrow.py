"""Records as Arrow tables: one schema for Parquet output, the Ray job's rows and library import.

Columns, in order (job columns only for the jobs that ran):

    path      string                                   (the key; ``text`` for text embeddings)
    error     string, null on success
    sha256, size, mtime, width, height                  (file facts, when ``facts=True``)
    tags      list<struct<tag: string, score: double>>  highest score first
    labels    list<struct<label: string, score: double>>
    nsfw      struct<label: string, score: double, scores: map<string, double>, flagged: bool>
    embedding fixed_size_list<float32>[dim]
    tag_error, classify_error, nsfw_error, embed_error   string, one per job column, null unless
                                                         that job failed on this image

A failed image has its ``error`` set and null job columns, so no row is ever dropped; an image
one job failed on keeps the other jobs' columns and has that job's ``<task>_error`` set (see
`taglens.records`). The schema metadata names each job's checkpoint (`job_metadata`): every
command that writes Parquet writes this schema, and ``taglens library import`` reads it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from taglens.records import TASK_FIELDS, TASK_OF_FIELD, LabelScore, NsfwResult, Record, TagScore, error_field

JOB_FIELDS = tuple(TASK_FIELDS.values())  # ("tags", "labels", "nsfw", "embedding")
FACT_FIELDS = ("sha256", "size", "mtime", "width", "height")

_TAGS = pa.list_(pa.struct([("tag", pa.string()), ("score", pa.float64())]))
_LABELS = pa.list_(pa.struct([("label", pa.string()), ("score", pa.float64())]))
_NSFW = pa.struct([("label", pa.string()), ("score", pa.float64()),
                   ("scores", pa.map_(pa.string(), pa.float64())), ("flagged", pa.bool_())])
_ERRORS = {error_field(task): task for task in TASK_FIELDS}  # column -> task
_FACTS = {"sha256": pa.string(), "size": pa.int64(), "mtime": pa.float64(), "width": pa.int32(), "height": pa.int32()}


def fields_for_tasks(tasks: Iterable[str]) -> tuple[str, ...]:
    """Record fields the tasks fill: tag -> tags, classify -> labels, nsfw -> nsfw, embed -> embedding."""
    wanted = {TASK_FIELDS[t] for t in tasks}
    return tuple(f for f in JOB_FIELDS if f in wanted)


def job_metadata(jobs: Iterable[Any]) -> dict[str, str]:
    """Schema metadata naming each job's checkpoint: ``taglens.<job>.model_id`` and ``.revision``
    (``<job>`` is the job's name: ``tag``, ``nsfw``, ``embed``, ``classify``, ``classify+embed``)."""
    jobs = list(jobs)
    metadata = {f"taglens.{job.name}.model_id": job.model_id for job in jobs}
    return metadata | {f"taglens.{job.name}.revision": job.revision for job in jobs}


def record_schema(fields: Sequence[str], dim: int | None = None, *, key: str = "path", facts: bool = False,
                  metadata: dict[str, str] | None = None) -> pa.Schema:
    """The schema for records carrying ``fields`` (a subset of `JOB_FIELDS`)."""
    columns: list[tuple[str, pa.DataType]] = [(key, pa.string()), ("error", pa.string())]
    if facts:
        columns += list(_FACTS.items())
    types = {"tags": _TAGS, "labels": _LABELS, "nsfw": _NSFW}
    for name in fields:
        if name == "embedding":
            if not dim:
                raise ValueError("an embedding column needs its dimension")
            columns.append(("embedding", pa.list_(pa.float32(), dim)))
        else:
            columns.append((name, types[name]))
    columns += [(error_field(TASK_OF_FIELD[name]), pa.string()) for name in fields]
    return pa.schema(columns, metadata={k: str(v) for k, v in (metadata or {}).items()})


def records_to_table(records: Sequence[Record], schema: pa.Schema) -> pa.Table:
    """Build one table from records (errors keep their row, with null job columns)."""
    names = schema.names
    key = names[0]
    data: dict[str, Any] = {key: [r.path for r in records], "error": [r.error for r in records]}
    for name in names[2:]:
        if name in _ERRORS:
            data[name] = [r.task_errors.get(_ERRORS[name]) for r in records]
        elif name in _FACTS:
            data[name] = [getattr(r, name) for r in records]
        elif name == "tags":
            data[name] = [None if r.tags is None else [{"tag": t.tag, "score": t.score} for t in r.tags] for r in records]
        elif name == "labels":
            data[name] = [None if r.labels is None else [{"label": x.label, "score": x.score} for x in r.labels]
                          for r in records]
        elif name == "nsfw":
            data[name] = [None if r.nsfw is None else {"label": r.nsfw.label, "score": r.nsfw.score,
                                                        "scores": list(r.nsfw.scores.items()), "flagged": r.nsfw.flagged}
                          for r in records]
    arrays = [pa.array(data[n], schema.field(n).type) for n in names if n != "embedding"]
    if "embedding" in names:
        arrays.insert(names.index("embedding"), _embedding_array(records, schema.field("embedding").type.list_size))
    return pa.Table.from_arrays(arrays, schema=schema)


def records_from_table(table: pa.Table) -> Iterator[Record]:
    """Records back from a table written by `records_to_table` (e.g. Parquet from the Ray job)."""
    names = table.schema.names
    key = "path" if "path" in names else names[0]
    embeddings = None
    if "embedding" in names:
        column = table.column("embedding").combine_chunks()
        dim = column.type.list_size
        flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        valid = np.asarray(column.is_valid())
        embeddings = (flat, dim, valid, np.cumsum(valid) - 1)
    rest = table.drop_columns(["embedding"]) if embeddings is not None else table
    for i, row in enumerate(rest.to_pylist()):
        fields: dict[str, Any] = {f: row[f] for f in FACT_FIELDS if f in row}
        if row.get("tags") is not None:
            fields["tags"] = tuple(TagScore(t["tag"], t["score"]) for t in row["tags"])
        if row.get("labels") is not None:
            fields["labels"] = tuple(LabelScore(x["label"], x["score"]) for x in row["labels"])
        if row.get("nsfw") is not None:
            n = row["nsfw"]
            fields["nsfw"] = NsfwResult(n["label"], n["score"], dict(n["scores"]), n["flagged"])
        if embeddings is not None and embeddings[2][i]:
            flat, dim, _, position = embeddings
            fields["embedding"] = flat[position[i] * dim:(position[i] + 1) * dim].copy()
        failed = {task: row[column] for column, task in _ERRORS.items() if row.get(column) is not None}
        yield Record(path=row[key], error=row["error"], task_errors=failed, **fields)


def _embedding_array(records: Sequence[Record], dim: int) -> pa.FixedSizeListArray:
    present = np.array([r.error is None and r.embedding is not None for r in records], bool)
    values = np.zeros((len(records), dim), np.float32)
    for i, r in enumerate(records):
        if present[i]:
            values[i] = r.embedding
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), dim,
                                             mask=pa.array(~present) if not present.all() else None)
