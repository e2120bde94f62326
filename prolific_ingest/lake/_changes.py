"""Which rows of a reload are new, changed or held, and the predicates that name them.

A reload into an occupied owner partition compares the export's rows with the table's
rows under the same first-key values (null-safe, every column but the keys, the partition
columns and ``export_id``); :mod:`._writer` turns the result into one commit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import DeltaTable

from ._keyhash import hash_keys, holds_any, unique_hashes
from ._keyindex import Entry, KeyIndex, read_entry

__all__ = [
    "changed_rows",
    "first_key_filter",
    "group_rows",
    "held_rows",
    "is_in",
    "key_predicate",
    "key_strings",
    "literal",
    "new_rows",
    "unique",
]

#: Literals per ``IN (...)`` list of a predicate (lists are joined by ``OR``).
IN_CHUNK = 500


def key_strings(data: pa.RecordBatch | pa.Table, keys: Sequence[str]) -> pa.Array:
    """One string per row that is equal exactly when the (null-safe) keys are equal."""
    parts = []
    for key in keys:
        col = data.column(key)
        text = col if pa.types.is_string(col.type) else pc.cast(col, pa.string())
        parts.append(pc.fill_null(pc.binary_join_element_wise("v", text, ""), "n"))
    joined = parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, "\x1f")
    if isinstance(joined, pa.ChunkedArray):
        joined = joined.combine_chunks()
    return joined.cast(pa.string())


def literal(value: Any) -> str:
    """``value`` as a SQL literal of a delta-rs predicate (``'`` doubled in strings)."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    msg = f"cannot name a key value of type {type(value).__name__} in a predicate"
    raise TypeError(msg)


def key_predicate(owner: str, owner_id: str, key: str, values: Sequence[Any]) -> str:
    """``<owner> = '<id>' AND (<key> IN (...) OR ... [OR <key> IS NULL])``."""
    present = sorted({v for v in values if v is not None})
    terms = [
        f"{key} IN ({', '.join(literal(v) for v in present[i : i + IN_CHUNK])})"
        for i in range(0, len(present), IN_CHUNK)
    ]
    if any(v is None for v in values):
        terms.append(f"{key} IS NULL")
    return f"{owner} = {literal(owner_id)} AND ({' OR '.join(terms)})"


def first_key_filter(owner: str, owner_id: str, key: str, values: pa.Array) -> ds.Expression:
    """A dataset filter: the owner partition, rows whose ``key`` is one of ``values``."""
    where = ds.field(key).isin(pc.drop_null(pc.unique(values)))
    if values.null_count:
        where = where | ds.field(key).is_null()
    return (ds.field(owner) == owner_id) & where


def is_in(values: pa.Array | pa.ChunkedArray, value_set: pa.Array) -> pa.Array:
    """Null-safe membership: a null is in ``value_set`` when it holds a null."""
    hit = pc.is_in(values, value_set=value_set, skip_nulls=False)
    return hit.combine_chunks() if isinstance(hit, pa.ChunkedArray) else hit


def differs(left: pa.Array | pa.ChunkedArray, right: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Row-wise, null-safe ``left IS DISTINCT FROM right`` (two NaNs are not distinct)."""
    if right.type != left.type:
        right = pc.cast(right, left.type)
    nulls = pc.not_equal(pc.is_null(left), pc.is_null(right))
    values = pc.fill_null(pc.not_equal(left, right), False)
    if pa.types.is_floating(left.type):
        both_nan = pc.fill_null(pc.and_(pc.is_nan(left), pc.is_nan(right)), False)
        values = pc.and_not(values, both_nan)
    out = pc.or_(nulls, values)
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


def changed_rows(
    incoming: pa.Table, current: pa.Table, keys: Sequence[str], compared: Sequence[str]
) -> pa.Array:
    """For each ``incoming`` row (all held): whether a compared column differs from the table's.

    A column the table does not have yet (schema merge) compares as null there.
    """
    where = pc.index_in(key_strings(incoming, keys), value_set=key_strings(current, keys))
    aligned = current.take(where)
    changed = pa.array([False] * incoming.num_rows, pa.bool_())
    for col in compared:
        if col not in incoming.column_names:
            continue
        ours = incoming.column(col)
        theirs = (
            aligned.column(col)
            if col in aligned.column_names
            else pa.nulls(incoming.num_rows, ours.type)
        )
        changed = pc.or_(changed, differs(ours, theirs))
    return changed


def held_rows(
    table: DeltaTable,
    keys: Sequence[str],
    where: ds.Expression,
    values: pa.Array,
    index: KeyIndex | None = None,
    counted: str | None = None,
) -> tuple[pa.Table, list[Entry]]:
    """The table's rows matching ``where`` (an owner partition and the first keys ``values``).

    Reads every column of only the files that can hold one of ``values``: the files the
    key index (:mod:`._keyindex`) names with a matching hash, and the files it does not
    name whose first-key column holds a match (read in full, they are returned as new
    entries for the index). Memory follows the source, and the cost of an incremental
    window follows the files its overlap lives in, not the partition. Scans
    single-threaded (see :func:`._storage.scan`).
    """
    dataset = table.to_pyarrow_dataset()
    wanted = unique_hashes([hash_keys(values)])
    hits = index.holding(wanted) if index is not None else set()
    holding, entries = [], []
    for fragment in dataset.get_fragments(filter=where):
        if index is not None and index.covers(fragment.path):
            if fragment.path in hits:
                holding.append(fragment)
            continue
        entry = read_entry(dataset, fragment, keys[0], counted)
        entries.append(entry)
        if holds_any(entry.hashes, wanted):
            holding.append(fragment)
    subset = ds.FileSystemDataset(holding, dataset.schema, dataset.format, dataset.filesystem)
    return subset.to_table(filter=where, use_threads=False), entries


def unique(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    out = pc.unique(values)
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


def new_rows(
    stream: pa.RecordBatchReader, keys: Sequence[str], held: pa.Array
) -> pa.RecordBatchReader:
    """The rows of ``stream`` whose keys the table does not hold."""

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in stream:
            new = batch.filter(pc.invert(is_in(key_strings(batch, keys), held)))
            if new.num_rows:
                yield new

    return pa.RecordBatchReader.from_batches(stream.schema, batches())


def group_rows(
    stream: pa.RecordBatchReader,
    current: pa.Table,
    ours: pa.Table,
    keys: Sequence[str],
    group: pa.Array,
) -> pa.RecordBatchReader:
    """Every row the table will hold under the first-key values ``group``.

    The source's rows of those first keys, then the table's rows of those first keys
    that the source does not carry (kept as they are). Columns only the table has (a
    newer library evolved it) keep the table's values.
    """
    first = keys[0]
    extra = [f for f in current.schema if f.name not in stream.schema.names]
    schema = pa.schema(list(stream.schema) + extra)
    held = key_strings(current, keys)

    def conform(rows: pa.Table) -> pa.RecordBatch:
        arrays = []
        for field in schema:
            if field.name in rows.column_names:
                col = rows.column(field.name)
                arrays.append(col if col.type == field.type else pc.cast(col, field.type))
            else:
                arrays.append(pa.nulls(rows.num_rows, field.type))
        return pa.Table.from_arrays(arrays, schema=schema).combine_chunks().to_batches()[0]

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in stream:
            rows = pa.Table.from_batches([batch.filter(is_in(batch.column(first), group))])
            if not rows.num_rows:
                continue
            if extra:
                aligned = current.take(pc.index_in(key_strings(rows, keys), value_set=held))
                for field in extra:
                    rows = rows.append_column(field, aligned.column(field.name))
            yield conform(rows)
        kept = current.filter(
            pc.and_(
                is_in(current.column(first), group),
                pc.invert(is_in(held, key_strings(ours, keys))),
            )
        )
        if kept.num_rows:
            yield conform(kept)

    return pa.RecordBatchReader.from_batches(schema, batches())
