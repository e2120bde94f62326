"""Parquet helpers shared by the lake's spool, ``Export.to_parquet`` and the parsed-table cache.

One :class:`RowGroupWriter` per output file keeps a ``pq.ParquetWriter`` (or, in a subclass,
another format's writer: the parsed-table cache's Arrow IPC files) open and
buffers incoming batches until ``row_group_rows`` rows are pending, so many small
batches become few row groups; writers that are open together share one
:class:`BufferBudget` (:data:`BUFFER_BYTES`), so memory stays flat however many files
are open.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "BUFFER_BYTES",
    "COMPRESSION",
    "BufferBudget",
    "RowGroupWriter",
    "check_id",
    "conform",
    "iter_batches",
    "write_tables",
]

log = logging.getLogger(__name__)

#: Bytes of record batches one export's writers may buffer together (see BufferBudget).
BUFFER_BYTES = 48 * 1024 * 1024
COMPRESSION = "zstd"

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_id(name: str, value: str) -> str:
    """Validate an id used as a path segment or partition value (letters, digits, ``. _ -``)."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        msg = f"{name} {value!r} cannot be used as a partition value (letters, digits, . _ - only)"
        raise ValueError(msg)
    return value


def iter_batches(
    data: Mapping[str, Any] | Iterable[tuple[str, Any]], row_group_rows: int
) -> Iterator[tuple[str, Any]]:
    """Normalise a ``{table: pa.Table}`` mapping or a ``(name, batch)`` stream."""
    if isinstance(data, Mapping):
        for name, table in data.items():
            if isinstance(table, pa.RecordBatch):
                yield name, table
                continue
            for batch in table.to_batches(max_chunksize=row_group_rows):
                yield name, batch
    else:
        yield from data


def conform(table: str, batch: Any, schema: Any) -> Any:
    """Return ``batch`` with exactly ``schema`` (a safe cast when only types differ)."""
    if isinstance(batch, pa.Table):
        batch = batch.combine_chunks().to_batches()[0] if batch.num_rows else schema.empty_table()
    if not isinstance(batch, pa.RecordBatch):
        msg = f"table {table!r}: expected a pyarrow RecordBatch, got {type(batch).__name__}"
        raise TypeError(msg)
    if batch.schema.equals(schema, check_metadata=False):
        return batch
    if batch.schema.names != schema.names:
        msg = (
            f"table {table!r}: batch columns {batch.schema.names} do not match the schema "
            f"columns {schema.names}"
        )
        raise ValueError(msg)
    return batch.cast(schema, safe=True)


class BufferBudget:
    """Bytes that several :class:`RowGroupWriter` may buffer together.

    When the total is over ``limit``, the writers holding the most are flushed (as a
    shorter row group) until it is under; so memory stays bounded however many files are
    open, and a row group is never much smaller than ``limit`` / number of writers.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.writers: list[RowGroupWriter] = []

    def pending(self) -> int:
        """Bytes buffered by every writer."""
        return sum(w.pending_bytes for w in self.writers)

    def enforce(self) -> None:
        """Flush the biggest buffers until the total is within the limit."""
        total = self.pending()
        while total > self.limit:
            biggest = max(self.writers, key=lambda w: w.pending_bytes)
            total -= biggest.pending_bytes
            biggest.flush()


class RowGroupWriter:
    """A ``pq.ParquetWriter`` that gathers incoming batches into row groups.

    Batches are buffered until ``row_group_rows`` rows are pending (or ``budget`` needs
    the memory back), so a stream of many small batches becomes few row groups. A
    subclass writes another format by overriding ``_open`` and ``_emit``.

    Parameters
    ----------
    fh : file-like
        Opened for writing; closed by :meth:`close` / :meth:`abort`.
    schema : pyarrow.Schema
    row_group_rows : int
        Rows per row group.
    budget : BufferBudget
        Shared limit on buffered bytes.
    **options
        Passed to ``pq.ParquetWriter`` (``compression`` defaults to zstd).
    """

    def __init__(
        self, fh: Any, schema: Any, row_group_rows: int, budget: BufferBudget, **options: Any
    ) -> None:
        self._fh = fh
        try:
            self._writer = self._open(fh, schema, options)
        except BaseException:
            fh.close()
            raise
        self._schema = schema
        self._rows = row_group_rows
        self._budget = budget
        self._pending: list[Any] = []
        self._pending_rows = 0
        self.pending_bytes = 0
        self.row_groups = 0
        budget.writers.append(self)

    def _open(self, fh: Any, schema: Any, options: dict[str, Any]) -> Any:
        """The format's writer over ``fh`` (here a ``pq.ParquetWriter``)."""
        options.setdefault("compression", COMPRESSION)
        return pq.ParquetWriter(fh, schema, **options)

    def _emit(self, table: pa.Table) -> None:
        """Write ``table`` (at most ``row_group_rows`` rows) as one row group."""
        self._writer.write_table(table, row_group_size=self._rows)

    def write(self, batch: Any) -> None:
        """Buffer ``batch``; write every complete row group."""
        if not batch.num_rows:
            return
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self.pending_bytes += batch.nbytes
        if self._pending_rows >= self._rows:
            self._write(complete_groups_only=True)
        self._budget.enforce()

    def flush(self) -> None:
        """Write everything buffered (the last row group may be short)."""
        if self._pending:
            self._write(complete_groups_only=False)

    def _write(self, *, complete_groups_only: bool) -> None:
        table = pa.Table.from_batches(self._pending, schema=self._schema)
        self._pending = []
        while table.num_rows >= self._rows:
            self._emit(table.slice(0, self._rows))
            self.row_groups += 1
            table = table.slice(self._rows)
        if table.num_rows and not complete_groups_only:
            self._emit(table)
            self.row_groups += 1
            table = table.slice(table.num_rows)
        # The rest is copied out of the written batches so that they can be freed now.
        self._pending = [table.combine_chunks().to_batches()[0]] if table.num_rows else []
        self._pending_rows = table.num_rows
        self.pending_bytes = sum(b.nbytes for b in self._pending)

    def close(self) -> None:
        """Write what is buffered, close the writer and the file."""
        try:
            self.flush()
            self._writer.close()
        finally:
            self._release()
            self._fh.close()

    def abort(self) -> None:
        """Close after a failure, writing nothing more (best effort)."""
        self._pending = []
        self._release()
        try:
            self._writer.close()
        except Exception:  # best effort while already failing
            log.debug("closing an aborted Parquet writer failed", exc_info=True)
        try:
            self._fh.close()
        except Exception:
            log.debug("closing an aborted file failed", exc_info=True)

    def _release(self) -> None:
        self.pending_bytes = 0
        if self in self._budget.writers:
            self._budget.writers.remove(self)


def write_tables(
    tables: Mapping[str, pa.Table],
    output: str,
    *,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Write each table as ``<output>/<name>.parquet`` (temporary name, then moved).

    Returns table name -> URL. Raises :class:`FileExistsError` for a file already there
    unless ``overwrite``.
    """
    import uuid

    import fsspec

    fs, root = fsspec.core.url_to_fs(output, **dict(storage_options or {}))
    root = str(root).rstrip("/")
    given = output.rstrip("/")
    local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
    if local:
        fs.makedirs(root, exist_ok=True)
    written: dict[str, str] = {}
    for name, table in tables.items():
        dest = f"{root}/{name}.parquet"
        if not overwrite and fs.exists(dest):
            msg = f"{given}/{name}.parquet exists; pass overwrite=True to replace it"
            raise FileExistsError(msg)
        tmp = f"{root}/.{name}.parquet.{uuid.uuid4().hex}.tmp"
        try:
            with fs.open(tmp, "wb") as fh:
                pq.write_table(table, fh, compression=COMPRESSION)
            fs.mv(tmp, dest)
        finally:
            if fs.exists(tmp):
                fs.rm_file(tmp)
        written[name] = f"{given}/{name}.parquet"
    return written
