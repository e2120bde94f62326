"""Spool one export's batch stream into a local Parquet file per table.

The parser streams ``(table, batch)`` pairs of every table interleaved; a Delta write
consumes one table at a time. Spooling each table to a temporary Parquet file keeps
memory flat (about one row group per table) and lets a commit that lost a race be
retried from the same rows. Each batch is conformed to the table's lake schema on the
way in: the owner id and ``export_id`` columns are filled, ``date`` derived.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .._parquet import BUFFER_BYTES, BufferBudget, RowGroupWriter, conform, iter_batches
from .._tables_schema import owner_column, schema_for
from ._layout import dated, lake_schema

__all__ = ["Spool"]

ROW_GROUP_ROWS = 131072
#: Rows per batch handed to delta-rs: its writer buffers what it is given, so small
#: batches keep the write's memory flat (measured: 8k rows ~ 215 MB less than 128k).
READ_BATCH_ROWS = 8192


class Spool:
    """Per-table temporary Parquet files of one export, in the lake's schemas.

    Use as a context manager: the files are removed on exit.
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
        self._dir = Path(tempfile.mkdtemp(prefix="prolific-ingest-lake-"))
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
        """Abort open writers and remove the spool directory."""
        for writer in self._writers.values():
            writer.abort()
        self._writers.clear()
        shutil.rmtree(self._dir, ignore_errors=True)

    def path(self, table: str) -> Path:
        """The spooled Parquet file of ``table``."""
        return self._dir / f"{table}.parquet"

    def fill(self, data: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
        """Consume ``data`` (a ``{table: pa.Table}`` mapping or a ``(table, batch)`` stream)."""
        for name, batch in iter_batches(data, ROW_GROUP_ROWS):
            if name not in self.schemas:
                msg = f"table {name!r} has no lake schema (known: {sorted(self.schemas)})"
                raise ValueError(msg)
            out = self._to_lake(name, conform(name, batch, self._input[name]))
            self.counts[name] += out.num_rows
            self._writer(name).write(out)
        for name in self.schemas:
            self._writer(name)  # every table gets a file, empty ones included
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def _writer(self, table: str) -> RowGroupWriter:
        writer = self._writers.get(table)
        if writer is None:
            fh = open(self.path(table), "wb")  # noqa: SIM115 - closed by the writer
            writer = RowGroupWriter(fh, self.schemas[table], ROW_GROUP_ROWS, self._budget)
            self._writers[table] = writer
        return writer

    def _to_lake(self, table: str, batch: pa.RecordBatch) -> pa.RecordBatch:
        n = batch.num_rows
        if self._owner in batch.schema.names:
            column = batch.column(self._owner)
            wrong = pc.sum(pc.fill_null(pc.not_equal(column, self.owner_id), False)).as_py()
            if wrong:
                msg = (
                    f"table {table!r}: {wrong} row(s) have {self._owner} different from "
                    f"the export's {self.owner_id!r}"
                )
                raise ValueError(msg)
            index = batch.schema.get_field_index(self._owner)
            batch = batch.set_column(
                index, self._owner, pc.fill_null(column, pa.scalar(self.owner_id))
            )
        else:
            batch = batch.append_column(self._owner, pa.array([self.owner_id] * n, pa.string()))
        batch = batch.append_column("export_id", pa.array([self.export_id] * n, pa.string()))
        if table == "responses":
            self._track_watermark(batch)
        if dated(table, self._partition_by):
            ts = batch.column("created_at")
            days = ts.cast(pa.timestamp(ts.type.unit)).cast(pa.date32())
            batch = batch.append_column("date", days)
        return batch.cast(self.schemas[table])

    def _track_watermark(self, batch: pa.RecordBatch) -> None:
        top = pc.max(batch.column("created_at")).as_py()
        if top is not None and (self.watermark is None or top > self.watermark):
            self.watermark = top

    def reader(self, table: str) -> pa.RecordBatchReader:
        """A stream over the spooled rows of ``table`` (re-readable: one per attempt)."""
        parquet = pq.ParquetFile(self.path(table))
        schema = self.schemas[table]
        return pa.RecordBatchReader.from_batches(
            schema, (b.cast(schema) for b in parquet.iter_batches(batch_size=READ_BATCH_ROWS))
        )

    def read(self, table: str) -> pa.Table:
        """The spooled rows of ``table`` in memory (for the small tables only)."""
        return pq.read_table(self.path(table), schema=self.schemas[table])
