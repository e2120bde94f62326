"""Private reader of :mod:`prolific_ingest.sinks`: committed partitions -> one DataFrame."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ._sinks_layout import Location
from ._sinks_manifest import decode_schema

log = logging.getLogger(__name__)

#: Columns that identify one row of each table across exports (``read_dataset(dedup=True)``).
DEDUP_KEYS: dict[str, tuple[str, ...]] = {
    "submissions": ("submission_id",),
    "responses": ("response_id",),
    "answers": ("response_id", "answer_index"),
    # One row per distinct task content (task_id may repeat when the archive gives one task
    # different contents), so the whole row is the key.
    "tasks": ("task_id", "batch_id", "task_group_id", "datapoint", "metadata", "extra"),
    "instructions": ("instruction_id",),
    "files": ("path",),
}


def _read_file(loc: Location, rel: str) -> Any:
    with loc.fs.open(loc.path(rel), "rb") as fh:
        return pq.read_table(fh)


def export_table(loc: Location, manifest: Mapping[str, Any], table: str) -> Any:
    """One committed export's rows of ``table`` with its owner column restored.

    Adds ``export_id`` (and the owner id column when the table has none) as string
    columns. Returns ``None`` when the export does not include ``table``.
    """
    files = manifest["files"].get(table)
    encoded = (manifest.get("schemas") or {}).get(table)
    if files is None:
        return None
    schema = decode_schema(encoded) if encoded else None
    col = manifest.get("owner_col") or f"{manifest['kind']}_id"
    owner_id = manifest["owner_id"]
    parts = [_read_file(loc, rel) for rel in files]
    if parts:
        data = pa.concat_tables(parts, promote_options="permissive")
    elif schema is not None:
        stored = schema.remove(schema.get_field_index(col)) if col in schema.names else schema
        data = stored.empty_table()
    else:
        return None
    n = data.num_rows
    if schema is not None and col in schema.names and col not in data.column_names:
        index = schema.get_field_index(col)
        data = data.add_column(index, schema.field(col), pa.array([owner_id] * n, pa.string()))
    if col not in data.column_names:
        data = data.append_column(col, pa.array([owner_id] * n, pa.string()))
    return data.append_column("export_id", pa.array([manifest["export_id"]] * n, pa.string()))


def to_frame(tables: list[Any], table: str, *, dedup: bool) -> pd.DataFrame:
    """Union ``tables`` (oldest export first) and keep the newest row of each key."""
    combined = pa.concat_tables(tables, promote_options="permissive")
    frame: pd.DataFrame = combined.to_pandas(types_mapper=pd.ArrowDtype)
    keys = DEDUP_KEYS.get(table)
    if dedup and keys:
        if all(k in frame.columns for k in keys):
            frame = frame.drop_duplicates(subset=list(keys), keep="last")
        else:
            log.warning("table %s lacks its key columns %s: not de-duplicated", table, keys)
    return frame.reset_index(drop=True)
