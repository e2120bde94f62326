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
import itertools
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

from ._keyhash import hash_keys, holds_any, unique_hashes
from ._keyrows import _FORMAT, _NO_COUNTS, _SCHEMA, Entry, EntrySpool, _groups, _rows
from ._storage import Lake, arrow_filesystem

__all__ = [
    "COUNTED",
    "Entry",
    "EntrySpool",
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
        return _NO_COUNTS
    summed = pa.concat_tables(tables).group_by("value").aggregate([("n", "sum")])
    return pa.table({"value": summed.column("value"), "n": pc.cast(summed["n_sum"], pa.int64())})


def entry_of(path: str, rows: pa.Table, first: str, counted: str | None) -> Entry:
    """The entry of the data file ``path`` holding ``rows`` (its first-key/counted columns)."""
    counts = count_values(rows.column(counted)) if counted else None
    return Entry(path, unique_hashes([hash_keys(rows.column(first))]), counts)


@dataclass
class _Segment:
    """One segment as read: one row per data file."""

    path: str
    names: list[str]
    hashes: list[np.ndarray]  # per file: its ascending hashes (empty if not read)
    counts: pa.Table  # ``at`` (a position in ``names``), ``value``, ``n``


class KeyIndex:
    """The segments of one owner partition of one table, read once (see the module)."""

    def __init__(self, fs: pafs.FileSystem, root: str, first: str, counted: str | None) -> None:
        self.fs, self.root, self.first, self.counted = fs, root, first, counted
        self._segments: list[_Segment] = []
        self._complete = True  # hashes and counts read: the segments can be merged
        self._where: dict[str, tuple[int, int]] = {}  # file -> (segment, row): the first

    @property
    def segments(self) -> list[str]:
        """The paths of the segments read."""
        return [s.path for s in self._segments]

    @classmethod
    def open(
        cls,
        lake: Lake,
        table: DeltaTable,
        name: str,
        owner: str,
        owner_id: str,
        first: str,
        *,
        hashes: bool = True,
    ) -> KeyIndex | None:
        """The index of ``name``'s partition ``owner=owner_id``, loaded; ``None``: not used.

        ``hashes=False`` reads only the row counts (and the files the entries name).
        """
        protocol = table.protocol()
        if protocol.min_reader_version > 1 or protocol.reader_features:
            return None
        target = arrow_filesystem(lake, f"{KEYS_DIR}/{name}/{owner}={owner_id}")
        if target is None:
            return None
        index = cls(target[0], target[1], first, COUNTED.get(name))
        index._load(hashes=hashes)
        return index

    def _load(self, *, hashes: bool) -> None:
        self._complete = hashes
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        except OSError:
            logger.debug("key index %s: not listed", self.root, exc_info=True)
            return
        columns = ["file", "key_hashes"] if hashes else ["file"]
        columns += ["values", "counts"] if self.counted else []
        for info in sorted(infos, key=lambda i: i.path):
            name = info.base_name
            if info.type != pafs.FileType.File or name.startswith(".") or name[-8:] != ".parquet":
                continue
            try:
                with self.fs.open_input_file(info.path) as source:
                    segment = pq.ParquetFile(source)
                    meta = segment.schema_arrow.metadata or {}
                    if (
                        meta.get(b"format") == _FORMAT
                        and meta.get(b"first_key", b"").decode() == self.first
                        and meta.get(b"counted", b"").decode() == (self.counted or "")
                    ):
                        rows = segment.read(columns=columns, use_threads=False)
                        self._read_segment(info.path, rows)
            except (OSError, ValueError, KeyError, pa.ArrowException):
                logger.debug("key index: segment %s not read", info.path, exc_info=True)

    def _read_segment(self, path: str, rows: pa.Table) -> None:
        names: list[str] = rows.column("file").to_pylist()
        if len(set(names)) != len(names) or None in names:
            msg = "a segment names a file twice"
            raise ValueError(msg)
        hashes = [np.empty(0, np.uint64)] * len(names)
        if "key_hashes" in rows.column_names:
            blobs = rows.column("key_hashes").combine_chunks()
            ends = np.frombuffer(blobs.buffers()[1], np.int64)[blobs.offset :][: len(names) + 1]
            if (ends % 8).any() or blobs.null_count:
                msg = "a file's hashes are not whole 8-byte words"
                raise ValueError(msg)
            data = np.frombuffer(blobs.buffers()[2] or b"", "<u8")
            if len(ends) != len(names) + 1 or (np.diff(ends) < 0).any() or ends[-1] > data.nbytes:
                msg = "a segment's hashes are torn"
                raise ValueError(msg)
            hashes = [data[a // 8 : b // 8] for a, b in itertools.pairwise(ends)]
        counts = pa.table({"at": pa.array([], pa.int64()), "value": [], "n": []})
        if self.counted:
            values, n = (rows.column(c).combine_chunks() for c in ("values", "counts"))
            if pc.any(pc.not_equal(pc.list_value_length(values), pc.list_value_length(n))).as_py():
                msg = "a file's counts do not match its values"
                raise ValueError(msg)
            counts = pa.table(
                {
                    "at": pc.list_parent_indices(values),
                    "value": pc.list_flatten(values),
                    "n": pc.list_flatten(n),
                }
            )
        number = len(self._segments)
        for i, name in enumerate(names):
            self._where.setdefault(name, (number, i))
        self._segments.append(_Segment(path, names, hashes, counts))

    def covers(self, path: str) -> bool:
        """Whether an entry names the data file ``path``."""
        return path in self._where

    def holding(self, hashes: np.ndarray) -> set[str]:
        """The indexed files that may hold one of the first-key ``hashes`` (ascending)."""
        if not self._complete:
            msg = "this index was opened without its hashes"
            raise RuntimeError(msg)
        out: set[str] = set()
        for seg in self._segments:
            out.update(
                name
                for name, run in zip(seg.names, seg.hashes, strict=True)
                if holds_any(run, hashes)
            )
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
            out.append(Entry(path, seg.hashes[at], counts))
        return out

    def _put(self, entries: Iterable[Entry]) -> str:
        """Write one segment (one row per entry), a few entries at a time."""
        meta = {"format": _FORMAT, "first_key": self.first, "counted": self.counted or ""}
        name = f"{uuid.uuid4()}.parquet"
        final = f"{self.root}/{name}"
        local = isinstance(self.fs, pafs.LocalFileSystem)
        if local:
            self.fs.create_dir(self.root, recursive=True)
        # A local segment is written aside and renamed; an object store's PUT is atomic.
        temporary = f"{self.root}/.{name}.tmp" if local else final
        schema = _SCHEMA.with_metadata(meta)
        with pq.ParquetWriter(
            temporary,
            schema,
            filesystem=self.fs,
            compression="none",
            use_dictionary=False,
            write_statistics=False,  # a min/max of the hashes would copy the largest runs
        ) as writer:
            for group in _groups(entries):
                writer.write_table(_rows(group).replace_schema_metadata(meta))
        if local:
            self.fs.move(temporary, final)
        return final

    def add(self, entries: Iterable[Entry], paths: Iterable[str], live: Iterable[str]) -> None:
        """Write ``entries`` as one segment; merge every segment when there are many.

        ``paths`` are the files ``entries`` name (iterated once, and only if one is live);
        ``live`` are the partition's data files now: a merge keeps only their entries.
        """
        live = set(live)
        known = {p for p in paths if p in live}
        if not known:
            return
        fresh = (e for e in entries if e.path in live)
        dead = len(set(self._where) - live)
        many = len(self.segments) + 1 > MAX_SEGMENTS or dead > len(live)
        if not many or not self._complete:
            self._put(fresh)
            return
        kept = [e for e in self._entries(live) if e.path not in known]
        self._put(itertools.chain(kept, fresh))
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
    entries: Sequence[Entry] | EntrySpool = (),
) -> None:
    """After a commit: write ``entries`` and those of the partition's files no entry names.

    A failure is logged, not raised: the commit is done, and a file left out is read in
    full (and indexed) by the next load that needs it.
    """
    if index is None:
        return
    try:
        dataset, fragments = partition_files(table, owner, owner_id)
        named = entries.paths if isinstance(entries, EntrySpool) else [e.path for e in entries]
        known = set(named)
        fresh = [
            read_entry(dataset, f, index.first, index.counted)
            for f in fragments
            if f.path not in known and not index.covers(f.path)
        ]
        index.add(
            itertools.chain(entries, fresh),
            [*named, *(e.path for e in fresh)],
            [f.path for f in fragments],
        )
    except Exception:  # the commit stands; the index only saves reads
        logger.warning("key index of %s not updated", index.root, exc_info=True)
