"""Private streaming writer of :mod:`prolific_ingest.sinks`: record batches -> staged Parquet.

One :class:`RowGroupWriter` per output file keeps a ``pq.ParquetWriter`` open and
buffers incoming batches until ``row_group_rows`` rows are pending, so many small
batches become few row groups; all the writers of one export share one
:class:`BufferBudget` (:data:`BUFFER_BYTES`), so memory stays flat however many files
are open. The parsed-table cache uses the same writer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._sinks_layout import NULL_PARTITION, Location, leaf_rel

log = logging.getLogger(__name__)

#: Bytes of record batches one export's writers may buffer together (see BufferBudget).
BUFFER_BYTES = 48 * 1024 * 1024
COMPRESSION = "zstd"


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


def split_by_date(batch: Any) -> list[tuple[str, Any]]:
    """Split ``batch`` by the UTC calendar day of ``created_at`` (nulls -> Hive null key)."""
    ts = batch.column("created_at")
    if ts.type.tz is not None:
        ts = ts.cast(pa.timestamp(ts.type.unit))  # same instants, as naive UTC
    days = ts.cast(pa.date32()).cast(pa.string())
    parts: list[tuple[str, Any]] = []
    for day in pc.unique(days).to_pylist():
        mask = pc.is_null(days) if day is None else pc.equal(days, day)
        parts.append((NULL_PARTITION if day is None else day, batch.filter(mask)))
    return parts


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
    the memory back), so a stream of many small batches becomes few row groups.

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
            options.setdefault("compression", COMPRESSION)
            self._writer = pq.ParquetWriter(fh, schema, **options)
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
            self._writer.write_table(table.slice(0, self._rows), row_group_size=self._rows)
            self.row_groups += 1
            table = table.slice(self._rows)
        if table.num_rows and not complete_groups_only:
            self._writer.write_table(table, row_group_size=self._rows)
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


def _leaf(loc: Location, path: str, schema: Any, rows: int, budget: BufferBudget) -> RowGroupWriter:
    """One Parquet file being written into staging."""
    loc.ensure_parent(path)
    return RowGroupWriter(loc.fs.open(path, "wb"), schema, rows, budget)


class StagedExport:
    """Write one export's tables into ``<staging>/<layout>``.

    Parameters
    ----------
    loc : Location
        The output root.
    staging_rel : str
        ``_staging/<token>`` (relative to the root).
    col, owner_id, export_id : str
        Owner column, owner id and export id (partition values).
    schemas : Mapping[str, pa.Schema]
        The logical schema of every table; every table gets a file (see the module
        docstring of ``sinks`` for the date-partitioned exception).
    by_date : bool
        Split tables that have a timestamp ``created_at`` by UTC day.
    row_group_rows : int
        Rows per row group.
    """

    def __init__(
        self,
        loc: Location,
        staging_rel: str,
        *,
        col: str,
        owner_id: str,
        export_id: str,
        schemas: Mapping[str, Any],
        by_date: bool,
        row_group_rows: int,
    ) -> None:
        self._loc = loc
        self._staging = staging_rel
        self._col, self._owner, self._export = col, owner_id, export_id
        self._schemas = dict(schemas)
        self._rows = row_group_rows
        self._leaves: dict[tuple[str, str | None], RowGroupWriter] = {}
        self._budget = BufferBudget(BUFFER_BYTES)
        self._files: dict[str, list[str]] = {name: [] for name in self._schemas}
        self.counts: dict[str, int] = dict.fromkeys(self._schemas, 0)
        self.max_response_created_at: datetime | None = None
        self._dated = {
            name
            for name, schema in self._schemas.items()
            if by_date
            and "created_at" in schema.names
            and pa.types.is_timestamp(schema.field("created_at").type)
        }

    def file_schema(self, table: str) -> Any:
        """The schema stored in the files of ``table`` (the owner column is dropped)."""
        schema = self._schemas[table]
        if self._col in schema.names:
            schema = schema.remove(schema.get_field_index(self._col))
        return schema

    def _strip_owner(self, table: str, batch: Any) -> Any:
        if self._col not in batch.schema.names:
            return batch
        column = batch.column(self._col)
        wrong = pc.sum(pc.fill_null(pc.not_equal(column, self._owner), False)).as_py()
        if wrong:
            msg = (
                f"table {table!r}: {wrong} row(s) have {self._col} different from the "
                f"partition value {self._owner!r}"
            )
            raise ValueError(msg)
        return batch.drop_columns([self._col])

    def _leaf(self, table: str, date: str | None) -> RowGroupWriter:
        key = (table, date)
        leaf = self._leaves.get(key)
        if leaf is None:
            rel = leaf_rel(table, self._col, self._owner, self._export, date, 0)
            path = self._loc.path(f"{self._staging}/{rel}")
            schema = self.file_schema(table)
            leaf = self._leaves[key] = _leaf(self._loc, path, schema, self._rows, self._budget)
            self._files[table].append(rel)
        return leaf

    def write(self, table: str, batch: Any) -> None:
        """Validate ``batch`` against the schema of ``table`` and stage it."""
        schema = self._schemas.get(table)
        if schema is None:
            msg = f"table {table!r} has no schema (known: {sorted(self._schemas)})"
            raise ValueError(msg)
        batch = conform(table, batch, schema)
        if table == "responses":
            self._track_watermark(batch)
        self.counts[table] += batch.num_rows
        if table in self._dated:
            for day, part in split_by_date(batch):
                self._leaf(table, day).write(self._strip_owner(table, part))
        else:
            self._leaf(table, None).write(self._strip_owner(table, batch))

    def _track_watermark(self, batch: Any) -> None:
        if "created_at" not in batch.schema.names or not pa.types.is_timestamp(
            batch.schema.field("created_at").type
        ):
            return
        top = pc.max(batch.column("created_at")).as_py()
        if top is not None and (
            self.max_response_created_at is None or top > self.max_response_created_at
        ):
            self.max_response_created_at = top

    def finish(self) -> dict[str, list[str]]:
        """Close every file; give tables without rows an empty file. Returns relative paths."""
        for table in self._schemas:
            if not self._files[table] and table not in self._dated:
                self._leaf(table, None)
        for leaf in self._leaves.values():
            leaf.close()
        self._leaves.clear()
        return {name: sorted(paths) for name, paths in self._files.items()}

    def abort(self) -> None:
        """Close every open file after a failure (the caller removes the staging prefix)."""
        for leaf in self._leaves.values():
            leaf.abort()
        self._leaves.clear()
