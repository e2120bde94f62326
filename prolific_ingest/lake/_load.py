"""One export into the lake: every table once (one commit each), then the load record.

If the process dies part-way, each table is at its previous or its new version (a
Delta commit is atomic), no load record names the export, so readers of the
consistent state do not see it (:mod:`._read`) and the next run loads it again: the
MERGE leaves rows already there unchanged and adds the rest, then records the load.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from .._parquet import check_id
from .._version import __version__
from ..errors import ProlificIngestError
from . import _checkpoints
from ._layout import MERGE_KEYS, check_partition_by, write_order
from ._legacy import refuse_legacy
from ._loads import LoadRecord, append_record, read_records
from ._spool import Spool
from ._storage import Lake, resolve_lake, sink_error
from ._writer import TableWrite, recount_responses, write_table

__all__ = ["WriteResult", "write_export"]

logger = logging.getLogger("prolific_ingest.lake")


@dataclass(frozen=True)
class WriteResult:
    """What one load committed into the lake (or found already committed).

    Attributes
    ----------
    output : str
        The lake root (without credentials).
    kind : str
        ``"batch"`` or ``"collection"``.
    owner_id, export_id : str
        The owner partition and the export.
    tables : dict[str, str]
        Table name -> URL of its Delta table.
    counts : dict[str, int]
        Table name -> rows in this export.
    versions : dict[str, int]
        Table name -> the table version this load committed (or recorded, if skipped).
    modes : dict[str, str]
        Table name -> ``"append"`` (the partition was empty) or ``"merge"``.
    skipped : bool
        ``True`` when the export was already loaded and ``overwrite=False``.
    """

    output: str
    kind: str
    owner_id: str
    export_id: str
    tables: dict[str, str]
    counts: dict[str, int]
    versions: dict[str, int]
    modes: dict[str, str]
    skipped: bool


def write_export(
    data: Mapping[str, Any] | Iterable[tuple[str, Any]],
    output: str,
    *,
    kind: str,
    owner_id: str,
    export_id: str,
    filter: dict[str, Any] | None = None,
    archive_sha256: str | None = None,
    overwrite: bool = False,
    partition_by: Sequence[str] = (),
    storage_options: dict[str, Any] | None = None,
) -> WriteResult:
    """Load one export's tables into the Delta lake at ``output``.

    Parameters
    ----------
    data : Mapping[str, pa.Table] or Iterable[tuple[str, pa.RecordBatch]]
        The tables, whole or as a stream (consumed once). A stream's rows are read back
        from the files of a :class:`~._spool.StagedBatches` stream, else spooled to local
        Parquet files first.
    output : str
        The lake root: a local path, ``file://``, ``s3://``, ``gs://`` or ``abfs://`` URL.
    kind : {"batch", "collection"}
        The owner kind.
    owner_id, export_id : str
        The owner partition value and the export.
    filter : dict, optional
        The export's filter (``ExportFilter.to_json()``), kept in the load record.
    archive_sha256 : str, optional
        Kept in the load record.
    overwrite : bool
        Load again even when a record says this export is loaded.
    partition_by : sequence of str
        ``()`` or ``("date",)``.
    storage_options : dict, optional
        fsspec-style or delta-rs options (see :func:`.delta_storage_options`).

    Returns
    -------
    WriteResult

    Raises
    ------
    LegacyLakeError
        ``output`` holds the old manifest layout.
    SinkError
        A storage or delta-rs failure (secrets removed from the message).
    """
    check_id(f"{kind} id", owner_id)
    check_id("export_id", export_id)
    by = check_partition_by(partition_by)
    lake = resolve_lake(output, storage_options)
    refuse_legacy(lake)
    names = write_order(kind)
    try:
        if not overwrite:
            done = _recorded(lake, kind, owner_id, export_id)
            if done is not None:
                logger.info("export %s already loaded into %s: skipped", export_id, lake.display)
                return _result(
                    lake, done.counts, done.versions, {}, kind, owner_id, export_id, True
                )
        with Spool(
            kind=kind, owner_id=owner_id, export_id=export_id, tables=names, partition_by=by
        ) as spool:
            spool.fill(data)
            writes = _commit_tables(lake, spool, names, by)
            record = LoadRecord(
                kind=kind,
                owner_id=owner_id,
                export_id=export_id,
                filter=filter,
                watermark=spool.watermark,
                counts={n: spool.counts[n] for n in names if n in writes},
                versions={n: w.version for n, w in writes.items()},
                partition_by=by,
                archive_sha256=archive_sha256,
                library_version=__version__,
                loaded_at=datetime.now(UTC),
            )
            _checkpoints.reached("before-record")
            append_record(lake, record)
            _checkpoints.reached("after-record")
    except (ProlificIngestError, ValueError, TypeError):
        raise
    except Exception as exc:
        raise sink_error(lake, f"load export {export_id} into", exc) from exc
    logger.info(
        "export %s loaded into %s (%s)",
        export_id,
        lake.display,
        ", ".join(f"{n}={w.mode}@v{w.version}" for n, w in writes.items()),
    )
    return _result(
        lake,
        record.counts,
        record.versions,
        {n: w.mode for n, w in writes.items()},
        kind,
        owner_id,
        export_id,
        False,
    )


def _recorded(lake: Lake, kind: str, owner_id: str, export_id: str) -> LoadRecord | None:
    for record in reversed(read_records(lake, kind=kind, owner_id=owner_id)):
        if record.export_id == export_id:
            return record
    return None


def _commit_tables(
    lake: Lake, spool: Spool, names: list[str], by: tuple[str, ...]
) -> dict[str, TableWrite]:
    writes: dict[str, TableWrite] = {}
    for name in names:
        if name == "rejected" and not spool.counts[name]:
            continue  # only written when lines were set aside

        def source(merging: bool, name: str = name) -> pa.RecordBatchReader:
            if name == "submissions" and merging:
                table = recount_responses(
                    lake, spool.read(name), kind=spool.kind, owner_id=spool.owner_id
                )
                return table.to_reader()
            return _watched(spool.reader(name), name)

        def source_keys(name: str = name) -> pa.Table:
            return spool.read_columns(name, MERGE_KEYS[name])

        writes[name] = write_table(
            lake,
            name,
            source,
            source_keys=source_keys,
            schema=spool.schemas[name],
            kind=spool.kind,
            owner_id=spool.owner_id,
            export_id=spool.export_id,
            partition_by=by,
        )
    return writes


def _watched(reader: pa.RecordBatchReader, name: str) -> pa.RecordBatchReader:
    """``reader`` with a kill-test checkpoint after its first batch (a no-op otherwise)."""

    def batches() -> Iterator[pa.RecordBatch]:
        for i, batch in enumerate(reader):
            yield batch
            if i == 0:
                _checkpoints.reached(f"mid-write:{name}")

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


def _result(
    lake: Lake,
    counts: dict[str, int],
    versions: dict[str, int],
    modes: dict[str, str],
    kind: str,
    owner_id: str,
    export_id: str,
    skipped: bool,
) -> WriteResult:
    return WriteResult(
        output=lake.display,
        kind=kind,
        owner_id=owner_id,
        export_id=export_id,
        tables={n: lake.shown(n) for n in versions},
        counts=dict(counts),
        versions=dict(versions),
        modes=modes,
        skipped=skipped,
    )
