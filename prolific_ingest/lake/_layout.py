"""The lake's layout: table names, keys, partition columns and each table's Arrow schema.

::

    <lake>/<table>/            one Delta table per export table (submissions, tasks,
                               responses, answers, files, instructions, rejected)
    <lake>/_loads/             the load records (a Delta table, appended last)
    <lake>/_keys/              the key index (:mod:`._keyindex`; not a Delta table)

Every row carries its owner id (``batch_id`` or ``collection_id``) and ``export_id``; each
table is partitioned by the owner id (and by ``date``, the UTC day of ``created_at``, for
``responses`` written with ``partition_by=("date",)``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pyarrow as pa

from ..tables._schema import TABLE_NAMES, owner_column, schema_for, table_names

__all__ = [
    "KINDS",
    "LOADS",
    "MERGE_KEYS",
    "SUPPORTED_PARTITIONS",
    "check_partition_by",
    "check_table",
    "lake_schema",
    "partition_columns",
    "write_order",
]

KINDS = ("batch", "collection")
LOADS = "_loads"
SUPPORTED_PARTITIONS = ("date",)

#: The natural key of each table: a load matches the table's rows on these columns
#: (null-safe), so each key is held once per owner partition. A rewrite of changed rows
#: names the first column's values in its predicate.
MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "submissions": ("submission_id",),
    "responses": ("response_id",),
    "answers": ("response_id", "answer_index"),
    # One row per distinct task content (a task_id may repeat with different contents).
    "tasks": ("task_id", "batch_id", "task_group_id", "datapoint", "metadata", "extra"),
    "instructions": ("instruction_id",),
    "files": ("path",),
    "rejected": ("export_id", "member", "line_number"),
}

_TABLE_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def check_table(name: str) -> str:
    """Validate a table name (one of the export tables)."""
    if not isinstance(name, str) or not _TABLE_RE.match(name) or name not in TABLE_NAMES:
        msg = f"table {name!r} is not one of the lake's tables {list(TABLE_NAMES)}"
        raise ValueError(msg)
    return name


def check_partition_by(partition_by: Sequence[str]) -> tuple[str, ...]:
    """Validate ``partition_by`` (``()`` or ``("date",)``)."""
    if isinstance(partition_by, str):
        partition_by = (partition_by,)
    unknown = sorted(set(partition_by) - set(SUPPORTED_PARTITIONS))
    if unknown:
        msg = f"unsupported partition_by {unknown}; supported: {list(SUPPORTED_PARTITIONS)}"
        raise ValueError(msg)
    return tuple(partition_by)


def dated(table: str, partition_by: Sequence[str]) -> bool:
    """Whether ``table`` gets a ``date`` partition column (only tables with ``created_at``)."""
    return "date" in partition_by and table == "responses"


def lake_schema(table: str, kind: str, partition_by: Sequence[str] = ()) -> pa.Schema:
    """The Arrow schema of ``table`` in the lake: the export's, plus owner, ``export_id``, date.

    The same for every export (empty ones included), so every load of a table commits
    one schema; a column added by a later library version evolves the table by schema merge.
    """
    schema = schema_for(table, kind)
    owner = owner_column(kind)
    if owner not in schema.names:
        schema = schema.append(pa.field(owner, pa.string()))
    schema = schema.append(pa.field("export_id", pa.string()))
    if dated(table, partition_by):
        schema = schema.append(pa.field("date", pa.date32()))
    return schema


def partition_columns(table: str, kind: str, partition_by: Sequence[str] = ()) -> list[str]:
    """The Delta partition columns of ``table``: the owner id, then ``date`` if dated."""
    cols = [owner_column(kind)]
    if dated(table, partition_by):
        cols.append("date")
    return cols


def write_order(kind: str) -> list[str]:
    """Tables in commit order: ``responses`` before ``submissions`` (whose counts use it)."""
    names = list(table_names(kind))
    names.remove("submissions")
    names.insert(names.index("responses") + 1, "submissions")
    return names
