"""Write one table of one export into its Delta table: one commit per load.

- The owner partition holds no rows yet: the rows are written as an overwrite of that
  (empty) partition, ``predicate="<owner> = '<id>'"``. It costs what an append costs, and
  unlike a blind append it conflicts with a concurrent writer that filled the partition
  meanwhile, so the retry takes the path below instead of writing a duplicate.
- Otherwise the partition's keys are read (key columns only, that partition only, only
  the source's first-key values) and the rows split into new keys and keys already held.
  The held rows are compared with the table's current rows for those keys (null-safe,
  every column but the keys, the partition columns and ``export_id``):

  - none changed: the new rows are appended (one commit). Unchanged rows rewrite no
    file, so an overlapping incremental window costs about what its new rows cost;
  - some changed: one overwrite whose predicate names the owner partition and the
    *first* key values of the new and changed rows
    (``<owner> = '<id>' AND response_id IN (...)``), and whose data is every row of
    those first keys: the new rows, the export's rows sharing a first key with a new or
    changed one, and rows the table holds under those first keys that the export does
    not carry (kept as they are). delta-rs deletes the rows the predicate matches (it
    rewrites only files holding one) and adds the data in the same commit, and checks
    that every written row satisfies the predicate. The latest export wins.

  delta-rs 1.6.6 crashes the process on a predicate of some 20,000 literals, so one
  predicate names at most :data:`REWRITE_KEYS` first-key values. When the new and
  changed rows have more, the new rows are appended (one commit) and the changed first
  keys rewritten in commits of at most that many values each.
- Every commit into an owner partition carries a Delta application transaction
  (``txn``, one id per table and owner): two writers of one partition that started from
  the same snapshot cannot both commit; the loser retries on a fresh snapshot.

(A delta-rs MERGE would do the same, but delta-rs 1.6.6 writes MERGE output with Arrow
string-view types, which Daft 0.7 cannot read; an overwrite with a predicate writes
plain string types.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import CommitProperties, DeltaTable, Transaction, WriterProperties, write_deltalake
from deltalake.exceptions import TableNotFoundError

from ..tables._schema import owner_column
from . import _checkpoints
from ._layout import MERGE_KEYS, partition_columns
from ._loads import COMMIT_EXPORT, COMMIT_OWNER
from ._retry import committing
from ._storage import Lake, arrow_filesystem, scan
from ._stream import stream_first_load

__all__ = ["REWRITE_KEYS", "TableWrite", "write_table"]

logger = logging.getLogger("prolific_ingest.lake")

#: Data files of about this size (delta-rs buffers one file per partition while writing).
TARGET_FILE_BYTES = 64 * 1024 * 1024
#: Row groups of the data files: small enough for row-group pruning and bounded memory.
WRITER = WriterProperties(max_row_group_size=65536)
#: Most first-key values one rewrite predicate names (delta-rs 1.6.6 overflows its stack
#: on about 20,000); more are rewritten in several commits.
REWRITE_KEYS = 4096
#: Literals per ``IN (...)`` list of a predicate (lists are joined by ``OR``).
_IN_CHUNK = 500


@dataclass(frozen=True)
class TableWrite:
    """What one table write did.

    ``mode`` is ``"append"`` (the owner partition was empty) or ``"merge"``; ``commits``
    is how many table versions the write made (1 unless it had to split a rewrite).
    """

    table: str
    version: int
    mode: str  # "append" or "merge"
    metrics: dict[str, Any]
    commits: int = 1


def _open(lake: Lake, name: str, schema: pa.Schema, partition_by: list[str]) -> DeltaTable:
    uri = lake.table(name)
    try:
        return DeltaTable(uri, storage_options=lake.options)
    except TableNotFoundError:
        pass
    DeltaTable.create(
        uri, schema, mode="ignore", partition_by=partition_by, storage_options=lake.options
    )
    return DeltaTable(uri, storage_options=lake.options)


def _same_columns(table: DeltaTable, schema: pa.Schema) -> bool:
    """Whether ``table`` has exactly the columns (names and types, in order) of ``schema``."""
    held = pa.schema(table.schema().to_arrow())
    return [(f.name, f.type) for f in held] == [(f.name, f.type) for f in schema]


def _key_strings(data: pa.RecordBatch | pa.Table, keys: Sequence[str]) -> pa.Array:
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


def _literal(value: Any) -> str:
    """``value`` as a SQL literal of a delta-rs predicate (``'`` doubled in strings)."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    msg = f"cannot name a key value of type {type(value).__name__} in a predicate"
    raise TypeError(msg)


def _key_predicate(owner: str, owner_id: str, key: str, values: Sequence[Any]) -> str:
    """``<owner> = '<id>' AND (<key> IN (...) OR ... [OR <key> IS NULL])``."""
    present = sorted({v for v in values if v is not None})
    terms = [
        f"{key} IN ({', '.join(_literal(v) for v in present[i : i + _IN_CHUNK])})"
        for i in range(0, len(present), _IN_CHUNK)
    ]
    if any(v is None for v in values):
        terms.append(f"{key} IS NULL")
    return f"{owner} = {_literal(owner_id)} AND ({' OR '.join(terms)})"


def _first_key_filter(owner: str, owner_id: str, key: str, values: pa.Array) -> ds.Expression:
    """A dataset filter: the owner partition, rows whose ``key`` is one of ``values``."""
    where = ds.field(key).isin(pc.drop_null(pc.unique(values)))
    if values.null_count:
        where = where | ds.field(key).is_null()
    return (ds.field(owner) == owner_id) & where


def _in(values: pa.Array | pa.ChunkedArray, value_set: pa.Array) -> pa.Array:
    """Null-safe membership: a null is in ``value_set`` when it holds a null."""
    hit = pc.is_in(values, value_set=value_set, skip_nulls=False)
    return hit.combine_chunks() if isinstance(hit, pa.ChunkedArray) else hit


def _differs(left: pa.Array | pa.ChunkedArray, right: pa.Array | pa.ChunkedArray) -> pa.Array:
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


def _changed_rows(
    incoming: pa.Table, current: pa.Table, keys: Sequence[str], compared: Sequence[str]
) -> pa.Array:
    """For each ``incoming`` row (all held): whether a compared column differs from the table's.

    A column the table does not have yet (schema merge) compares as null there.
    """
    where = pc.index_in(_key_strings(incoming, keys), value_set=_key_strings(current, keys))
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
        changed = pc.or_(changed, _differs(ours, theirs))
    return changed


def _held_rows(table: DeltaTable, keys: Sequence[str], where: ds.Expression) -> pa.Table:
    """The table's rows matching ``where`` (an owner partition and first-key values).

    Reads the key columns of that partition's files first, then every column of only
    the files that hold a match: memory follows the source, and the cost of an
    overlapping window follows the files the overlap lives in, not the partition.
    Scans single-threaded (see :func:`._storage.scan`).
    """
    dataset = table.to_pyarrow_dataset()
    holding = [
        fragment
        for fragment in dataset.get_fragments(filter=where)
        if fragment.to_table(
            schema=dataset.schema, columns=list(keys), filter=where, use_threads=False
        ).num_rows
    ]
    subset = ds.FileSystemDataset(holding, dataset.schema, dataset.format, dataset.filesystem)
    return subset.to_table(filter=where, use_threads=False)


def _unique(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    out = pc.unique(values)
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


def _new_rows(
    stream: pa.RecordBatchReader, keys: Sequence[str], held: pa.Array
) -> pa.RecordBatchReader:
    """The rows of ``stream`` whose keys the table does not hold."""

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in stream:
            new = batch.filter(pc.invert(_in(_key_strings(batch, keys), held)))
            if new.num_rows:
                yield new

    return pa.RecordBatchReader.from_batches(stream.schema, batches())


def _group_rows(
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
    held = _key_strings(current, keys)

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
            rows = pa.Table.from_batches([batch.filter(_in(batch.column(first), group))])
            if not rows.num_rows:
                continue
            if extra:
                aligned = current.take(pc.index_in(_key_strings(rows, keys), value_set=held))
                for field in extra:
                    rows = rows.append_column(field, aligned.column(field.name))
            yield conform(rows)
        kept = current.filter(
            pc.and_(
                _in(current.column(first), group),
                pc.invert(_in(held, _key_strings(ours, keys))),
            )
        )
        if kept.num_rows:
            yield conform(kept)

    return pa.RecordBatchReader.from_batches(schema, batches())


def write_table(
    lake: Lake,
    name: str,
    source: Callable[[bool], pa.RecordBatchReader],
    *,
    source_keys: Callable[[], pa.Table],
    schema: pa.Schema,
    kind: str,
    owner_id: str,
    export_id: str,
    partition_by: Sequence[str],
) -> TableWrite:
    """Commit the rows of ``source`` into ``<lake>/<name>`` (retrying commit conflicts).

    ``source(merging)`` returns a fresh stream of the rows each time it is called (up to
    twice per attempt); ``merging`` tells whether they will be merged into rows already
    there. ``source_keys()`` returns the rows' key columns (read once per attempt that
    merges).
    """
    owner = owner_column(kind)
    parts = partition_columns(name, kind, partition_by)
    keys = MERGE_KEYS[name]
    first = keys[0]
    compared = [c for c in schema.names if c not in keys and c not in parts and c != "export_id"]
    metadata = {COMMIT_EXPORT: export_id, COMMIT_OWNER: f"{owner}={owner_id}"}
    in_partition = f"{owner} = {_literal(owner_id)}"
    app_id = f"prolific-ingest/{name}/{owner}={owner_id}"

    def props(table: DeltaTable) -> CommitProperties:
        # An application transaction per owner partition: two writers of one partition
        # that start from the same snapshot cannot both commit (Delta's txn action).
        txn = Transaction(app_id=app_id, version=(table.transaction_version(app_id) or 0) + 1)
        return CommitProperties(custom_metadata=metadata, app_transactions=[txn])

    def write(table: DeltaTable, data: pa.RecordBatchReader, predicate: str | None) -> None:
        """One commit: an append, or (with ``predicate``) an overwrite of what it matches."""
        common: dict[str, Any] = {
            "partition_by": parts,
            "schema_mode": "merge",
            "storage_options": lake.options,
            "commit_properties": props(table),
            "target_file_size": TARGET_FILE_BYTES,
            "writer_properties": WRITER,
        }
        if predicate is None:
            write_deltalake(table, data, mode="append", **common)
        else:
            write_deltalake(table, data, mode="overwrite", predicate=predicate, **common)
        table.update_incremental()

    def attempt() -> TableWrite:
        table = _open(lake, name, schema, parts)
        occupied = bool(table.file_uris(file_pruning_predicate=in_partition))
        _checkpoints.reached(f"before-commit:{name}")
        if not occupied:
            data = source(False)
            target = arrow_filesystem(lake, name)
            if (
                target
                and _same_columns(table, data.schema)
                and stream_first_load(
                    table,
                    *target,
                    data,
                    owner=owner,
                    owner_id=owner_id,
                    partition_by=parts,
                    commit_properties=props(table),
                    target_file_bytes=TARGET_FILE_BYTES,
                )
            ):
                table.update_incremental()
            else:
                # No rows (an empty table still gets its version), the table's schema is
                # not the stream's (schema merge) or a store pyarrow does not write: delta-rs.
                write(table, source(False), in_partition)
            return TableWrite(name, table.version(), "append", {})
        return _merge(table)

    def _merge(table: DeltaTable) -> TableWrite:
        start = table.version()
        ours = source_keys()
        where = _first_key_filter(owner, owner_id, first, ours.column(first))
        current = _held_rows(table, keys, where)
        held = _key_strings(current, keys)
        is_new = pc.invert(_in(_key_strings(ours, keys), held))
        new_firsts = _unique(ours.column(first).filter(is_new))
        inserted = int(pc.sum(is_new).as_py() or 0)
        changed_firsts = _unique(ours.column(first).slice(0, 0))
        if inserted < ours.num_rows and compared:
            stream = source(True)
            overlap = [b.filter(_in(_key_strings(b, keys), held)) for b in stream]
            incoming = pa.Table.from_batches(overlap, schema=stream.schema)
            changed = _changed_rows(incoming, current, keys, compared)
            changed_firsts = _unique(incoming.column(first).filter(changed))
        metrics: dict[str, Any] = {
            "inserted": inserted,
            "matched": ours.num_rows - inserted,
            "rewritten_first_keys": 0,
        }
        if not len(changed_firsts):
            # Nothing held changed: append the new rows; no file is rewritten.
            write(table, _new_rows(source(True), keys, held), None)
            return TableWrite(name, table.version(), "merge", metrics, table.version() - start)
        touched = _unique(pa.concat_arrays([new_firsts, changed_firsts]))
        if len(touched) <= REWRITE_KEYS:
            groups = [touched]  # new and changed rows in one commit
        else:
            write(table, _new_rows(source(True), keys, held), None)
            groups = [
                changed_firsts[i : i + REWRITE_KEYS]
                for i in range(0, len(changed_firsts), REWRITE_KEYS)
            ]
        for group in groups:
            metrics["rewritten_first_keys"] += len(group)
            write(
                table,
                _group_rows(source(True), current, ours, keys, group),
                _key_predicate(owner, owner_id, first, group.to_pylist()),
            )
        logger.debug("table %s: merge %s", name, metrics)
        return TableWrite(name, table.version(), "merge", metrics, table.version() - start)

    done = committing(attempt, what=f"table {name} of export {export_id}")
    _checkpoints.reached(f"after-commit:{name}")
    return done


def recount_responses(lake: Lake, submissions: pa.Table, *, kind: str, owner_id: str) -> pa.Table:
    """``submissions`` with ``n_responses`` counted from the lake's ``responses`` partition.

    A windowed (incremental) export carries only part of a submission's responses; once
    they are merged, the table's count is the true one.
    """
    owner = owner_column(kind)
    if not submissions.num_rows:
        return submissions
    responses = DeltaTable(lake.table("responses"), storage_options=lake.options)
    ids = scan(responses, columns=["submission_id"], filter=ds.field(owner) == owner_id)
    counts = pc.value_counts(ids.column("submission_id"))
    known = counts.field("values")
    found = pc.index_in(submissions.column("submission_id"), value_set=known)
    recounted = pc.take(counts.field("counts"), found)
    n = pc.coalesce(pc.cast(recounted, pa.int64()), pa.scalar(0, pa.int64()))
    index = submissions.schema.get_field_index("n_responses")
    return submissions.set_column(index, submissions.schema.field(index), n)
