"""Write one table of one export into its Delta table: one commit, append or MERGE.

- The owner partition holds no rows yet: the rows are written as an overwrite of that
  (empty) partition, ``predicate="<owner> = '<id>'"``. It costs what an append costs, and
  unlike a blind append it conflicts with a concurrent writer that filled the partition
  meanwhile, so the retry turns into a MERGE instead of a duplicate.
- Otherwise the partition's keys are read (key columns only, that partition only) and
  the rows split: new keys are appended (one commit); keys already held go through a
  delta-rs MERGE on the natural keys (null-safe, the owner partition named as a literal
  so only its files are read) that updates only rows whose values changed (the latest
  export wins). Unchanged rows rewrite no file and make no commit, so an overlapping
  incremental window costs about what its new rows cost. (New rows do not go through
  the MERGE because delta-rs 1.6 writes its output with Arrow string-view types, which
  Daft 0.7 cannot read.)
- Every commit into an owner partition carries a Delta application transaction
  (``txn``, one id per table and owner): two writers of one partition that started from
  the same snapshot cannot both commit; the loser retries on a fresh snapshot.
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

from .._tables_schema import owner_column
from . import _checkpoints
from ._layout import MERGE_KEYS, partition_columns
from ._loads import COMMIT_EXPORT, COMMIT_OWNER
from ._retry import committing
from ._storage import Lake, scan

__all__ = ["TableWrite", "write_table"]

logger = logging.getLogger("prolific_ingest.lake")

#: Data files of about this size (delta-rs buffers one file per partition while writing).
TARGET_FILE_BYTES = 64 * 1024 * 1024
#: Row groups of the data files: small enough for row-group pruning and bounded memory.
WRITER = WriterProperties(max_row_group_size=65536)


@dataclass(frozen=True)
class TableWrite:
    """What one table commit did."""

    table: str
    version: int
    mode: str  # "append" or "merge"
    metrics: dict[str, Any]


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


def _changed(schema: pa.Schema, keys: Sequence[str], skip: Sequence[str]) -> str | None:
    cols = [c for c in schema.names if c not in keys and c not in skip and c != "export_id"]
    if not cols:
        return None
    # Each clause in parentheses: delta-rs's SQL parser binds a bare chain of
    # ``IS [NOT] DISTINCT FROM`` and ``AND``/``OR`` wrongly.
    return " OR ".join(f"(s.{c} IS DISTINCT FROM t.{c})" for c in cols)


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


def _partition_keys(
    table: DeltaTable, keys: Sequence[str], owner: str, owner_id: str, source: pa.Table
) -> pa.Array:
    """Keys of the owner partition that the source also has (by its first key column).

    The scan reads only the key columns of that partition and keeps only rows whose first
    key is one of the source's, so memory follows the source, not the table.
    """
    first = source.column(keys[0])
    where = ds.field(owner) == owner_id
    candidates = ds.field(keys[0]).isin(pc.drop_null(pc.unique(first)))
    if first.null_count:
        candidates = candidates | ds.field(keys[0]).is_null()
    held = scan(table, columns=list(keys), filter=where & candidates)
    return _key_strings(held, keys)


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

    ``source(merging)`` returns a fresh stream of the rows for each attempt; ``merging``
    tells whether they will be merged into rows already there. ``source_keys()`` returns
    the rows' key columns (read once per attempt that merges).
    """
    owner = owner_column(kind)
    parts = partition_columns(name, kind, partition_by)
    keys = MERGE_KEYS[name]
    metadata = {COMMIT_EXPORT: export_id, COMMIT_OWNER: f"{owner}={owner_id}"}
    in_partition = f"{owner} = '{owner_id}'"
    app_id = f"prolific-ingest/{name}/{owner}={owner_id}"

    def attempt() -> TableWrite:
        table = _open(lake, name, schema, parts)
        # An application transaction per owner partition: two writers of one partition
        # that start from the same snapshot cannot both commit (Delta's txn action).
        txn = Transaction(app_id=app_id, version=(table.transaction_version(app_id) or 0) + 1)
        props = CommitProperties(custom_metadata=metadata, app_transactions=[txn])
        occupied = bool(table.file_uris(file_pruning_predicate=in_partition))
        _checkpoints.reached(f"before-commit:{name}")
        if not occupied:
            write_deltalake(
                table,
                source(False),
                mode="overwrite",
                predicate=in_partition,
                partition_by=parts,
                schema_mode="merge",
                storage_options=lake.options,
                commit_properties=props,
                target_file_size=TARGET_FILE_BYTES,
                writer_properties=WRITER,
            )
            return TableWrite(name, table.version(), "append", {})
        return _merge(table, props)

    def _merge(table: DeltaTable, props: CommitProperties) -> TableWrite:
        known = _partition_keys(table, keys, owner, owner_id, source_keys())
        overlap: list[pa.RecordBatch] = []
        counts = {"inserted": 0, "matched": 0}
        stream = source(True)

        def fresh() -> Iterator[pa.RecordBatch]:
            for batch in stream:
                hit = pc.is_in(_key_strings(batch, keys), value_set=known)
                held = batch.filter(hit)
                if held.num_rows:
                    overlap.append(held)
                    counts["matched"] += held.num_rows
                new = batch.filter(pc.invert(hit))
                counts["inserted"] += new.num_rows
                if new.num_rows:
                    yield new

        # New keys: a plain append (pyarrow-typed files, one commit, guarded by the txn).
        write_deltalake(
            table,
            pa.RecordBatchReader.from_batches(stream.schema, fresh()),
            mode="append",
            partition_by=parts,
            schema_mode="merge",
            storage_options=lake.options,
            commit_properties=props,
            target_file_size=TARGET_FILE_BYTES,
            writer_properties=WRITER,
        )
        metrics: dict[str, Any] = dict(counts)
        update_when = _changed(schema, keys, parts)
        if overlap and update_when is not None:
            # Keys already held: MERGE updates only the rows whose values changed (the
            # latest export wins); unchanged rows rewrite no file and make no commit.
            on_keys = " AND ".join(f"(t.{k} IS NOT DISTINCT FROM s.{k})" for k in keys)
            merged = (
                table.merge(
                    pa.Table.from_batches(overlap, schema=stream.schema),
                    predicate=f"(t.{in_partition}) AND {on_keys}",
                    source_alias="s",
                    target_alias="t",
                    merge_schema=True,
                    commit_properties=CommitProperties(custom_metadata=metadata),
                )
                .when_matched_update_all(predicate=update_when)
                .execute()
            )
            metrics["updated"] = merged.get("num_target_rows_updated", 0)
        logger.debug("table %s: merge %s", name, metrics)
        return TableWrite(name, table.version(), "merge", metrics)

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
