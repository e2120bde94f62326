"""The parsed-table cache's file format: one Arrow IPC file per table, LZ4-compressed.

A cache file is read whole (a warm load) or batch by batch (the lake's writes), never by
predicate, so it needs none of Parquet's encodings or statistics. Against zstd Parquet
on the benchmark's 100 MB export, the ``answers`` and ``responses`` files take about a
third of the CPU to write (0.11 vs 0.31 s) and half the time to read back (0.06 vs 0.10
s), for about three times the bytes on disk (52 vs 18 MB, still about 1.5x the archive).

Batches are gathered to :data:`BATCH_ROWS` rows before they are written (by the shared
:class:`~prolific_ingest._parquet.RowGroupWriter` logic): the parse's small batches
would make a file of many short batches, slower to read (0.11 s for blocks of about
7,000 rows).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem
from pyarrow import ipc

from .._parquet import BufferBudget, RowGroupWriter

__all__ = ["BATCH_ROWS", "CODEC", "BatchFileWriter", "TableFile", "read_table_file"]

#: Rows per record batch of a cache file (the lake reads one batch at a time: 65,536 rows
#: peaked about 20 MB higher in a 1 GB first load, for a warm read within noise).
BATCH_ROWS = 32768
#: The IPC body compression (LZ4 frames; Arrow's ``zstd`` reads about 1.2x slower).
CODEC = "lz4"


class BatchFileWriter(RowGroupWriter):
    """Gathers batches into :data:`BATCH_ROWS`-row record batches of an Arrow IPC file.

    Parameters
    ----------
    fh : file-like
        Opened for writing; closed by :meth:`close` / :meth:`abort`.
    schema : pyarrow.Schema
    budget : BufferBudget
        Shared limit on buffered bytes.
    """

    def __init__(self, fh: Any, schema: pa.Schema, budget: BufferBudget) -> None:
        super().__init__(fh, schema, BATCH_ROWS, budget)

    def _open(self, fh: Any, schema: Any, options: dict[str, Any]) -> Any:
        # No compression threads: the writer runs beside the parse, which has every core.
        options = ipc.IpcWriteOptions(compression=CODEC, use_threads=False)
        return ipc.new_file(fh, schema, options=options)

    def _emit(self, table: pa.Table) -> None:
        # One record batch per gathered table (a table's chunks would each be one); the
        # copy from the system allocator, which returns it when it is freed.
        if table.column(0).num_chunks > 1:
            table = table.combine_chunks(memory_pool=pa.system_memory_pool())
        self._writer.write_table(table, max_chunksize=BATCH_ROWS)


class TableFile:
    """One open cache file, read batch by batch (it stays readable if it is renamed).

    Parameters
    ----------
    path : str
        A local cache file.
    """

    def __init__(self, path: str) -> None:
        self._file = pa.OSFile(path, "rb")
        try:
            # Decompressed on the calling thread, not on Arrow's pool threads: the lake
            # reads one batch at a time, and buffers allocated on a pool thread and freed
            # here stay resident longer (the 1 GB first load peaked about 25 MB higher).
            options = ipc.IpcReadOptions(use_threads=False)
            self._reader = ipc.open_file(self._file, options=options)
        except BaseException:
            self._file.close()
            raise

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Every record batch of the file, in order (from the start on each call)."""
        for i in range(self._reader.num_record_batches):
            yield self._reader.get_batch(i)

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def read_table_file(fs: Any, path: str) -> pa.Table:
    """Read one cache file whole.

    Arrow gets a native source, never a Python file object: the reader's state is
    released on one of Arrow's pool threads, and a buffer owned by a Python object (what
    reads from a Python file return) needs the GIL to be freed there. Released while the
    interpreter exits, that made the process abort ("terminate called without an active
    exception", exit 134). A local file is opened by Arrow itself; a remote one is read
    whole and copied into Arrow-owned memory.

    The buffers come from the system allocator: the default pool (mimalloc) keeps freed
    decoding memory, which a warm load's peak RSS would otherwise pay for every table.
    """
    pool = pa.system_memory_pool()
    source: Any
    if isinstance(fs, LocalFileSystem):
        source = pa.OSFile(path, "rb", memory_pool=pool)
    else:
        sink = pa.BufferOutputStream(memory_pool=pool)
        sink.write(fs.cat_file(path))
        source = pa.BufferReader(sink.getvalue())
    with source:
        table: pa.Table = ipc.open_file(source, memory_pool=pool).read_all()
    return table
