"""The first load of an owner partition: Parquet files streamed by pyarrow, one Delta commit.

``write_deltalake`` buffers a large part of its input (and its allocator keeps what it
took), so a big first load cost several hundred MB more than its parse. Here the rows
go through :class:`pyarrow.parquet.ParquetWriter` a row group at a time, into files laid
out as delta-rs lays them (``<owner>=<id>/[date=<day>/]part-<n>-<uuid>-c000.snappy.parquet``,
partition columns only in the path, a new file at about ``target_file_bytes``), through
a ``pyarrow.fs`` filesystem of the lake (:func:`._storage.arrow_filesystem`: local
folders and ``s3://``; other stores are written by delta-rs). The files are then committed in one transaction,
``create_write_transaction(mode="overwrite", partition_filters=[(<owner>, "=", <id>)])``,
with per-file statistics (row count, null counts, exact min/max of the top-level
integer, date, timestamp, short string and NaN-free float columns). A commit that
fails (another writer filled the partition, see the ``txn`` of the commit properties)
removes the files it wrote.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable
from deltalake.transaction import AddAction, RemoveAction

from ._keyhash import hash_keys, unique_hashes
from ._keyindex import Entry, EntrySpool, count_values, sum_counts

__all__ = ["stream_first_load"]

#: String min/max longer than this are left out of the statistics (unknown, not wrong).
_STAT_CHARS = 256
#: A row group is written at this many rows or this many bytes of Arrow data, if sooner.
_ROW_GROUP = 65536
_ROW_GROUP_BYTES = 8 * 1024 * 1024


def _stat_value(value: Any) -> Any:
    """A min/max as the Delta log writes it (timestamps in ms, ``...Z``; dates ISO)."""
    if isinstance(value, datetime):
        return (
            value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.")
            + f"{value.microsecond // 1000:03d}Z"
        )
    if isinstance(value, date):
        return value.isoformat()
    return value


@dataclass
class _Stats:
    """Running statistics of one data file's columns."""

    columns: list[pa.Field]
    rows: int = 0
    nulls: dict[str, int] = field(default_factory=dict)
    low: dict[str, Any] = field(default_factory=dict)
    high: dict[str, Any] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=set)

    def add(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        for f in self.columns:
            col = batch.column(f.name)
            self.nulls[f.name] = self.nulls.get(f.name, 0) + col.null_count
            if f.name in self.unknown or col.null_count == len(col):
                continue
            kind = f.type
            if not (
                pa.types.is_integer(kind)
                or pa.types.is_floating(kind)
                or pa.types.is_string(kind)
                or pa.types.is_date32(kind)
                or pa.types.is_timestamp(kind)
            ):
                self.unknown.add(f.name)
                continue
            if pa.types.is_floating(kind) and pc.any(pc.is_nan(col)).as_py():
                self.unknown.add(f.name)
                continue
            bounds = pc.min_max(col)
            lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
            if isinstance(lo, str) and (len(lo) > _STAT_CHARS or len(hi) > _STAT_CHARS):
                self.unknown.add(f.name)
                continue
            if isinstance(hi, datetime) and hi.microsecond % 1000:
                # The log keeps milliseconds: round the maximum up, never below a value.
                hi += timedelta(microseconds=1000 - hi.microsecond % 1000)
            if any(isinstance(v, float) and not math.isfinite(v) for v in (lo, hi)):
                self.unknown.add(f.name)
                continue
            if f.name not in self.low or lo < self.low[f.name]:
                self.low[f.name] = lo
            if f.name not in self.high or hi > self.high[f.name]:
                self.high[f.name] = hi

    def json(self) -> str:
        known = [f.name for f in self.columns if f.name in self.low and f.name not in self.unknown]
        return json.dumps(
            {
                "numRecords": self.rows,
                "minValues": {c: _stat_value(self.low[c]) for c in known},
                "maxValues": {c: _stat_value(self.high[c]) for c in known},
                "nullCount": self.nulls,
            }
        )


@dataclass
class _File:
    """One data file being written."""

    path: str
    values: dict[str, str | None]
    sink: Any
    writer: pq.ParquetWriter
    stats: _Stats
    pending: list[pa.RecordBatch] = field(default_factory=list)
    pending_rows: int = 0
    pending_bytes: int = 0
    hashes: list[Any] = field(default_factory=list)
    counts: list[pa.Table] = field(default_factory=list)


def _segment(column: str, value: str | None) -> str:
    return f"{column}={'__HIVE_DEFAULT_PARTITION__' if value is None else quote(value, safe='')}"


def _partition_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _split(
    batch: pa.RecordBatch, owner: str, owner_id: str, below: Sequence[str]
) -> Iterator[tuple[tuple[str | None, ...], pa.RecordBatch]]:
    """``batch`` by the values of the partition columns ``below`` the owner."""
    owners = batch.column(owner)
    if owners.null_count or not pc.all(pc.equal(owners, owner_id)).as_py():
        msg = f"a row of the stream is not in the partition {owner}={owner_id!r}"
        raise ValueError(msg)
    if not below:
        yield (), batch
        return
    (column,) = below  # only ``date`` is supported below the owner
    values = batch.column(column)
    for value in pc.unique(values).to_pylist():
        where = (
            pc.is_null(values) if value is None else pc.fill_null(pc.equal(values, value), False)
        )
        yield (_partition_text(value),), batch.filter(where)


def stream_first_load(
    table: DeltaTable,
    fs: pafs.FileSystem,
    root: str,
    data: pa.RecordBatchReader,
    *,
    owner: str,
    owner_id: str,
    partition_by: Sequence[str],
    commit_properties: CommitProperties,
    target_file_bytes: int,
    index: tuple[str, str | None] | None = None,
    entries: EntrySpool | None = None,
) -> bool:
    """Write ``data`` (the rows of one empty owner partition) as one overwrite commit.

    Returns ``False``, having committed nothing, when the stream has no rows. A failed
    commit (a conflict with another writer included) removes the files written and
    re-raises. With ``index`` (the first key and the counted column, or ``None``), the
    key-index entry of each file written is appended to ``entries``
    (:mod:`._keyindex`).
    """
    below = [c for c in partition_by if c != owner]
    columns = [f for f in data.schema if f.name not in partition_by]
    file_schema = pa.schema(columns)
    open_files: dict[tuple[str | None, ...], _File] = {}
    done: list[AddAction | RemoveAction] = []
    written: list[str] = []
    counter = 0

    def start(key: tuple[str | None, ...]) -> _File:
        nonlocal counter
        values: dict[str, str | None] = {owner: owner_id, **dict(zip(below, key, strict=True))}
        folder = "/".join(_segment(c, values[c]) for c in partition_by)
        path = f"{folder}/part-{counter:05d}-{uuid.uuid4()}-c000.snappy.parquet"
        counter += 1
        written.append(path)
        if isinstance(fs, pafs.LocalFileSystem):
            fs.create_dir(f"{root}/{folder}", recursive=True)
        sink = fs.open_output_stream(f"{root}/{path}")
        writer = pq.ParquetWriter(sink, file_schema, compression="snappy")
        return _File(path, values, sink, writer, _Stats(columns))

    def flush(out: _File) -> None:
        if out.pending:
            out.writer.write_table(pa.Table.from_batches(out.pending, file_schema))
            out.pending, out.pending_rows, out.pending_bytes = [], 0, 0

    def finish(out: _File) -> None:
        flush(out)
        if index is not None and entries is not None:
            counts = sum_counts(out.counts) if index[1] else None
            entries.append(Entry(out.path, unique_hashes(out.hashes), counts))
        out.writer.close()
        size = out.sink.tell()
        out.sink.close()
        done.append(
            AddAction(
                path=out.path,
                size=size,
                partition_values=out.values,
                modification_time=int(time.time() * 1000),
                data_change=True,
                stats=out.stats.json(),
            )
        )

    try:
        for batch in data:
            for key, rows in _split(batch, owner, owner_id, below):
                if not rows.num_rows:
                    continue
                out = open_files.get(key) or open_files.setdefault(key, start(key))
                rows = rows.select([f.name for f in columns])
                out.stats.add(rows)
                if index is not None:
                    out.hashes.append(hash_keys(rows.column(index[0])))
                    if index[1]:
                        out.counts.append(count_values(rows.column(index[1])))
                out.pending.append(rows)
                out.pending_rows += rows.num_rows
                out.pending_bytes += rows.nbytes
                if out.pending_rows >= _ROW_GROUP or out.pending_bytes >= _ROW_GROUP_BYTES:
                    flush(out)
                    if out.sink.tell() >= target_file_bytes:
                        finish(open_files.pop(key))
        for key in list(open_files):
            finish(open_files.pop(key))
        if not done:
            return False
        table.create_write_transaction(
            done,
            mode="overwrite",
            schema=data.schema,
            partition_by=list(partition_by),
            partition_filters=[(owner, "=", owner_id)],
            commit_properties=commit_properties,
        )
    except BaseException:
        for out in open_files.values():
            with contextlib.suppress(Exception):  # the original error is what matters
                out.writer.close()
                out.sink.close()
        for path in written:
            with contextlib.suppress(Exception):  # best effort; vacuum removes leftovers
                fs.delete_file(f"{root}/{path}")
        raise
    return True
