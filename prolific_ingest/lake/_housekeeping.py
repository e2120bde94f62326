"""Housekeeping of every Delta table of a lake: history, vacuum, optimize (delta-rs defaults)."""

from __future__ import annotations

from typing import Any

from deltalake import DeltaTable

from ..errors import LakeNotFoundError, ProlificIngestError
from ..tables._schema import TABLE_NAMES
from ._layout import LOADS
from ._legacy import refuse_legacy
from ._storage import Lake, resolve_lake, sink_error

__all__ = ["lake_history", "optimize_lake", "vacuum_lake"]


def _tables(lake: Lake) -> dict[str, DeltaTable]:
    found = {
        name: DeltaTable(lake.table(name), storage_options=lake.options)
        for name in (*TABLE_NAMES, LOADS)
        if DeltaTable.is_deltatable(lake.table(name), lake.options)
    }
    if not found:
        msg = f"no Delta tables in {lake.display}: load an export there first"
        raise LakeNotFoundError(msg, url=lake.display)
    return found


def _each(output: str, storage_options: dict[str, Any] | None, doing: str) -> dict[str, Any]:
    lake = resolve_lake(output, storage_options)
    refuse_legacy(lake)
    try:
        return _tables(lake)
    except ProlificIngestError:
        raise
    except Exception as exc:
        raise sink_error(lake, doing, exc) from exc


def lake_history(
    output: str, *, limit: int | None = None, storage_options: dict[str, Any] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Each table's commit history, newest first (delta-rs ``history()``).

    Parameters
    ----------
    output : str
        The lake root.
    limit : int, optional
        At most this many commits per table.
    storage_options : dict, optional
        fsspec-style or delta-rs options.

    Returns
    -------
    dict[str, list[dict]]
        Table name -> commits (``version``, ``timestamp``, ``operation``,
        ``prolific_ingest.export_id`` …).
    """
    tables = _each(output, storage_options, "read the history of")
    return {name: table.history(limit) for name, table in tables.items()}


def vacuum_lake(
    output: str,
    *,
    retention_hours: int | None = None,
    dry_run: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, list[str]]:
    """Delete files no table version within the retention period references.

    Parameters
    ----------
    output : str
        The lake root.
    retention_hours : int, optional
        Default: the table's ``delta.deletedFileRetentionDuration`` (delta-rs: 7 days).
        Shorter periods are refused by delta-rs (they break time travel and readers
        still on an old version).
    dry_run : bool, default True
        Only list what would be deleted.
    storage_options : dict, optional
        fsspec-style or delta-rs options.

    Returns
    -------
    dict[str, list[str]]
        Table name -> the files deleted (or that would be).
    """
    tables = _each(output, storage_options, "vacuum")
    return {
        name: table.vacuum(retention_hours=retention_hours, dry_run=dry_run)
        for name, table in tables.items()
    }


def optimize_lake(
    output: str,
    *,
    target_size: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Compact each table's small files (one commit per table; data unchanged).

    Parameters
    ----------
    output : str
        The lake root.
    target_size : int, optional
        Target file size in bytes (delta-rs default: 100 MiB).
    storage_options : dict, optional
        fsspec-style or delta-rs options.

    Returns
    -------
    dict[str, dict]
        Table name -> delta-rs metrics (``numFilesAdded``, ``numFilesRemoved`` …).
    """
    tables = _each(output, storage_options, "optimize")
    return {name: table.optimize.compact(target_size=target_size) for name, table in tables.items()}
