"""Write one table of one export into its Delta table: one commit, append or MERGE.

- The owner partition holds no rows yet: the rows are written as an overwrite of that
  (empty) partition, ``predicate="<owner> = '<id>'"``. It costs what an append costs, and
  unlike a blind append it conflicts with a concurrent writer that filled the partition
  meanwhile, so the retry turns into a MERGE instead of a duplicate.
- Otherwise a MERGE on the table's natural keys (null-safe), its predicate naming the
  owner partition as a literal so delta-rs reads only that partition's files. Matched
  rows are updated only where some value changed (the latest export wins), so files
  whose rows are all unchanged are not rewritten; new keys are inserted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from .._tables_schema import owner_column
from . import _checkpoints
from ._layout import MERGE_KEYS, partition_columns
from ._loads import COMMIT_EXPORT, COMMIT_OWNER
from ._retry import committing
from ._storage import Lake

__all__ = ["TableWrite", "write_table"]

logger = logging.getLogger("prolific_ingest.lake")


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


def write_table(
    lake: Lake,
    name: str,
    source: Callable[[bool], pa.RecordBatchReader],
    *,
    schema: pa.Schema,
    kind: str,
    owner_id: str,
    export_id: str,
    partition_by: Sequence[str],
) -> TableWrite:
    """Commit the rows of ``source`` into ``<lake>/<name>`` (retrying commit conflicts).

    ``source(merging)`` returns a fresh stream of the rows for each attempt; ``merging``
    tells whether they will be merged into rows already there.
    """
    owner = owner_column(kind)
    parts = partition_columns(name, kind, partition_by)
    keys = MERGE_KEYS[name]
    metadata = {COMMIT_EXPORT: export_id, COMMIT_OWNER: f"{owner}={owner_id}"}
    in_partition = f"{owner} = '{owner_id}'"

    def attempt() -> TableWrite:
        table = _open(lake, name, schema, parts)
        props = CommitProperties(custom_metadata=metadata)
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
            )
            return TableWrite(name, table.version(), "append", {})
        on_keys = " AND ".join(f"(t.{k} IS NOT DISTINCT FROM s.{k})" for k in keys)
        merger = table.merge(
            source(True),
            predicate=f"(t.{in_partition}) AND {on_keys}",
            source_alias="s",
            target_alias="t",
            merge_schema=True,
            commit_properties=props,
        )
        update_when = _changed(schema, keys, parts)
        if update_when is not None:
            merger = merger.when_matched_update_all(predicate=update_when)
        metrics = merger.when_not_matched_insert_all().execute()
        logger.debug("table %s: merge metrics %s", name, metrics)
        return TableWrite(name, table.version(), "merge", dict(metrics))

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
    ids = responses.to_pyarrow_dataset().to_table(
        columns=["submission_id"], filter=ds.field(owner) == owner_id
    )
    counts = pc.value_counts(ids.column("submission_id"))
    known = counts.field("values")
    found = pc.index_in(submissions.column("submission_id"), value_set=known)
    recounted = pc.take(counts.field("counts"), found)
    n = pc.coalesce(pc.cast(recounted, pa.int64()), pa.scalar(0, pa.int64()))
    index = submissions.schema.get_field_index("n_responses")
    return submissions.set_column(index, submissions.schema.field(index), n)
