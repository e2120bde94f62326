"""The load records: a ``_loads`` Delta table, one row per completed load, appended last.

A load commits each table once (its commit carries the export id in the commit's
metadata, :data:`COMMIT_EXPORT`, visible in ``history()``), then appends its record
here, naming the version it committed of every table. A table version no record
names belongs to a load that did not finish: readers of the consistent state read the
recorded versions, and the next run of that load re-applies it (the MERGE is
idempotent) and records it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from ._layout import LOADS
from ._retry import committing
from ._storage import Lake, scan

__all__ = ["COMMIT_EXPORT", "COMMIT_OWNER", "LoadRecord", "append_record", "read_records"]

#: Keys of the custom commit metadata every table commit of a load carries.
COMMIT_EXPORT = "prolific_ingest.export_id"
COMMIT_OWNER = "prolific_ingest.owner"

SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("owner_id", pa.string()),
        ("export_id", pa.string()),
        ("filter", pa.string()),
        ("study_id", pa.string()),
        ("watermark", pa.timestamp("us", tz="UTC")),
        ("counts", pa.string()),
        ("versions", pa.string()),
        ("partition_by", pa.string()),
        ("archive_sha256", pa.string()),
        ("library_version", pa.string()),
        ("loaded_at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass(frozen=True)
class LoadRecord:
    """One completed load, as recorded in ``<lake>/_loads``."""

    kind: str
    owner_id: str
    export_id: str
    filter: dict[str, Any] | None
    watermark: datetime | None
    counts: dict[str, int]
    versions: dict[str, int]
    partition_by: tuple[str, ...]
    archive_sha256: str | None
    library_version: str
    loaded_at: datetime

    @property
    def owner(self) -> str:
        """``<kind>_id=<owner_id>``, as in the commit metadata."""
        return f"{self.kind}_id={self.owner_id}"

    def to_dict(self) -> dict[str, Any]:
        """The record as plain values (what :func:`~prolific_ingest.committed_exports` lists)."""
        return {
            "kind": self.kind,
            "owner_id": self.owner_id,
            f"{self.kind}_id": self.owner_id,
            "export_id": self.export_id,
            "filter": self.filter,
            "watermark": self.watermark.isoformat() if self.watermark else None,
            "counts": dict(self.counts),
            "versions": dict(self.versions),
            "partition_by": list(self.partition_by),
            "archive_sha256": self.archive_sha256,
            "library_version": self.library_version,
            "loaded_at": self.loaded_at.isoformat(),
        }


def _row(record: LoadRecord) -> dict[str, Any]:
    flt = record.filter or {}
    return {
        "kind": record.kind,
        "owner_id": record.owner_id,
        "export_id": record.export_id,
        "filter": json.dumps(record.filter, sort_keys=True) if record.filter is not None else None,
        "study_id": flt.get("study_id"),
        "watermark": record.watermark,
        "counts": json.dumps(record.counts, sort_keys=True),
        "versions": json.dumps(record.versions, sort_keys=True),
        "partition_by": json.dumps(list(record.partition_by)),
        "archive_sha256": record.archive_sha256,
        "library_version": record.library_version,
        "loaded_at": record.loaded_at,
    }


def _record(row: dict[str, Any]) -> LoadRecord:
    def aware(value: Any) -> datetime | None:
        if not isinstance(value, datetime):
            return None
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    loaded = aware(row["loaded_at"])
    assert loaded is not None
    return LoadRecord(
        kind=row["kind"],
        owner_id=row["owner_id"],
        export_id=row["export_id"],
        filter=json.loads(row["filter"]) if row["filter"] else None,
        watermark=aware(row["watermark"]),
        counts=json.loads(row["counts"] or "{}"),
        versions=json.loads(row["versions"] or "{}"),
        partition_by=tuple(json.loads(row["partition_by"] or "[]")),
        archive_sha256=row["archive_sha256"],
        library_version=row["library_version"] or "",
        loaded_at=loaded,
    )


def append_record(lake: Lake, record: LoadRecord) -> int:
    """Append ``record`` to ``<lake>/_loads`` (creating it); returns the new version."""
    data = pa.Table.from_pylist([_row(record)], schema=SCHEMA)

    def write() -> int:
        write_deltalake(
            lake.table(LOADS),
            data,
            mode="append",
            partition_by=["kind"],
            schema_mode="merge",
            storage_options=lake.options,
        )
        return int(DeltaTable(lake.table(LOADS), storage_options=lake.options).version())

    return committing(write, what=f"the load record of export {record.export_id}")


def read_records(
    lake: Lake, *, kind: str | None = None, owner_id: str | None = None
) -> list[LoadRecord]:
    """Every load record (optionally of one owner), oldest load first."""
    try:
        table = DeltaTable(lake.table(LOADS), storage_options=lake.options)
    except TableNotFoundError:
        return []
    where = None
    if kind is not None:
        where = ds.field("kind") == kind
    if owner_id is not None:
        match = ds.field("owner_id") == owner_id
        where = match if where is None else where & match
    rows = scan(table, filter=where).to_pylist()
    records = [_record(r) for r in rows]
    return sorted(records, key=lambda r: (r.loaded_at, r.export_id))
