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

import dataclasses
import types
import typing
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from taglens.io.names import printable
from taglens.records import (FACT_FIELDS, JOB_FIELDS, TASK_FIELDS, TASK_OF_FIELD, Part, Record, error_field,
                             field_types, json_value)

_SCALARS = {str: pa.string(), float: pa.float64(), int: pa.int64(), bool: pa.bool_()}
_NARROW = {"width": pa.int32(), "height": pa.int32()}  # pixel sides: 32 bits are plenty


def arrow_type(hint: Any) -> pa.DataType:
    """The Arrow type of a record field's Python type: scalars, ``X | None`` (nullable anyway),
    ``tuple[Part, ...]`` as a list, a `taglens.records.Part` as a struct of its fields,
    ``dict[str, float]`` as a map."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        return arrow_type(inner)
    if origin is tuple:
        return pa.list_(arrow_type(args[0]))
    if origin is dict:
        return pa.map_(arrow_type(args[0]), arrow_type(args[1]))
    if isinstance(hint, type) and issubclass(hint, Part):
        hints = typing.get_type_hints(hint)
        return pa.struct([(f.name, arrow_type(hints[f.name])) for f in dataclasses.fields(hint)])
    return _SCALARS[hint]


_TYPES = field_types()
_JOB_TYPES = {name: arrow_type(_TYPES[name]) for name in JOB_FIELDS if name != "embedding"}
_FACTS = {name: _NARROW.get(name) or arrow_type(_TYPES[name]) for name in FACT_FIELDS}
_ERRORS = {error_field(task): task for task in TASK_FIELDS}  # column -> task


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
    for name in fields:
        if name == "embedding":
            if not dim:
                raise ValueError("an embedding column needs its dimension")
            columns.append(("embedding", pa.list_(pa.float32(), dim)))
        else:
            columns.append((name, _JOB_TYPES[name]))
    columns += [(error_field(TASK_OF_FIELD[name]), pa.string()) for name in fields]
    return pa.schema(columns, metadata={k: str(v) for k, v in (metadata or {}).items()})


def _text(value: str | None) -> str | None:
    return None if value is None else printable(value)


def records_to_table(records: Sequence[Record], schema: pa.Schema) -> pa.Table:
    """Build one table from records (errors keep their row, with null job columns)."""
    names = schema.names
    key = names[0]
    data: dict[str, Any] = {key: [printable(r.path) for r in records], "error": [_text(r.error) for r in records]}
    for name in names[2:]:
        if name in _ERRORS:
            data[name] = [_text(r.task_errors.get(_ERRORS[name])) for r in records]
        elif name in _FACTS:
            data[name] = [getattr(r, name) for r in records]
        elif name in _JOB_TYPES:
            data[name] = [json_value(getattr(r, name)) for r in records]
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
        fields.update((name, _from_arrow(_TYPES[name], row[name])) for name in _JOB_TYPES if row.get(name) is not None)
        if embeddings is not None and embeddings[2][i]:
            flat, dim, _, position = embeddings
            fields["embedding"] = flat[position[i] * dim:(position[i] + 1) * dim].copy()
        failed = {task: row[column] for column, task in _ERRORS.items() if row.get(column) is not None}
        yield Record(path=row[key], error=row["error"], task_errors=failed, **fields)


def _from_arrow(hint: Any, value: Any) -> Any:
    """A job field's value from its Arrow row: parts from their structs, tuples from lists."""
    (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(inner) is tuple:
        part = typing.get_args(inner)[0]
        return tuple(part.from_json(item) for item in value)
    return inner.from_json(value)


def _embedding_array(records: Sequence[Record], dim: int) -> pa.FixedSizeListArray:
    present = np.array([r.error is None and r.embedding is not None for r in records], bool)
    values = np.zeros((len(records), dim), np.float32)
    for i, r in enumerate(records):
        if present[i]:
            values[i] = r.embedding
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), dim,
                                             mask=pa.array(~present) if not present.all() else None)
