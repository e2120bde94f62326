"""Read the lake through delta-rs: one table, a consistent state or a chosen version.

Without ``version=``/``as_of=``, each table is read at the newest version a load record
names: a load appends its record (with the version of every table it committed) only
after its last table commit, so table versions beyond that belong to a load that is
still running or was cut short, and every table read together shows the same loads.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from .._parquet import check_id
from .._urls import parse_storage_url
from .._version import warn_deprecated
from ..errors import LakeNotFoundError, ProlificIngestError
from ..exports._models import ExportKind, ExportRef
from ._layout import LOADS, check_table, lake_schema
from ._legacy import refuse_legacy
from ._loads import LoadRecord, read_records
from ._storage import Lake, resolve_lake, scan, sink_error

__all__ = ["committed_exports", "consistent_version", "read_dataset"]

logger = logging.getLogger("prolific_ingest.lake")

_UNSET: Any = object()


def _owner(
    owner: ExportRef | str | None, batch_id: str | None, collection_id: str | None
) -> ExportRef | None:
    """``read_dataset``'s owner as an :class:`ExportRef`.

    A bare id (positional, or ``batch_id=``) names a batch: the form most reads take.
    ``collection_id=`` is the deprecated spelling of ``ExportRef("collection", id)``.
    """
    ids: list[tuple[ExportKind, object]] = [
        ("batch", owner),
        ("batch", batch_id),
        ("collection", collection_id),
    ]
    given = [ExportRef(kind, value) for kind, value in ids if isinstance(value, str)]
    if isinstance(owner, ExportRef):
        given.insert(0, owner)
    if len(given) > 1:
        msg = "name one owner: an ExportRef, or a batch id"
        raise ValueError(msg)
    if isinstance(collection_id, str):
        shown = "read_dataset(collection_id=...)"
        warn_deprecated(shown, "pass ExportRef('collection', owner_id)", stacklevel=3)
    return given[0] if given else None


def consistent_version(table: str, records: list[LoadRecord]) -> int | None:
    """The version of ``table`` that the newest completed load recorded (``None``: none did).

    Every load records the version of each table it committed, after all its commits;
    a table version no record reaches may hold part of a load still running or cut
    short, so the consistent state reads each table at the largest recorded version.
    """
    versions = [r.versions[table] for r in records if table in r.versions]
    return max(versions) if versions else None


def read_dataset(
    output: str,
    table: str,
    owner: ExportRef | str | None = None,
    *,
    version: int | None = None,
    as_of: datetime | str | None = None,
    columns: Sequence[str] | None = None,
    filters: list[tuple[str, str, Any]] | None = None,
    storage_options: dict[str, Any] | None = None,
    as_arrow: bool = False,
    dedup: Any = _UNSET,
    batch_id: str | None = None,
    collection_id: str | None = None,
) -> pd.DataFrame | pa.Table:
    """Read one table of the Delta lake at ``output``.

    Parameters
    ----------
    output : str
        The lake root (local path, ``s3://``, ``gs://``, ``abfs://`` URL).
    table : str
        ``submissions``, ``tasks``, ``responses``, ``answers``, ``files``,
        ``instructions`` or ``rejected``.
    owner : ExportRef or str, optional
        Only this owner's partition: ``ExportRef("collection", collection_id)``, or a batch
        id (``"b1"`` and ``ExportRef("batch", "b1")`` are the same).
    version : int, optional
        Read this table version (time travel) instead of the consistent state.
    as_of : datetime or ISO-8601 str, optional
        Read the table as it was at this time.
    columns : sequence of str, optional
        Only these columns (column pruning).
    filters : list of (column, op, value), optional
        Row filters in pyarrow's DNF form; partition columns prune files.
    storage_options : dict, optional
        fsspec-style or delta-rs options.
    as_arrow : bool, default False
        Return a ``pyarrow.Table`` instead of a pandas DataFrame.
    dedup : bool, optional
        Deprecated and ignored: the table holds each key once.
    batch_id : str, optional
        The batch, by keyword (the same as ``owner``).
    collection_id : str, optional
        Deprecated (removed in 0.3): pass ``ExportRef("collection", collection_id)``.

    Returns
    -------
    pandas.DataFrame or pyarrow.Table
        Arrow-backed columns (``pd.ArrowDtype``).

    Raises
    ------
    MissingPathError
        ``output`` is a local path that does not exist (also ``FileNotFoundError``).
    LakeNotFoundError
        No such table at ``output`` (also ``FileNotFoundError``).
    LegacyLakeError
        ``output`` holds the old manifest layout.
    ValueError
        Both owner ids, an unknown table, or ``version`` together with ``as_of``.
    """
    if dedup is not _UNSET:
        warnings.warn(
            "read_dataset(dedup=) is deprecated and ignored: the Delta tables hold each key "
            "once; it will be removed in 0.3",
            DeprecationWarning,
            stacklevel=2,
        )
    ref = _owner(owner, batch_id, collection_id)
    if version is not None and as_of is not None:
        msg = "pass version or as_of, not both"
        raise ValueError(msg)
    check_table(table)
    kind = ref.kind if ref is not None else "batch"
    owner_id = ref.id if ref is not None else None
    if owner_id is not None:
        check_id(f"{kind}_id", owner_id)
    parse_storage_url(output, storage_options, purpose="read")  # a missing local root raises
    lake = resolve_lake(output, storage_options)
    refuse_legacy(lake)
    try:
        data = _read(lake, table, kind, owner_id, version, as_of, columns, filters)
    except (ProlificIngestError, ValueError, TypeError):
        raise
    except Exception as exc:
        raise sink_error(lake, f"read table {table} of", exc) from exc
    if as_arrow:
        return data
    frame: pd.DataFrame = data.to_pandas(types_mapper=pd.ArrowDtype)
    return frame


def _open(lake: Lake, table: str, version: int | None) -> DeltaTable:
    try:
        return DeltaTable(lake.table(table), version=version, storage_options=lake.options)
    except TableNotFoundError as exc:
        if table == "rejected" and DeltaTable.is_deltatable(lake.table(LOADS), lake.options):
            raise _NoRejected from exc
        msg = f"no Delta table {table!r} in {lake.display}: load an export there first"
        raise LakeNotFoundError(msg, url=lake.shown(table)) from exc


class _NoRejected(Exception):
    """The lake exists but no load ever set lines aside."""


def _read(
    lake: Lake,
    table: str,
    kind: str,
    owner_id: str | None,
    version: int | None,
    as_of: datetime | str | None,
    columns: Sequence[str] | None,
    filters: list[tuple[str, str, Any]] | None,
) -> pa.Table:
    try:
        delta = _open(lake, table, version)
    except _NoRejected:
        schema = lake_schema(table, kind)
        return schema.empty_table().select(list(columns) if columns else schema.names)
    owner_col = f"{kind}_id"
    if as_of is not None:
        delta.load_as_version(as_of if isinstance(as_of, datetime) else str(as_of))
    elif version is None:
        pinned = consistent_version(table, read_records(lake))
        if pinned is None:  # no load has completed: nothing is committed yet
            schema = pa.schema(delta.schema().to_arrow())
            return schema.empty_table().select(list(columns) if columns else schema.names)
        if pinned != delta.version():
            logger.info(
                "%s: reading version %d, the newest one a completed load recorded (now %d)",
                lake.shown(table),
                pinned,
                delta.version(),
            )
            delta.load_as_version(pinned)
    where = list(filters or [])
    if owner_id is not None:
        where.append((owner_col, "=", owner_id))
    expression = pq.filters_to_expression(where) if where else None
    result: pa.Table = scan(delta, columns=list(columns) if columns else None, filter=expression)
    return result


def committed_exports(
    output: str,
    owner: ExportRef | None = None,
    *,
    kind: str | None = "batch",
    storage_options: dict[str, Any] | None = None,
    owner_id: str | None = None,
) -> list[dict[str, Any]]:
    """The load records of the lake at ``output``, oldest load first.

    Parameters
    ----------
    output : str
        The lake root.
    owner : ExportRef, optional
        Only this batch's or collection's loads, e.g. ``ExportRef("batch", batch_id)``.
    kind : {"batch", "collection"} or None
        Without ``owner``: which owner kind; ``None`` lists both.
    storage_options : dict, optional
        fsspec-style or delta-rs options.
    owner_id : str, optional
        Deprecated (removed in 0.3): pass ``owner=ExportRef(kind, owner_id)``.

    Returns
    -------
    list[dict]
        One dict per completed load: ``kind``, ``owner_id``, ``export_id``, ``filter``,
        ``watermark``, ``counts``, ``versions`` (table -> version), ``partition_by``,
        ``archive_sha256``, ``library_version``, ``loaded_at``. ``[]`` for an empty or
        missing lake.
    """
    if owner_id is not None:
        warn_deprecated(
            "committed_exports(owner_id=...)", f"pass ExportRef({kind or 'batch'!r}, owner_id)"
        )
        owner = ExportRef("collection" if kind == "collection" else "batch", owner_id)
    if owner is not None:
        kind, owner_id = owner.kind, owner.id
    lake = resolve_lake(output, storage_options)
    refuse_legacy(lake)
    try:
        records = read_records(lake, kind=kind, owner_id=owner_id)
    except Exception as exc:
        raise sink_error(lake, "list the loads of", exc) from exc
    return [r.to_dict() for r in records]
