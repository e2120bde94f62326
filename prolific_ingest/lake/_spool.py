"""One export's rows per table, in the lake's schemas, re-readable for each commit attempt.

The parser streams ``(table, batch)`` pairs of every table interleaved; a Delta write
consumes one table at a time, and a commit that lost a race is retried from the same
rows. So the rows of each table must be readable again after the stream ends. They are
read from, in this order of preference:

- the tables themselves, when given as a ``{table: pa.Table}`` mapping (a warm load,
  ``Export.to_lake``): already in memory;
- the parsed-table cache's files, when the stream is a :class:`StagedBatches` (a cold
  load with a local cache): the stream is only checked while it is read, and the files
  its tee wrote are read back table by table (through :class:`TableBatches`: the lake
  does not know their format);
- otherwise a spool: one temporary Parquet file per table in a process-owned folder
  ``prolific-ingest-lake-<pid>-*`` of the temporary directory, removed on exit. A folder
  left by a killed process (its pid no longer running, or older than
  :data:`STALE_SECONDS`) is removed when the next spool starts.

Every batch is checked on the way in (known table, the owner id column agrees with the
export's) so that nothing is committed for a bad export, and conformed to the table's
lake schema on the way out (the owner id and ``export_id`` columns filled, ``date``
derived) in batches of :data:`READ_BATCH_ROWS` rows.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .._parquet import BUFFER_BYTES, BufferBudget, RowGroupWriter, conform, iter_batches
from ..tables._schema import owner_column, schema_for
from ._layout import dated, lake_schema

__all__ = ["PREFIX", "STALE_SECONDS", "Spool", "StagedBatches", "TableBatches", "sweep_stale"]

logger = logging.getLogger("prolific_ingest.lake")

ROW_GROUP_ROWS = 131072
#: Rows per batch handed to delta-rs: its writer buffers what it is given, so small
#: batches keep the write's memory flat (measured: 8k rows ~ 215 MB less than 128k).
READ_BATCH_ROWS = 8192
#: Name prefix of the spool folders in the temporary directory (then ``<pid>-``).
PREFIX = "prolific-ingest-lake-"
#: A spool folder older than this is stale even if its pid runs (the pid was reused).
STALE_SECONDS = 24 * 3600
_OWNED = re.compile(rf"^{re.escape(PREFIX)}(\d+)-")


class TableBatches(Protocol):
    """One open file of a table's rows, re-readable from the start."""

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Every batch of the table (export schema), in order, from the start."""
        ...

    def close(self) -> None:
        """Close the file."""
        ...


@runtime_checkable
class StagedBatches(Protocol):
    """A ``(table, batch)`` stream whose rows also land in local files.

    When :attr:`local`, once the stream is read to its end, :meth:`files` opens one file
    per table (with exactly the export's table schema) holding every row the stream
    yielded, or returns ``None`` when they could not be written; then :meth:`replay`
    gives the same rows again as a fresh stream. When not :attr:`local` (the files are
    on an object store), the stream is spooled as it is read.
    """

    local: bool

    def __iter__(self) -> Iterator[tuple[str, pa.RecordBatch]]: ...

    def files(self) -> Mapping[str, TableBatches] | None:
        """Table name -> its open file (closed by the caller), or ``None`` when not written."""
        ...

    def replay(self) -> Iterable[tuple[str, pa.RecordBatch]]:
        """The same rows again (a second read of the archive)."""
        ...


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_stale(root: str | os.PathLike[str] | None = None, *, now: float | None = None) -> int:
    """Remove spool folders left by processes that are gone; return how many.

    A folder ``prolific-ingest-lake-<pid>-*`` is stale when no process ``<pid>`` runs,
    or when it was not modified for :data:`STALE_SECONDS`; a folder of the old naming
    (no pid) only by age. The current process's own folders are never touched.
    """
    base = Path(root if root is not None else tempfile.gettempdir())
    now = time.time() if now is None else now
    removed = 0
    try:
        entries = [p for p in base.iterdir() if p.name.startswith(PREFIX)]
    except OSError:
        return 0
    for path in entries:
        match = _OWNED.match(path.name)
        pid = int(match.group(1)) if match else None
        if pid == os.getpid():
            continue
        try:
            if not path.is_dir() or path.is_symlink():
                continue
            age = now - path.stat().st_mtime
        except OSError:
            continue
        if (pid is not None and not _running(pid)) or age > STALE_SECONDS:
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                removed += 1
                logger.info("removed the stale lake spool %s", path)
    return removed


class Spool:
    """The rows of one export per table, in the lake's schemas (see the module docstring).

    Use as a context manager: a spool folder, if one was needed, is removed on exit.
    """

    def __init__(
        self,
        *,
        kind: str,
        owner_id: str,
        export_id: str,
        tables: Sequence[str],
        partition_by: Sequence[str],
    ) -> None:
        self.kind, self.owner_id, self.export_id = kind, owner_id, export_id
        self._owner = owner_column(kind)
        self._partition_by = tuple(partition_by)
        self.schemas = {name: lake_schema(name, kind, partition_by) for name in tables}
        self._input = {name: schema_for(name, kind) for name in tables}
        self.counts: dict[str, int] = dict.fromkeys(tables, 0)
        self.watermark: datetime | None = None
        #: Where the rows are read from: ``"memory"``, ``"table-cache"`` or ``"spool"``.
        self.source = ""
        self._tables: dict[str, list[pa.RecordBatch]] = {}
        self._files: dict[str, TableBatches] = {}
        self._dir: Path | None = None
        self._writers: dict[str, RowGroupWriter] = {}
        self._budget = BufferBudget(BUFFER_BYTES)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Abort open writers and remove the spool folder (if one was made)."""
        for writer in self._writers.values():
            writer.abort()
        self._writers.clear()
        self._tables.clear()
        for handle in self._files.values():
            handle.close()
        self._files.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    # -- filling ---------------------------------------------------------------------------------
    def fill(self, data: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
        """Consume ``data`` (a ``{table: pa.Table}`` mapping or a ``(table, batch)`` stream)."""
        if isinstance(data, Mapping):
            self.source = "memory"
            self._scan(data, keep=True)
        elif isinstance(data, StagedBatches) and data.local:
            self._scan(data, keep=False)
            # Opened now: the files stay readable for every attempt, whatever happens to
            # their names meanwhile.
            files = data.files()
            if files is not None and all(name in files for name in self.schemas):
                self.source = "table-cache"
                self._files = dict(files)
            else:
                for handle in (files or {}).values():
                    handle.close()
                logger.info("export %s: table files missing, reading it again", self.export_id)
                self._restart()
                self._spool(data.replay())
        else:
            self._spool(data)

    def _restart(self) -> None:
        self.counts = dict.fromkeys(self.counts, 0)
        self.watermark = None

    def _checked(self, data: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> Iterator[Any]:
        """``(table, batch)`` pairs of ``data``, each checked and counted."""
        for name, batch in iter_batches(data, ROW_GROUP_ROWS):
            if name not in self.schemas:
                msg = f"table {name!r} has no lake schema (known: {sorted(self.schemas)})"
                raise ValueError(msg)
            batch = conform(name, batch, self._input[name])
            self._check(name, batch)
            self.counts[name] += batch.num_rows
            yield name, batch

    def _scan(self, data: Mapping[str, Any] | Iterable[tuple[str, Any]], *, keep: bool) -> None:
        if keep:
            self._tables = {name: [] for name in self.schemas}
        for name, batch in self._checked(data):
            if keep:
                self._tables[name].append(batch)

    def _spool(self, data: Iterable[tuple[str, Any]]) -> None:
        self.source = "spool"
        sweep_stale()
        self._dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
        for name, batch in self._checked(data):
            self._writer(name).write(self._to_lake(name, batch))
        for name in self.schemas:
            self._writer(name)  # every table gets a file, empty ones included
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def _path(self, table: str) -> Path:
        assert self._dir is not None
        return self._dir / f"{table}.parquet"

    def _writer(self, table: str) -> RowGroupWriter:
        writer = self._writers.get(table)
        if writer is None:
            fh = open(self._path(table), "wb")  # noqa: SIM115 - closed by the writer
            writer = RowGroupWriter(fh, self.schemas[table], ROW_GROUP_ROWS, self._budget)
            self._writers[table] = writer
        return writer

    def _check(self, table: str, batch: pa.RecordBatch) -> None:
        if self._owner in batch.schema.names:
            column = batch.column(self._owner)
            wrong = pc.sum(pc.fill_null(pc.not_equal(column, self.owner_id), False)).as_py()
            if wrong:
                msg = (
                    f"table {table!r}: {wrong} row(s) have {self._owner} different from "
                    f"the export's {self.owner_id!r}"
                )
                raise ValueError(msg)
        if table == "responses" and batch.num_rows:
            top = pc.max(batch.column("created_at")).as_py()
            if top is not None and (self.watermark is None or top > self.watermark):
                self.watermark = top

    def _to_lake(
        self, table: str, batch: pa.RecordBatch, columns: Sequence[str] | None = None
    ) -> pa.RecordBatch:
        """``batch`` (export schema, or some of its columns) in the lake's schema."""
        n = batch.num_rows
        if self._owner in batch.schema.names:
            index = batch.schema.get_field_index(self._owner)
            column = pc.fill_null(batch.column(self._owner), pa.scalar(self.owner_id))
            batch = batch.set_column(index, self._owner, column)
        else:
            batch = batch.append_column(self._owner, pa.array([self.owner_id] * n, pa.string()))
        batch = batch.append_column("export_id", pa.array([self.export_id] * n, pa.string()))
        if dated(table, self._partition_by) and "created_at" in batch.schema.names:
            ts = batch.column("created_at")
            days = ts.cast(pa.timestamp(ts.type.unit)).cast(pa.date32())
            batch = batch.append_column("date", days)
        schema = self.schemas[table]
        if columns is None:
            return batch.select(schema.names).cast(schema)
        fields = [schema.field(c) for c in columns]
        return batch.select(list(columns)).cast(pa.schema(fields))

    # -- reading ---------------------------------------------------------------------------------
    def _batches(self, table: str, columns: Sequence[str] | None = None) -> Iterator[Any]:
        """The rows of ``table`` in the lake's schema (only ``columns``, if given)."""
        if self.source == "spool":
            parquet = pq.ParquetFile(self._path(table))
            schema = self.schemas[table]
            if columns is not None:
                schema = pa.schema([schema.field(c) for c in columns])
            for batch in _row_group_batches(parquet, columns):
                yield batch.cast(schema)
            return
        read: list[str] | None = None
        if columns is not None:
            wanted = set(columns) | ({"created_at"} if "date" in columns else set())
            read = [c for c in self._input[table].names if c in wanted]
        if self.source == "memory":
            batches: Iterable[pa.RecordBatch] = self._tables[table]
        else:
            schema = self._input[table]
            batches = (conform(table, b, schema) for b in self._files[table].batches())
        for batch in batches:
            part = batch.select(read) if read is not None else batch
            for offset in range(0, part.num_rows, READ_BATCH_ROWS):
                yield self._to_lake(table, part.slice(offset, READ_BATCH_ROWS), columns)

    def reader(self, table: str) -> pa.RecordBatchReader:
        """A stream over the rows of ``table`` (re-readable: one per attempt)."""
        return pa.RecordBatchReader.from_batches(self.schemas[table], self._batches(table))

    def read(self, table: str) -> pa.Table:
        """The rows of ``table`` in memory (for the small tables only)."""
        return pa.Table.from_batches(list(self._batches(table)), schema=self.schemas[table])

    def read_columns(self, table: str, columns: Sequence[str]) -> pa.Table:
        """Only ``columns`` of the rows of ``table`` (the merge keys), in memory."""
        schema = pa.schema([self.schemas[table].field(c) for c in columns])
        parts = [b.select(list(columns)) for b in self._batches(table, columns)]
        return pa.Table.from_batches(parts, schema=schema)


def _row_group_batches(
    parquet: pq.ParquetFile, columns: Sequence[str] | None
) -> Iterator[pa.RecordBatch]:
    """The file's rows in batches of :data:`READ_BATCH_ROWS`, one row group at a time.

    ``ParquetFile.iter_batches`` over the whole file reads ahead across row groups: on a
    1 GB export's table files it held about 110 MB of Arrow memory at once, against about
    20 MB (one row group) this way, with the same batches.
    """
    for group in range(parquet.num_row_groups):
        yield from parquet.iter_batches(
            batch_size=READ_BATCH_ROWS, row_groups=[group], columns=columns
        )


def staged_files(
    stream: Iterable[tuple[str, pa.RecordBatch]],
    files: Callable[[], Mapping[str, TableBatches] | None],
    replay: Callable[[], Iterable[tuple[str, pa.RecordBatch]]],
    *,
    local: bool = True,
) -> StagedBatches:
    """A :class:`StagedBatches` over ``stream`` (``files`` asked once it is read to its end)."""
    return _Staged(stream, files, replay, local=local)


class _Staged:
    def __init__(
        self,
        stream: Iterable[tuple[str, pa.RecordBatch]],
        files: Callable[[], Mapping[str, TableBatches] | None],
        replay: Callable[[], Iterable[tuple[str, pa.RecordBatch]]],
        *,
        local: bool,
    ) -> None:
        self._stream, self._files, self._replay = stream, files, replay
        self.local = local
        self._done = False

    def __iter__(self) -> Iterator[tuple[str, pa.RecordBatch]]:
        yield from self._stream
        self._done = True

    def files(self) -> Mapping[str, TableBatches] | None:
        return self._files() if self._done else None

    def replay(self) -> Iterable[tuple[str, pa.RecordBatch]]:
        return self._replay()
