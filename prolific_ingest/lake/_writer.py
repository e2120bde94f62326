"""Write one table of one export into its Delta table: one commit per load.

- The owner partition holds no rows yet: the rows are streamed into Parquet files by
  pyarrow and committed as one overwrite of that (empty) partition (:mod:`._stream`;
  ``write_deltalake(mode="overwrite", predicate="<owner> = '<id>'")`` where that cannot
  be used: a schema change, a store pyarrow cannot write). Unlike a blind append it
  conflicts with a concurrent writer that filled the partition meanwhile, so the retry
  takes the path below instead of writing a duplicate.
- Otherwise the table's rows under the source's first-key values are read (that
  partition only; every column of only the files the key index, :mod:`._keyindex`, says
  can hold one, the key columns of files it does not name) and the rows split into new
  keys and keys already held.
  The held rows are compared with the table's current rows for those keys
  (:mod:`._changes`: null-safe, every column but the keys, the partition columns and
  ``export_id``):

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
- After its commits, a write records the key-index entries of the partition's files no
  entry names yet (those it wrote, and those it had to read).

(A delta-rs MERGE would do the same, but delta-rs 1.6.6 writes MERGE output with Arrow
string-view types, which Daft 0.7 cannot read; an overwrite with a predicate writes
plain string types.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import CommitProperties, DeltaTable, Transaction, WriterProperties, write_deltalake
from deltalake.exceptions import TableNotFoundError

from ..tables._schema import owner_column
from . import _checkpoints
from ._changes import (
    changed_rows,
    first_key_filter,
    group_rows,
    held_rows,
    is_in,
    key_predicate,
    key_strings,
    literal,
    new_rows,
    unique,
)
from ._keyindex import (
    COUNTED,
    EntrySpool,
    KeyIndex,
    index_written,
    partition_files,
    read_entry,
    sum_counts,
)
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
    in_partition = f"{owner} = {literal(owner_id)}"
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
            index = KeyIndex.open(lake, table, name, owner, owner_id, first)
            with EntrySpool() as entries:
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
                        index=(first, COUNTED.get(name)) if index is not None else None,
                        entries=entries,
                    )
                ):
                    table.update_incremental()
                else:
                    # No rows (an empty table still gets its version), the table's schema
                    # is not the stream's (schema merge) or a store pyarrow does not
                    # write: delta-rs.
                    write(table, source(False), in_partition)
                index_written(index, table, owner, owner_id, entries)
            return TableWrite(name, table.version(), "append", {})
        return _merge(table)

    def _merge(table: DeltaTable) -> TableWrite:
        start = table.version()
        ours = source_keys()
        where = first_key_filter(owner, owner_id, first, ours.column(first))
        index = KeyIndex.open(lake, table, name, owner, owner_id, first)
        current, scanned = held_rows(
            table, keys, where, ours.column(first), index, COUNTED.get(name)
        )
        held = key_strings(current, keys)
        is_new = pc.invert(is_in(key_strings(ours, keys), held))
        new_firsts = unique(ours.column(first).filter(is_new))
        inserted = int(pc.sum(is_new).as_py() or 0)
        changed_firsts = unique(ours.column(first).slice(0, 0))
        if inserted < ours.num_rows and compared:
            stream = source(True)
            overlap = [b.filter(is_in(key_strings(b, keys), held)) for b in stream]
            incoming = pa.Table.from_batches(overlap, schema=stream.schema)
            changed = changed_rows(incoming, current, keys, compared)
            changed_firsts = unique(incoming.column(first).filter(changed))
        metrics: dict[str, Any] = {
            "inserted": inserted,
            "matched": ours.num_rows - inserted,
            "rewritten_first_keys": 0,
        }
        if not len(changed_firsts):
            # Nothing held changed: append the new rows; no file is rewritten.
            write(table, new_rows(source(True), keys, held), None)
            index_written(index, table, owner, owner_id, scanned)
            return TableWrite(name, table.version(), "merge", metrics, table.version() - start)
        touched = unique(pa.concat_arrays([new_firsts, changed_firsts]))
        if len(touched) <= REWRITE_KEYS:
            groups = [touched]  # new and changed rows in one commit
        else:
            write(table, new_rows(source(True), keys, held), None)
            groups = [
                changed_firsts[i : i + REWRITE_KEYS]
                for i in range(0, len(changed_firsts), REWRITE_KEYS)
            ]
        for group in groups:
            metrics["rewritten_first_keys"] += len(group)
            write(
                table,
                group_rows(source(True), current, ours, keys, group),
                key_predicate(owner, owner_id, first, group.to_pylist()),
            )
        index_written(index, table, owner, owner_id, scanned)
        logger.debug("table %s: merge %s", name, metrics)
        return TableWrite(name, table.version(), "merge", metrics, table.version() - start)

    done = committing(attempt, what=f"table {name} of export {export_id}")
    _checkpoints.reached(f"after-commit:{name}")
    return done


def recount_responses(lake: Lake, submissions: pa.Table, *, kind: str, owner_id: str) -> pa.Table:
    """``submissions`` with ``n_responses`` counted from the lake's ``responses`` partition.

    A windowed (incremental) export carries only part of a submission's responses; once
    they are merged, the table's count is the true one. The key index holds each data
    file's rows per submission: only files it does not name are read (and indexed).
    """
    owner = owner_column(kind)
    if not submissions.num_rows:
        return submissions
    responses = DeltaTable(lake.table("responses"), storage_options=lake.options)
    first = MERGE_KEYS["responses"][0]
    index = KeyIndex.open(lake, responses, "responses", owner, owner_id, first, hashes=False)
    if index is None:
        ids = scan(responses, columns=["submission_id"], filter=ds.field(owner) == owner_id)
        counts = pc.value_counts(ids.column("submission_id"))
        known, tally = counts.field("values"), counts.field("counts")
    else:
        dataset, fragments = partition_files(responses, owner, owner_id)
        live = [f.path for f in fragments]
        fresh = [
            read_entry(dataset, f, first, COUNTED["responses"])
            for f in fragments
            if not index.covers(f.path)
        ]
        if fresh:
            index_written(index, responses, owner, owner_id, fresh)
        wanted = unique(submissions.column("submission_id"))
        parts = [*index.counts(live), *(e.counts for e in fresh if e.counts is not None)]
        # Only the export's submissions are recounted: the rest is summed for nothing.
        summed = sum_counts([t.filter(is_in(t.column("value"), wanted)) for t in parts])
        known, tally = summed.column("value"), summed.column("n")
    found = pc.index_in(submissions.column("submission_id"), value_set=known)
    recounted = pc.take(tally, found)
    n = pc.coalesce(pc.cast(recounted, pa.int64()), pa.scalar(0, pa.int64()))
    at = submissions.schema.get_field_index("n_responses")
    return submissions.set_column(at, submissions.schema.field(at), n)
