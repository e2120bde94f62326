"""Rows of the key index's segments, and the entries a load keeps until its commit.

One row per data file (see :mod:`._keyindex`): its path in the Delta log, the ascending
64-bit hashes of its distinct first keys as one ``large_binary`` value of ``'<u8'``
words, and the counted column's values with the file's rows of each.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import pyarrow as pa

__all__ = ["Entry", "EntrySpool"]

_FORMAT = b"prolific-ingest key index 1"
_SCHEMA = pa.schema(
    [
        ("file", pa.string()),  # the data file's path in the Delta log
        ("key_hashes", pa.large_binary()),  # its distinct first-key hashes: ascending '<u8'
        ("values", pa.list_(pa.string())),  # the counted column's values ...
        ("counts", pa.list_(pa.int64())),  # ... and the file's rows of each
    ]
)

#: A file's rows per counted value when it has none (or nothing is counted).
_NO_COUNTS = pa.table({"value": pa.array([], pa.string()), "n": pa.array([], pa.int64())})
_NO_HASHES = np.empty(0, np.uint64)
#: A segment is written a row group of about this many bytes of hashes at a time.
_SEGMENT_GROUP_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Entry:
    """One data file: the distinct hashes of its first keys, its rows per counted value."""

    path: str
    hashes: np.ndarray
    counts: pa.Table | None = None  # ``value`` (string), ``n`` (int64)


def _rows(entries: Sequence[Entry]) -> pa.Table:
    """``entries`` as rows of a segment."""
    counts = [e.counts if e.counts is not None else _NO_COUNTS for e in entries]
    offsets = pa.array(np.cumsum([0] + [c.num_rows for c in counts]), pa.int32())
    flat = pa.concat_tables([_NO_COUNTS, *(c.select(["value", "n"]) for c in counts)])
    return pa.table(
        {
            "file": pa.array([e.path for e in entries], pa.string()),
            "key_hashes": _hash_runs([e.hashes for e in entries]),
            "values": pa.ListArray.from_arrays(offsets, flat.column("value").combine_chunks()),
            "counts": pa.ListArray.from_arrays(offsets, flat.column("n").combine_chunks()),
        },
        schema=_SCHEMA,
    )


def _hash_runs(runs: Sequence[np.ndarray]) -> pa.Array:
    """Each run of hashes as one ``large_binary`` value of its ``'<u8'`` words (one copy)."""
    ends = np.cumsum([0] + [len(r) * 8 for r in runs], dtype=np.int64)
    words = np.concatenate([np.asarray(r, "<u8") for r in runs]) if runs else _NO_HASHES
    buffers = [None, pa.py_buffer(ends), pa.py_buffer(words)]
    return pa.Array.from_buffers(pa.large_binary(), len(runs), buffers)


def _groups(entries: Iterable[Entry]) -> Iterator[list[Entry]]:
    """``entries`` in runs of about :data:`_SEGMENT_GROUP_BYTES` of hashes."""
    group: list[Entry] = []
    size = 0
    for entry in entries:
        group.append(entry)
        size += entry.hashes.nbytes
        if size >= _SEGMENT_GROUP_BYTES:
            yield group
            group, size = [], 0
    if group:
        yield group


class EntrySpool:
    """The entries of the files a load writes, kept in a local temporary file, not in memory.

    A first load writes one entry per data file, but the segment holding them is written
    only after the table's commit: held in memory, their hashes (8 bytes per distinct
    first key) would grow with the export. The file is anonymous (gone with the process).
    """

    def __init__(self) -> None:
        self.paths: list[str] = []
        self._file: Any = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None

    def append(self, entry: Entry) -> None:
        """Keep ``entry`` (written out at once)."""
        if self._writer is None:
            self._file = tempfile.TemporaryFile(prefix="prolific-ingest-keys-")  # noqa: SIM115 - closed by close()
            self._writer = pa.ipc.new_stream(self._file, _SCHEMA)
        self._writer.write_table(_rows([entry]))
        self.paths.append(entry.path)

    def __iter__(self) -> Iterator[Entry]:
        if self._writer is None:
            return
        self._writer.close()
        self._writer = None
        self._file.seek(0)
        with pa.ipc.open_stream(self._file) as reader:
            for batch in reader:
                hashes = batch.column("key_hashes")[0].as_buffer()
                values, counts = batch.column("values"), batch.column("counts")
                yield Entry(
                    batch.column("file")[0].as_py(),
                    np.frombuffer(hashes, "<u8") if hashes is not None else _NO_HASHES,
                    pa.table({"value": values.flatten(), "n": counts.flatten()}),
                )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the temporary file."""
        if self._file is not None:
            self._file.close()
            self._file, self._writer = None, None
