"""Write export tables as Parquet datasets on any fsspec URL, with a commit protocol.

Layout (Hive style) under ``output`` (a local path, ``file://``, ``memory://``,
``s3://``, ``gs://`` ...)::

    <output>/<table>/<owner_col>=<owner_id>/export_id=<export_id>/part-0.parquet
    <output>/<table>/<owner_col>=<owner_id>/export_id=<export_id>/date=<YYYY-MM-DD>/part-0.parquet
                                                            (with partition_by=("date",))
    <output>/_manifests/<owner_col>=<owner_id>/<export_id>.json     (the commit record)
    <output>/_staging/<token>/...                                   (in-flight writes)

``owner_col`` is ``batch_id`` or ``collection_id``. Files are zstd-compressed with
row groups of ``row_group_rows`` rows.

**Partition columns are not stored in the files.** ``submissions`` (``<owner>_id``)
and ``tasks`` (``batch_id``) carry the owner id as a data column; it is dropped from
the file data and restored from the ``<owner_col>=`` directory by every Hive-aware
reader (the Hive/Spark convention). Keeping it in the file as well works in pyarrow
and DuckDB but Dask refuses a dataset whose files hold some but not all partition
columns, so dropping it is the one choice that gives identical rows in pyarrow.dataset,
DuckDB (``hive_partitioning=true``) and Dask. Rows whose owner column disagrees with
``owner_id`` are refused; nulls there read back as ``owner_id``. The files of every
export of a table therefore have the same schema (the logical schema minus the owner
column), including empty exports: a table without rows still gets a zero-row file.
Pass an explicit partitioning schema (all strings) to pyarrow/Dask if ids could look
numeric: ``ds.partitioning(pa.schema([("batch_id", pa.string()), ("export_id",
pa.string())]), flavor="hive")``.

**Date partitioning** (``partition_by=("date",)``) adds ``date=<YYYY-MM-DD>`` (UTC day
of ``created_at``) *below* ``export_id=`` so each export stays one prefix. It applies
only to tables with a timestamp ``created_at`` column (``responses``); ``answers`` and
the rest have none and ignore it. Rows with a null ``created_at`` go to
``date=__HIVE_DEFAULT_PARTITION__`` (read as null). A date-partitioned table with zero
rows gets **no** file (any placeholder date would be read as a row value, and Dask
cannot infer a type from a null-only partition); the manifest still records its
schema, so :func:`read_dataset` returns the right columns. Use one ``partition_by``
per output: mixing depths confuses Hive discovery in other engines.

**Commit protocol.** Data is streamed into ``_staging/<token>/`` (a marker
``_writer.json`` is written first), then each file is moved into place (a rename
locally, copy + delete on object stores), then the manifest is written (staged and
moved, so it appears whole), then staging is removed. An export without a manifest
is invisible to :func:`read_dataset` and :func:`committed_exports` and is removed by
:func:`cleanup` (also run, for the same owner, at the start of every write). With
``overwrite=True`` the old manifest is removed first, then the old files, then the
new files move in and the new manifest is written (if that commit fails, the
export is absent rather than half visible: write it again). Readers read exactly the
files a manifest lists. Staging older than :data:`DEFAULT_STALE_AFTER` counts as
abandoned. Two processes writing the *same* export at the same time are not supported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pandas as pd
import pyarrow as pa

from . import _sinks_cleanup as _cleanup
from . import _sinks_commit as _commit
from . import _sinks_manifest as _manifest
from ._sinks_layout import (
    KINDS,
    SUPPORTED_PARTITIONS,
    Location,
    check_id,
    check_table,
    manifest_rel,
    owner_col,
    resolve,
    safe_url,
    scrub_password,
)
from ._sinks_read import DEDUP_KEYS, export_table, to_frame
from ._urls import parse_storage_url
from .errors import ProlificIngestError, SinkError, storage_errors

__all__ = [
    "DEDUP_KEYS",
    "DEFAULT_STALE_AFTER",
    "WriteResult",
    "cleanup",
    "committed_exports",
    "read_dataset",
    "write_parquet",
]

log = logging.getLogger(__name__)

#: Staging older than this is considered abandoned by :func:`cleanup`.
DEFAULT_STALE_AFTER = timedelta(hours=1)


@dataclass(frozen=True)
class WriteResult:
    """What :func:`write_parquet` committed (or found already committed).

    Attributes
    ----------
    output : str
        The output root as given (trailing ``/`` removed).
    kind : str
        ``"batch"`` or ``"collection"``.
    owner_id, export_id : str
        The partition values.
    paths : dict[str, list[str]]
        Table name -> URLs of its committed files.
    counts : dict[str, int]
        Table name -> number of rows.
    manifest_path : str
        URL of the manifest.
    skipped : bool
        ``True`` when the export was already committed and ``overwrite=False``.
    """

    output: str
    kind: str
    owner_id: str
    export_id: str
    paths: dict[str, list[str]]
    counts: dict[str, int]
    manifest_path: str
    skipped: bool


def _result(loc: Location, manifest: Mapping[str, Any], rel: str, *, skipped: bool) -> WriteResult:
    return WriteResult(
        output=loc.given,
        kind=manifest["kind"],
        owner_id=manifest["owner_id"],
        export_id=manifest["export_id"],
        paths={t: [loc.url(p) for p in ps] for t, ps in manifest["files"].items()},
        counts={t: int(n) for t, n in (manifest.get("counts") or {}).items()},
        manifest_path=loc.url(rel),
        skipped=skipped,
    )


def write_parquet(
    data: Mapping[str, Any] | Iterable[tuple[str, Any]],
    output: str,
    *,
    kind: str,
    owner_id: str,
    export_id: str,
    schemas: Mapping[str, Any],
    overwrite: bool = False,
    partition_by: Sequence[str] = (),
    storage_options: dict[str, Any] | None = None,
    manifest_extra: Mapping[str, Any] | None = None,
    row_group_rows: int = 131072,
) -> WriteResult:
    """Write one export's tables under ``output`` and commit them with a manifest.

    Parameters
    ----------
    data : Mapping[str, pa.Table] or Iterable[tuple[str, pa.RecordBatch]]
        The tables, whole or as a stream of ``(table_name, batch)``; streams are
        written incrementally (memory stays about one row group per open file).
    output : str
        Local path or fsspec URL of the dataset root.
    kind : {"batch", "collection"}
        Selects the owner partition key (``batch_id`` / ``collection_id``).
    owner_id, export_id : str
        Partition values (letters, digits, ``.``, ``_``, ``-``).
    schemas : Mapping[str, pa.Schema]
        Schema of every table to write; each one gets a file even without rows.
        Batches are checked against it (same column names; types cast safely).
    overwrite : bool
        Replace an already committed export instead of returning it unchanged.
    partition_by : Sequence[str]
        ``()`` or ``("date",)``; see the module docstring.
    storage_options : dict, optional
        Passed to fsspec (credentials, endpoint ...).
    manifest_extra : Mapping[str, Any], optional
        Merged into the manifest. ``archive_sha256``, ``filter`` and ``watermark``
        fill those documented fields; when no ``watermark`` is given it is the
        largest ``responses.created_at``. Reserved keys (``counts``, ``files`` ...)
        are refused.
    row_group_rows : int
        Rows per Parquet row group.

    Returns
    -------
    WriteResult
        With ``skipped=True`` when the export was already committed.

    Raises
    ------
    ValueError
        Invalid ``kind``, ids, table names, ``partition_by`` or reserved extras.
    SinkError
        Anything failed while writing or committing (``__cause__`` is the original);
        the staging prefix is removed and nothing becomes visible.
    """
    col = owner_col(kind)
    check_id(f"{kind} id", owner_id)
    check_id("export_id", export_id)
    for name in schemas:
        check_table(name)
    unknown = sorted(set(partition_by) - set(SUPPORTED_PARTITIONS))
    if unknown:
        msg = f"unsupported partition_by {unknown}; supported: {SUPPORTED_PARTITIONS}"
        raise ValueError(msg)
    if row_group_rows < 1:
        msg = "row_group_rows must be positive"
        raise ValueError(msg)
    extra_clash = sorted(_manifest.RESERVED.intersection(manifest_extra or {}))
    if extra_clash:
        msg = f"manifest_extra may not set reserved manifest keys {extra_clash}"
        raise ValueError(msg)

    with storage_errors(_failure(output, "open the output")):
        loc = resolve(output, storage_options)
    m_rel = manifest_rel(col, owner_id, export_id)
    try:
        existing = _manifest.read(loc, m_rel)
        if existing is not None and not overwrite:
            log.info("export %s already committed in %s: skipped", export_id, loc.display)
            return _result(loc, existing, m_rel, skipped=True)
        _, remaining = _cleanup.sweep(
            loc, [f"{t}/{col}={owner_id}" for t in schemas], DEFAULT_STALE_AFTER
        )
    except ProlificIngestError:
        raise
    except Exception as exc:  # OSError, a backend's own (credentials ...), a bad manifest
        raise _commit.sink_error(loc, export_id, exc) from exc

    manifest = _commit.stage_and_commit(
        loc,
        data,
        kind=kind,
        owner_id=owner_id,
        export_id=export_id,
        schemas=schemas,
        existing=existing,
        leftovers=[rel for rel, key in remaining.items() if key == (col, owner_id, export_id)],
        partition_by=partition_by,
        manifest_extra=manifest_extra,
        row_group_rows=row_group_rows,
    )
    return _result(loc, manifest, m_rel, skipped=False)


def committed_exports(
    output: str,
    *,
    kind: str | None = "batch",
    owner_id: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """List the committed exports (their manifests) under ``output``.

    Parameters
    ----------
    output : str
        Local path or fsspec URL of the dataset root.
    kind : {"batch", "collection"} or None
        Which owner kind to list; ``None`` lists both.
    owner_id : str, optional
        Only this batch / collection.
    storage_options : dict, optional
        Passed to fsspec.

    Returns
    -------
    list[dict]
        Manifests (plus ``manifest_path``), oldest first: by ``watermark`` (exports
        without one first), then ``created_at``, then ``export_id``.
    """
    kinds = list(KINDS) if kind is None else [kind]
    for k in kinds:
        owner_col(k)
    if owner_id is not None:
        check_id("owner_id", owner_id)
    with storage_errors(_failure(output, "list the exports in")):
        loc = resolve(output, storage_options)
        return _manifest.list_manifests(loc, kinds, owner_id)


def read_dataset(
    output: str,
    table: str,
    *,
    batch_id: str | None = None,
    collection_id: str | None = None,
    storage_options: dict[str, Any] | None = None,
    dedup: bool = True,
) -> pd.DataFrame:
    """Read one table of every committed export under ``output`` as one DataFrame.

    Parameters
    ----------
    output : str
        Local path or fsspec URL of the dataset root.
    table : str
        Table name (``responses``, ``answers`` ...).
    batch_id, collection_id : str, optional
        Restrict to one batch or one collection (at most one of them). Without
        either, every committed export of both kinds is read.
    storage_options : dict, optional
        Passed to fsspec.
    dedup : bool
        Keep each row once (keys in :data:`DEDUP_KEYS`), the row of the latest
        export (in :func:`committed_exports` order) winning. For ``submissions``,
        ``n_responses`` is then recounted from the de-duplicated ``responses``, since a
        windowed (incremental) export only holds part of a submission's responses.

    Returns
    -------
    pandas.DataFrame
        Arrow-backed (``pd.ArrowDtype``) columns of the table, plus ``export_id``
        and the owner id column(s). Empty without columns when nothing is committed.

    Raises
    ------
    ValueError
        Both ids given, or exports are committed but none has ``table``.
    ConfigurationError
        ``output`` is malformed; :class:`~prolific_ingest.MissingPathError` (also
        ``FileNotFoundError``) when it is a local path that does not exist.
    OSError
        A file listed by a manifest cannot be read.
    SinkError
        The storage backend failed with an error of its own (missing credentials,
        ``s3fs`` not installed ...), kept as ``__cause__``.
    """
    if batch_id is not None and collection_id is not None:
        msg = "pass batch_id or collection_id, not both"
        raise ValueError(msg)
    check_table(table)
    root = parse_storage_url(output, storage_options, purpose="read")  # a missing path raises
    output, storage_options = root.url, root.storage_options
    kind: str | None = None
    owner_id = batch_id if batch_id is not None else collection_id
    if batch_id is not None:
        kind = "batch"
    elif collection_id is not None:
        kind = "collection"
    manifests = committed_exports(
        output, kind=kind, owner_id=owner_id, storage_options=storage_options
    )
    if not manifests:
        return pd.DataFrame()
    with storage_errors(_failure(output, "read")):
        loc = resolve(output, storage_options)
        parts = [t for m in manifests if (t := export_table(loc, m, table)) is not None]
    if not parts:
        known = sorted({name for m in manifests for name in m["files"]})
        msg = f"no committed export in {safe_url(output)} has table {table!r} (tables: {known})"
        raise ValueError(msg)
    frame = to_frame(parts, table, dedup=dedup)
    if table == "submissions" and dedup and len(frame):
        frame = _recount_responses(frame, output, batch_id, collection_id, storage_options)
    return frame


def _recount_responses(
    submissions: pd.DataFrame,
    output: str,
    batch_id: str | None,
    collection_id: str | None,
    storage_options: dict[str, Any] | None,
) -> pd.DataFrame:
    """Recompute ``n_responses`` from the de-duplicated ``responses`` of every export.

    A windowed export (``since`` / ``study_id``) carries only part of a submission's
    responses; the union's count is the true one.
    """
    responses = read_dataset(
        output,
        "responses",
        batch_id=batch_id,
        collection_id=collection_id,
        storage_options=storage_options,
    )
    if not len(responses):
        return submissions
    counts = responses.groupby("submission_id", dropna=False).size()
    recounted = submissions["submission_id"].map(counts).fillna(0).astype("int64")
    out = submissions.copy()
    out["n_responses"] = recounted.astype(pd.ArrowDtype(pa.int64()))
    return out


def cleanup(
    output: str,
    *,
    storage_options: dict[str, Any] | None = None,
    older_than: timedelta | float = DEFAULT_STALE_AFTER,
) -> list[str]:
    """Remove abandoned writes under ``output``.

    Removes staging prefixes older than ``older_than`` and every export partition
    that has no manifest and no running writer (a staging marker younger than
    ``older_than``). Committed exports are never touched.

    Parameters
    ----------
    output : str
        Local path or fsspec URL of the dataset root.
    storage_options : dict, optional
        Passed to fsspec.
    older_than : timedelta or float
        Age (or seconds) after which staging counts as abandoned; ``0`` removes all.

    Returns
    -------
    list[str]
        URLs of the removed prefixes.
    """
    age = older_than if isinstance(older_than, timedelta) else timedelta(seconds=older_than)
    with storage_errors(_failure(output, "clean up")):
        loc = resolve(output, storage_options)
        return _cleanup.sweep(loc, _cleanup.top_level_tables(loc), age)[0]


def _failure(output: str, doing: str) -> Callable[[str], SinkError]:
    """Build the :class:`SinkError` for a storage backend's own exception."""
    shown = safe_url(output)

    def make(detail: str) -> SinkError:
        detail = scrub_password(output, detail)
        return SinkError(f"could not {doing} {shown}: {detail}", url=shown)

    return make
