"""`Export`: one loaded export — its identity, metadata, tables and archive."""

from __future__ import annotations

import functools
import io
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

import pandas as pd

from ._version import refuse_unknown, warn_deprecated
from .archive import open_archive
from .errors import ConfigurationError, SinkError, redact_url, storage_errors
from .exports import ExportFilter
from .lake._target import LakeTarget
from .tables import _views as views
from .tables._schema import TABLE_NAMES

if TYPE_CHECKING:
    from .lake import WriteResult
    from .tables import ExportTables

__all__ = ["Export"]


@dataclass(eq=False)
class Export:
    """A loaded Prolific export.

    Attributes
    ----------
    export_id : str
        The export job's id (the cache key).
    kind : {"batch", "collection"}
        What was exported.
    owner_id : str
        The batch or collection id (also available as ``batch_id`` / ``collection_id``).
    filter : ExportFilter or None
        The ``study_id`` / ``since`` / ``until`` filter the export was made with; ``None``
        when unknown (an export loaded by id that the API's job list does not describe,
        or an archive read with :func:`~prolific_ingest.read_export`).
    fetched_at : datetime
        When the archive was downloaded (UTC).
    metadata : dict
        The parsed ``batch.json`` / ``collection.json`` (``{}`` when absent).
    archive_url : str
        Path or fsspec URL of the cached ZIP.
    row_counts : dict[str, int]
        Rows per table (known without reading the tables).
    arrow : ExportTables
        The tables as pyarrow Tables with their fixed schemas, read on first use (so a
        load with ``output=`` never holds a large export in memory unless asked to).
    written : WriteResult or None
        What was committed into the Delta lake, when the export was loaded with ``output=``.

    Notes
    -----
    Each table is also an attribute: ``exp.submissions``, ``exp.tasks`` (batches only),
    ``exp.responses``, ``exp.answers``, ``exp.files``, ``exp.instructions`` and
    ``exp.rejected`` (lines set aside by ``on_bad_records="quarantine"``).
    """

    export_id: str
    kind: str
    owner_id: str
    filter: ExportFilter | None
    fetched_at: datetime
    metadata: dict[str, Any]
    archive_url: str
    row_counts: dict[str, int]
    load_tables: Callable[[], ExportTables] = field(repr=False)
    storage_options: dict[str, Any] | None = field(default=None, repr=False)
    written: WriteResult | None = field(default=None, repr=False)
    _frames: dict[str, pd.DataFrame] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # One table order whichever path built the counts (fresh parse, table cache, …).
        self.row_counts = _in_table_order(self.row_counts)

    # -- identity ---------------------------------------------------------------------------
    @property
    def batch_id(self) -> str | None:
        """The batch id, or ``None`` for a collection export."""
        return self.owner_id if self.kind == "batch" else None

    @property
    def collection_id(self) -> str | None:
        """The collection id, or ``None`` for a batch export."""
        return self.owner_id if self.kind == "collection" else None

    # -- tables -----------------------------------------------------------------------------
    @functools.cached_property
    def arrow(self) -> ExportTables:
        """The tables as pyarrow Tables with their fixed schemas (read once, then kept)."""
        return self.load_tables()

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table as an Arrow-backed pandas DataFrame, by name (built once, then reused).

        ``answers`` has one derived column more than its Parquet form: ``value_label``, the
        option label that ``batch.json`` gives the answer's value (null where none).
        """
        if self._frames is None:
            frames = self.arrow.to_pandas()
            # Convenience for analysis: the option label beside each answer value.
            frames["answers"] = views.with_labels(frames["answers"], frames["instructions"])
            self._frames = frames
        return self._frames

    def __getattr__(self, name: str) -> pd.DataFrame:
        # Only called for names not found normally: expose tables as attributes.
        if name.startswith("_") or name not in self.row_counts:
            msg = f"{type(self).__name__!s} has no attribute or table {name!r}"
            raise AttributeError(msg)
        tables = self.tables
        if name in tables:
            return tables[name]
        msg = f"{type(self).__name__!s} has no attribute or table {name!r}"
        raise AttributeError(msg)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.row_counts))

    def wide(self, *, labels: bool = True) -> pd.DataFrame:
        """One row per submission x task, one column per instruction.

        Parameters
        ----------
        labels : bool, default True
            Replace option values by their labels where ``batch.json`` defines options.

        Returns
        -------
        pandas.DataFrame
            Columns ``submission_id``, ``participant_id``, ``task_id`` (batches) and one
            column per instruction, named from its description (made unique); answers with
            several items are joined with ``"; "``.
        """
        return views.wide(self.tables, kind=self.kind, labels=labels)

    # -- archive ----------------------------------------------------------------------------
    def open_file(self, path: str) -> IO[bytes]:
        """Open an uploaded file from the cached archive, read through fsspec.

        Parameters
        ----------
        path : str
            The file's path inside the archive, as in ``files.path`` or ``answers.file_path``.

        Returns
        -------
        file object
            A binary, readable file object. Close it (or use ``with``) when done.
        """
        archive = open_archive(self.archive_url, storage_options=self.storage_options)
        try:
            inner = archive.open_file(path)
        except BaseException:
            archive.close()
            raise
        return io.BufferedReader(_ClosingReader(inner, archive))

    def extract_files(
        self, dest: str, *, storage_options: dict[str, Any] | None = None
    ) -> list[str]:
        """Write every uploaded file under ``dest`` (local path or fsspec URL), safely.

        Returns the written paths. Unsafe member names never escape ``dest``.
        """
        with open_archive(self.archive_url, storage_options=self.storage_options) as archive:
            return archive.extract_files(dest, storage_options=storage_options)

    # -- output -----------------------------------------------------------------------------
    def to_lake(
        self, output: str | os.PathLike[str] | LakeTarget, **deprecated: Any
    ) -> WriteResult:
        """Load this export into the Delta lake at ``output`` (what ``output=`` does).

        Useful for an archive read with :func:`~prolific_ingest.read_export`, or to
        rebuild a lake from the cache.

        Parameters
        ----------
        output : str, path or LakeTarget
            The lake root (local path, ``s3://``, ``gs://``, ``abfs://``), or a
            :class:`~prolific_ingest.LakeTarget` with its ``storage_options``,
            ``partition_by`` and ``overwrite`` (load again even when the lake records this
            export as loaded). ``incremental`` is a load's request, not this method's.
        **deprecated
            ``overwrite=``, ``partition_by=``, ``storage_options=`` (removed in 0.3): give
            them in ``LakeTarget``.

        Returns
        -------
        WriteResult
            The tables, versions and row counts committed.
        """
        from .pipeline._parse import write_export

        target = _lake_target(output, deprecated)
        return write_export(
            self.arrow.tables,
            target.url,
            kind=self.kind,
            owner_id=self.owner_id,
            export_id=self.export_id,
            filter=self.filter,
            overwrite=target.overwrite,
            partition_by=target.partition_by,
            storage_options=target.options,
        )

    def to_parquet(
        self,
        output: str,
        *,
        overwrite: bool = False,
        storage_options: dict[str, Any] | None = None,
        partition_by: Sequence[str] | None = None,
    ) -> dict[str, str]:
        """Write every table of this export as one plain Parquet file, for sharing.

        Layout: ``<output>/<table>.parquet`` (zstd), each table with its fixed schema,
        empty tables included. This is a copy of one export, not a lake: use
        ``output=`` on the load verbs for the Delta lake.

        Parameters
        ----------
        output : str
            A local folder or fsspec URL.
        overwrite : bool, default False
            Replace files already there (otherwise :class:`FileExistsError`).
        storage_options : dict, optional
            Passed to fsspec.
        partition_by : sequence of str, optional
            Deprecated and ignored (these are single files now); removed in 0.3.

        Returns
        -------
        dict[str, str]
            Table name -> URL of its file.
        """
        from ._parquet import write_tables

        if partition_by is not None:
            warnings.warn(
                "Export.to_parquet(partition_by=) is deprecated and ignored: it writes one "
                "plain file per table; load with output= for a partitioned Delta lake",
                DeprecationWarning,
                stacklevel=2,
            )
        shown = redact_url(output) if "://" in output else output

        def failure(detail: str) -> SinkError:
            return SinkError(f"could not write Parquet to {shown}: {detail}", url=shown)

        with storage_errors(failure):
            return write_tables(
                self.arrow.tables, output, overwrite=overwrite, storage_options=storage_options
            )

    def __repr__(self) -> str:
        """``<Export KIND ID export_id=… [filter] fetched_at=… table=rows …>``.

        Every field is ``name=value`` separated by single spaces; tables are in the fixed
        order of :data:`~prolific_ingest.tables.TABLE_NAMES`, and ``rejected`` is shown only
        when lines were set aside.
        """
        counts = [
            f"{name}={rows}"
            for name, rows in _in_table_order(self.row_counts).items()
            if name != "rejected" or rows
        ]
        flt = describe_filter(self.filter)
        fields = [
            f"export_id={self.export_id}",
            *([flt] if flt else []),
            f"fetched_at={self.fetched_at:%Y-%m-%dT%H:%M:%SZ}",
            *counts,
        ]
        return f"<Export {self.kind} {self.owner_id} {' '.join(fields)}>"


def _lake_target(
    output: str | os.PathLike[str] | LakeTarget, deprecated: dict[str, Any]
) -> LakeTarget:
    """``to_lake``'s ``output`` as a LakeTarget; the flat sink keywords are deprecated."""
    refuse_unknown("to_lake", deprecated, ("overwrite", "partition_by", "storage_options"))
    if isinstance(output, LakeTarget):
        if deprecated:
            msg = f"to_lake(): give {', '.join(deprecated)} in the LakeTarget, not beside it"
            raise ConfigurationError(msg)
        if output.incremental:
            msg = "to_lake() writes this export: incremental=True belongs to a load's output="
            raise ConfigurationError(msg)
        return output
    if deprecated:
        fields = ", ".join(f"{name}=..." for name in deprecated)
        warn_deprecated(
            f"Export.to_lake({fields})", f"pass to_lake(LakeTarget(url, {fields}))", stacklevel=3
        )
    return LakeTarget(os.fspath(output), **deprecated)


def _in_table_order(counts: dict[str, int]) -> dict[str, int]:
    """``counts`` with the tables in :data:`TABLE_NAMES` order (others after, as given)."""
    known = {name: counts[name] for name in TABLE_NAMES if name in counts}
    return known | {name: rows for name, rows in counts.items() if name not in known}


def describe_filter(flt: ExportFilter | None) -> str:
    """``study_id=… since=… until=…`` for the parts of the filter that are set."""
    if flt is None:
        return "filter=unknown"
    parts = [
        f"{name}={value.strftime('%Y-%m-%dT%H:%M:%SZ') if isinstance(value, datetime) else value}"
        for name, value in (("study_id", flt.study_id), ("since", flt.since), ("until", flt.until))
        if value is not None
    ]
    return " ".join(parts)


class _ClosingReader(io.RawIOBase):
    """A readable stream over an archive member that also closes the archive."""

    def __init__(self, inner: IO[bytes], archive: Any) -> None:
        super().__init__()
        self._inner = inner
        self._archive = archive

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._inner.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._inner.close()
            finally:
                self._archive.close()
        super().close()
