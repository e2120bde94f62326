"""The parsed-table cache: ``<entry>/tables/<table>.arrow`` beside each cached archive.

A cold load streams the parser's record batches into one file writer per table (Arrow
IPC, see :mod:`._table_files`; gathered into record batches of up to
:data:`~._table_files.BATCH_ROWS` rows within a :data:`BUFFER_BYTES` budget, so memory
stays flat and batches stay few), under
process-unique temporary names; they are renamed into place and ``_tables.json`` is
written **last** as the commit marker. A warm load
(same export, same archive checksum, same format) reads these files instead of
re-parsing. The marker is written to a temporary name and renamed, so it is either whole
or absent; a damaged marker reads as absent. It is encoded with the stdlib's
``json.dumps`` (``ensure_ascii``), which cannot fail on metadata: a lone surrogate such
as ``"\\udc80"`` is written back as the same escape and read back as the same code
point. Tables with quarantined lines, or parsed with ``on_bad_records="skip"``,
are never committed: another load may choose another policy.

The cache is an optimisation: when its files cannot be written (a full disk, a
read-only folder: any ``OSError``), the load goes on with a logged warning, every
temporary file is removed, nothing is committed and :attr:`TableCache.failed` is set,
so the caller takes the tables from memory or parses the archive again
(:meth:`TableCache.parse_again`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import fsspec
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem

from .._parquet import BufferBudget
from .._version import __version__
from ..archive import open_archive
from ..errors import redact_url
from ..tables import ExportTables, OnBadRecords, build_tables, schema_for, table_names
from ._entry import CachedExport
from ._table_files import BatchFileWriter, TableFile, read_table_file
from ._table_writer import BackgroundWriter

__all__ = ["TABLES_FORMAT", "TableCache"]

logger = logging.getLogger(__name__)

#: Bump when the cached table files or the table schemas change (1: zstd Parquet files).
TABLES_FORMAT = 2
_DONE = "_tables.json"
#: The table files of earlier formats, removed when an entry's tables are committed again.
_OLD_SUFFIXES = (".parquet",)
#: Bytes of record batches the cache's writers may hold together before writing.
BUFFER_BYTES = 12 * 1024 * 1024
#: Largest total of record batches a cold load keeps to hand its tables over from memory.
MEMORY_BYTES = 1024 * 1024 * 1024


class TableCache:
    """Read and write the parsed tables of one cache entry."""

    def __init__(self, entry: CachedExport, storage_options: dict[str, Any] | None) -> None:
        self.entry = entry
        self.kind = entry.ref.kind
        self.storage_options = storage_options
        self.url = f"{entry.path.rstrip('/')}/tables"
        self.fs, root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        self.root = root.rstrip("/")
        #: Why the table files could not be written, if they could not (see :meth:`tee`).
        self.failed: OSError | None = None

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}.arrow"

    # -- reading -------------------------------------------------------------------------------
    def info(self) -> dict[str, Any] | None:
        """The commit marker, if it is present, valid and matches this archive."""
        try:
            with self.fs.open(f"{self.root}/{_DONE}", "rb") as fh:
                info: Any = json.loads(fh.read().decode("ascii"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # JSON/ASCII decoding errors are ValueErrors
            logger.warning("export %s: unreadable parsed-table cache", self.entry.export_id)
            return None
        if not isinstance(info, dict) or not isinstance(info.get("counts"), dict):
            logger.warning("export %s: unreadable parsed-table cache", self.entry.export_id)
            return None
        same_archive = info.get("archive_sha256") == self.entry.manifest.get("sha256")
        if info.get("format") != TABLES_FORMAT or not same_archive:
            return None
        return info

    def read(self, info: dict[str, Any]) -> ExportTables | None:
        """Read every table; ``None`` (and a warning) when a file is damaged or does not match."""
        tables: dict[str, pa.Table] = {}
        try:
            for name in table_names(self.kind):
                table = read_table_file(self.fs, self._path(name))
                if not table.schema.equals(schema_for(name, self.kind)):
                    return None
                if table.num_rows != info["counts"].get(name):
                    return None
                tables[name] = table
        except (OSError, KeyError, pa.ArrowException):
            logger.warning("export %s: damaged parsed-table cache", self.entry.export_id)
            return None
        return ExportTables(kind=self.kind, tables=tables)

    # -- writing -------------------------------------------------------------------------------
    def tee(
        self,
        batches: Iterable[tuple[str, pa.RecordBatch]],
        counts: dict[str, int],
        *,
        keep: bool = False,
    ) -> Iterator[tuple[str, pa.RecordBatch]]:
        """Yield ``batches`` unchanged while a background thread writes them to table files.

        ``counts`` is filled with rows per table. With ``keep``, the batches are also kept
        while they total at most :data:`MEMORY_BYTES` (then :meth:`kept` returns them as
        tables, so a cold load need not read its own cache back). Call :meth:`commit` or
        :meth:`discard` afterwards (``discard`` also runs if the consumer stops early
        with an error).

        A file that cannot be written (any ``OSError``: a full disk ...) does not stop
        the stream: the writing stops, its temporary files are removed, a warning is
        logged and :attr:`failed` is set (then :meth:`commit` commits nothing).
        """
        self._tmp = {
            name: f"{self._path(name)}.tmp-{uuid.uuid4().hex}" for name in table_names(self.kind)
        }
        self._kept: dict[str, list[pa.RecordBatch]] | None = (
            {name: [] for name in table_names(self.kind)} if keep else None
        )
        kept_bytes = 0
        writer: BackgroundWriter | None = None
        try:
            self.fs.makedirs(self.root, exist_ok=True)
            writer = BackgroundWriter(
                self._writer, table_names(self.kind), BufferBudget(BUFFER_BYTES)
            )
        except OSError as exc:
            self._give_up(writer, exc)
            writer = None
        try:
            for name, batch in batches:
                if writer is not None:
                    try:
                        writer.put((name, batch))
                    except OSError as exc:
                        self._give_up(writer, exc)
                        writer = None
                counts[name] = counts.get(name, 0) + batch.num_rows
                if self._kept is not None:
                    kept_bytes += batch.nbytes
                    if kept_bytes > MEMORY_BYTES:
                        self._kept = None  # too big to hand over: read back on demand
                    else:
                        self._kept[name].append(batch)
                yield name, batch
            for name in table_names(self.kind):
                counts.setdefault(name, 0)
            if writer is not None:
                try:
                    writer.finish()
                except OSError as exc:
                    self._give_up(writer, exc)
                    writer = None
        except BaseException:
            if writer is not None:
                writer.abort()
            self.discard()
            raise

    def _give_up(self, writer: BackgroundWriter | None, exc: OSError) -> None:
        """Stop writing table files after ``exc``: close and remove them, log a warning."""
        if writer is not None:
            writer.abort()
        self.discard()
        self.failed = exc
        logger.warning(
            "export %s: could not write the parsed-table cache in %s (the load goes on "
            "without it): %s",
            self.entry.export_id,
            redact_url(self.url),
            exc,
        )

    def kept(self) -> ExportTables | None:
        """The tables :meth:`tee` kept in memory (``None`` if it kept none, or too many)."""
        kept = getattr(self, "_kept", None)
        if kept is None:
            return None
        return ExportTables(
            kind=self.kind,
            tables={
                name: pa.Table.from_batches(parts, schema=schema_for(name, self.kind))
                for name, parts in kept.items()
            },
        )

    def _writer(self, name: str, budget: BufferBudget) -> BatchFileWriter:
        return BatchFileWriter(
            self.fs.open(self._tmp[name], "wb"), schema_for(name, self.kind), budget
        )

    def read_uncommitted(self) -> ExportTables:
        """Read the temporary files written by :meth:`tee` (then :meth:`discard` them).

        Only when :attr:`failed` is unset: otherwise there are none (see :meth:`parse_again`).
        """
        tables = {}
        for name in table_names(self.kind):
            tables[name] = read_table_file(self.fs, self._tmp[name])
        return ExportTables(kind=self.kind, tables=tables)

    @property
    def local(self) -> bool:
        """Whether the table files are on the local filesystem."""
        return isinstance(self.fs, LocalFileSystem)

    def open_written(self) -> dict[str, TableFile] | None:
        """The local temporary table files :meth:`tee` wrote (once it finished), opened.

        ``None`` for a cache on an object store, or when the files were not all written.
        Open files stay readable when :meth:`commit` renames them; the caller closes them.
        """
        tmp = getattr(self, "_tmp", None)
        if tmp is None or self.failed is not None or not self.local:
            return None
        names = table_names(self.kind)
        if not all(name in tmp and self.fs.exists(tmp[name]) for name in names):
            return None
        opened: dict[str, TableFile] = {}
        try:
            for name in names:
                opened[name] = TableFile(tmp[name])
        except (OSError, pa.ArrowException):
            for handle in opened.values():
                handle.close()
            return None
        return opened

    def parse_again(self, on_bad_records: OnBadRecords) -> ExportTables:
        """Parse the cached archive into memory (when :attr:`failed` left no table files)."""
        with open_archive(self.entry.archive_path, storage_options=self.storage_options) as a:
            return build_tables(a, on_bad_records=on_bad_records)

    def commit(self, counts: dict[str, int], metadata: dict[str, Any]) -> bool:
        """Move the temporary files into place and write the marker last; False if that failed.

        On failure nothing of this commit stays: the files it moved into place are removed
        too, and :attr:`failed` is set.
        """
        if self.failed is not None:
            return False
        moved: list[str] = []
        try:
            for name, tmp in self._tmp.items():
                self.fs.mv(tmp, self._path(name))
                moved.append(self._path(name))
            for name in self._tmp:
                for suffix in _OLD_SUFFIXES:  # an earlier format's file of this table
                    old = f"{self.root}/{name}{suffix}"
                    if self.fs.exists(old):
                        self.fs.rm(old)
            marker = {
                "format": TABLES_FORMAT,
                "library_version": __version__,
                "archive_sha256": self.entry.manifest.get("sha256"),
                "counts": counts,
                "metadata": metadata,
            }
            # ensure_ascii: escapes lone surrogates instead of failing on them; encoded
            # before anything is opened, written to a temporary name, renamed last.
            body = json.dumps(marker, ensure_ascii=True).encode("ascii")
            tmp = f"{self.root}/{_DONE}.tmp-{uuid.uuid4().hex}"
            self._tmp[_DONE] = tmp
            with self.fs.open(tmp, "wb") as fh:
                fh.write(body)
            self.fs.mv(tmp, f"{self.root}/{_DONE}")
            del self._tmp[_DONE]
        except (OSError, TypeError, ValueError) as exc:  # an optimisation: never fail a load
            logger.warning(
                "export %s: could not cache parsed tables in %s: %s",
                self.entry.export_id,
                redact_url(self.url),
                exc,
            )
            self.discard()
            for path in moved:
                with contextlib.suppress(OSError):
                    self.fs.rm(path)
            self.failed = exc if isinstance(exc, OSError) else OSError(str(exc))
            return False
        return True

    def discard(self) -> None:
        """Remove any temporary file left by :meth:`tee`."""
        for tmp in getattr(self, "_tmp", {}).values():
            try:
                if self.fs.exists(tmp):
                    self.fs.rm(tmp)
            except OSError:
                logger.debug("could not remove %s", tmp)
