"""The key index of an owner partition: which data files can hold which first-key values.

::

    <lake>/_keys/<table>/<owner>=<id>/<uuid>.parquet     segments, one per commit (or scan)

A segment names data files of the Delta table (by their path in the log) and, for each,
the 64-bit hashes of the distinct first-key values it holds (``responses``: also its
number of rows per ``submission_id``). A Delta data file never changes once written, so
an entry is true for as long as its file is in the table: files removed by a rewrite,
``optimize`` or ``vacuum`` are simply no longer looked up, and a file no entry names
(another writer's, ``optimize``'s, or a load cut short between its commit and its
segment) is read in full, and indexed then. Hashes only decide which files need not be
read: two values sharing a hash cost a read that was not needed, never a missed row.
Row counts are exact (read from the file, or counted while writing it).

The index is not used (every file is read, as without it) for tables with reader
features (deletion vectors, column mapping: rows or names the entries may not reflect)
and for stores pyarrow has no filesystem for (:func:`._storage.arrow_filesystem`).
A segment that cannot be read, or of another format, is ignored.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable

from ._keyhash import hash_keys, unique_hashes
from ._storage import Lake, arrow_filesystem

__all__ = [
    "COUNTED",
    "Entry",
    "KeyIndex",
    "count_values",
    "entry_of",
    "index_written",
    "partition_files",
    "read_entry",
    "sum_counts",
]

logger = logging.getLogger("prolific_ingest.lake")

#: The column whose rows per value each entry of a table counts.
COUNTED: dict[str, str] = {"responses": "submission_id"}
#: Where the segments live, under the lake root.
KEYS_DIR = "_keys"
#: More segments than this (or more dead files than live ones) are merged into one.
MAX_SEGMENTS = 8
_FORMAT = b"prolific-ingest key index 1"
_SCHEMA = pa.schema(
    [
        ("file", pa.dictionary(pa.int32(), pa.string())),
        ("key_hash", pa.uint64()),
        ("value", pa.string()),
        ("n", pa.int64()),
    ]
)


@dataclass(frozen=True)
class Entry:
    """One data file: the distinct hashes of its first keys, its rows per counted value."""

    path: str
    hashes: np.ndarray
    counts: pa.Table | None = None  # ``value`` (string), ``n`` (int64)


def count_values(column: pa.Array | pa.ChunkedArray) -> pa.Table:
    """Rows per value of ``column`` (nulls left out), as ``value``, ``n``."""
    counts = pc.value_counts(column)
    table = pa.table(
        {"value": pc.cast(counts.field("values"), pa.string()), "n": counts.field("counts")}
    )
    return table.filter(pc.is_valid(table.column("value")))


def sum_counts(tables: Sequence[pa.Table]) -> pa.Table:
    """Several ``value``, ``n`` tables as one (``n`` summed per value)."""
    if not tables:
        return pa.table({"value": pa.array([], pa.string()), "n": pa.array([], pa.int64())})
    summed = pa.concat_tables(tables).group_by("value").aggregate([("n", "sum")])
    return pa.table({"value": summed.column("value"), "n": pc.cast(summed["n_sum"], pa.int64())})


def entry_of(path: str, rows: pa.Table, first: str, counted: str | None) -> Entry:
    """The entry of the data file ``path`` holding ``rows`` (its first-key/counted columns)."""
    counts = count_values(rows.column(counted)) if counted else None
    return Entry(path, unique_hashes([hash_keys(rows.column(first))]), counts)


def _repeat(text: str, n: int) -> pa.Array:
    """``text`` ``n`` times, dictionary-encoded (one copy of the string)."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([text]))


@dataclass
class _Segment:
    """One segment as read: its files, and per hash / count row the file's position."""

    path: str
    names: list[str]
    hash_at: np.ndarray
    hashes: np.ndarray
    counts: pa.Table  # ``at``, ``value``, ``n``
    owned: np.ndarray  # per name: this is the first segment naming the file


class KeyIndex:
    """The segments of one owner partition of one table, read once (see the module)."""

    def __init__(self, fs: pafs.FileSystem, root: str, first: str, counted: str | None) -> None:
        self.fs, self.root, self.first, self.counted = fs, root, first, counted
        self._segments: list[_Segment] = []
        self._where: dict[str, tuple[int, int]] = {}  # file -> (segment, position)

    @property
    def segments(self) -> list[str]:
        """The paths of the segments read."""
        return [s.path for s in self._segments]

    @classmethod
    def open(
        cls, lake: Lake, table: DeltaTable, name: str, owner: str, owner_id: str, first: str
    ) -> KeyIndex | None:
        """The index of ``name``'s partition ``owner=owner_id``, loaded; ``None``: not used."""
        protocol = table.protocol()
        if protocol.min_reader_version > 1 or protocol.reader_features:
            return None
        target = arrow_filesystem(lake, f"{KEYS_DIR}/{name}/{owner}={owner_id}")
        if target is None:
            return None
        index = cls(target[0], target[1], first, COUNTED.get(name))
        index._load()
        return index

    def _load(self) -> None:
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        except OSError:
            logger.debug("key index %s: not listed", self.root, exc_info=True)
            return
        for info in sorted(infos, key=lambda i: i.path):
            name = info.base_name
            if info.type != pafs.FileType.File or name.startswith(".") or name[-8:] != ".parquet":
                continue
            try:
                rows = pq.read_table(
                    info.path, filesystem=self.fs, use_threads=False, read_dictionary=["file"]
                )
                meta = rows.schema.metadata or {}
                if (
                    meta.get(b"format") != _FORMAT
                    or meta.get(b"first_key", b"").decode() != self.first
                    or meta.get(b"counted", b"").decode() != (self.counted or "")
                ):
                    continue
                self._add_segment(info.path, rows, int(meta[b"hash_rows"]))
            except (OSError, ValueError, KeyError, pa.ArrowException):
                logger.debug("key index: segment %s not read", info.path, exc_info=True)

    def _add_segment(self, path: str, rows: pa.Table, hash_rows: int) -> None:
        files = rows.column("file").combine_chunks()
        if not pa.types.is_dictionary(files.type):
            files = pc.dictionary_encode(files)
        names = files.dictionary.to_pylist()
        at = files.indices.to_numpy(zero_copy_only=False)
        hashes = rows.column("key_hash").slice(0, hash_rows).combine_chunks()
        if hashes.null_count:
            msg = "a hash row without a hash"
            raise ValueError(msg)
        number = len(self._segments)
        owned = np.array([n not in self._where for n in names], bool)
        for i, n in enumerate(names):
            self._where.setdefault(n, (number, i))
        counted = rows.slice(hash_rows)
        self._segments.append(
            _Segment(
                path,
                names,
                at[:hash_rows],
                hashes.to_numpy(zero_copy_only=False),
                pa.table(
                    {
                        "at": at[hash_rows:],
                        "value": counted.column("value"),
                        "n": counted.column("n"),
                    }
                ),
                owned,
            )
        )

    def covers(self, path: str) -> bool:
        """Whether an entry names the data file ``path``."""
        return path in self._where

    def holding(self, hashes: np.ndarray) -> set[str]:
        """The indexed files that may hold one of the first-key ``hashes``."""
        out: set[str] = set()
        if not len(hashes):
            return out
        wanted = pa.array(hashes)
        for seg in self._segments:
            hit = pc.is_in(pa.array(seg.hashes), value_set=wanted)
            found = np.unique(seg.hash_at[hit.to_numpy(zero_copy_only=False)])
            out.update(seg.names[i] for i in found)
        return out

    def counts(self, paths: Iterable[str]) -> list[pa.Table]:
        """The ``value``, ``n`` rows of the indexed files among ``paths`` (each file once)."""
        mine: dict[int, list[int]] = {}
        for p in paths:
            if p in self._where:
                number, at = self._where[p]
                mine.setdefault(number, []).append(at)
        out = []
        for number, ats in mine.items():
            table = self._segments[number].counts
            if len(ats) < len(self._segments[number].names):
                table = table.filter(pc.is_in(table.column("at"), value_set=pa.array(ats)))
            out.append(table.select(["value", "n"]))
        return out

    def _entries(self, live: set[str]) -> list[Entry]:
        """The loaded entries of the files in ``live``."""
        out = []
        for path in sorted(live & set(self._where)):
            number, at = self._where[path]
            seg = self._segments[number]
            counts = None
            if self.counted:
                rows = seg.counts.filter(pc.equal(seg.counts.column("at"), at))
                counts = rows.select(["value", "n"])
            out.append(Entry(path, seg.hashes[seg.hash_at == at], counts))
        return out

    def _rows(self, entries: Sequence[Entry]) -> tuple[pa.Table, int]:
        """A segment's rows: every hash row first, then every count row; the hash rows."""
        hashed = [
            pa.table(
                {
                    "file": _repeat(e.path, len(e.hashes)),
                    "key_hash": pa.array(e.hashes, pa.uint64()),
                    "value": pa.nulls(len(e.hashes), pa.string()),
                    "n": pa.nulls(len(e.hashes), pa.int64()),
                },
                schema=_SCHEMA,
            )
            for e in entries
        ]
        counted = [
            pa.table(
                {
                    "file": _repeat(e.path, e.counts.num_rows),
                    "key_hash": pa.nulls(e.counts.num_rows, pa.uint64()),
                    "value": e.counts.column("value"),
                    "n": e.counts.column("n"),
                },
                schema=_SCHEMA,
            )
            for e in entries
            if e.counts is not None
        ]
        hash_rows = sum(len(e.hashes) for e in entries)
        return pa.concat_tables([_SCHEMA.empty_table(), *hashed, *counted]), hash_rows

    def _put(self, entries: Sequence[Entry]) -> str:
        rows, hash_rows = self._rows(entries)
        meta = {"format": _FORMAT, "first_key": self.first, "counted": self.counted or ""}
        rows = rows.replace_schema_metadata({**meta, "hash_rows": str(hash_rows)})
        name = f"{uuid.uuid4()}.parquet"
        final = f"{self.root}/{name}"
        local = isinstance(self.fs, pafs.LocalFileSystem)
        if local:
            self.fs.create_dir(self.root, recursive=True)
        # A local segment is written aside and renamed; an object store's PUT is atomic.
        temporary = f"{self.root}/.{name}.tmp" if local else final
        pq.write_table(rows, temporary, filesystem=self.fs, compression="none")
        if local:
            self.fs.move(temporary, final)
        return final

    def add(self, entries: Sequence[Entry], live: Iterable[str]) -> None:
        """Write ``entries`` as one segment; merge every segment when there are many.

        ``live`` are the partition's data files now: a merge keeps only their entries.
        """
        live = set(live)
        fresh = [e for e in entries if e.path in live]
        if not fresh:
            return
        dead = len(set(self._where) - live)
        if len(self.segments) + 1 <= MAX_SEGMENTS and dead <= len(live):
            self._put(fresh)
            return
        known = {e.path for e in fresh}
        kept = [e for e in self._entries(live) if e.path not in known]
        self._put(kept + fresh)
        for path in self.segments:  # the merged one holds all they named that is live
            with contextlib.suppress(OSError):
                self.fs.delete_file(path)
        self._segments, self._where = [], {}


def partition_files(table: DeltaTable, owner: str, owner_id: str) -> tuple[ds.Dataset, list[Any]]:
    """The table's dataset and the data files (fragments) of its partition ``owner=owner_id``."""
    dataset = table.to_pyarrow_dataset()
    return dataset, list(dataset.get_fragments(filter=ds.field(owner) == owner_id))


def read_entry(dataset: ds.Dataset, fragment: Any, first: str, counted: str | None) -> Entry:
    """The entry of one data file, from its first-key (and counted) columns."""
    columns = [first] if counted in (None, first) else [first, counted]
    rows = fragment.to_table(schema=dataset.schema, columns=columns, use_threads=False)
    return entry_of(fragment.path, rows, first, counted)


def index_written(
    index: KeyIndex | None,
    table: DeltaTable,
    owner: str,
    owner_id: str,
    entries: Sequence[Entry] = (),
) -> None:
    """After a commit: write ``entries`` and those of the partition's files no entry names.

    A failure is logged, not raised: the commit is done, and a file left out is read in
    full (and indexed) by the next load that needs it.
    """
    if index is None:
        return
    try:
        dataset, fragments = partition_files(table, owner, owner_id)
        known = {e.path for e in entries}
        fresh = [
            read_entry(dataset, f, index.first, index.counted)
            for f in fragments
            if f.path not in known and not index.covers(f.path)
        ]
        index.add([*entries, *fresh], [f.path for f in fragments])
    except Exception:  # the commit stands; the index only saves reads
        logger.warning("key index of %s not updated", index.root, exc_info=True)
