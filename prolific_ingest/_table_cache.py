"""The parsed-table cache: ``<entry>/tables/<table>.parquet`` beside each cached archive.

A cold load streams the parser's record batches into one Parquet writer per table
(gathered into row groups of up to :data:`ROW_GROUP_ROWS` rows within a
:data:`BUFFER_BYTES` budget, so memory stays flat and row groups stay few), under
process-unique temporary names; they are renamed into place and ``_tables.json`` is
written **last** as the commit marker. A warm load
(same export, same archive checksum, same format) reads these files instead of
re-parsing. Tables with quarantined lines, or parsed with ``on_bad_records="skip"``,
are never committed: another load may choose another policy.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import fsspec
import orjson
import pyarrow as pa
import pyarrow.dataset as ds

from ._parquet import BufferBudget, RowGroupWriter
from ._version import __version__
from .cache import CachedExport
from .tables import ExportTables, schema_for, table_names

__all__ = ["TABLES_FORMAT", "TableCache"]

logger = logging.getLogger(__name__)

#: Bump when the cached table files or the table schemas change.
TABLES_FORMAT = 1
_DONE = "_tables.json"
#: Rows per row group of the cached tables (whole blocks' batches are gathered up to this).
ROW_GROUP_ROWS = 131072
#: Bytes of record batches the cache's writers may hold together before writing.
BUFFER_BYTES = 24 * 1024 * 1024


class TableCache:
    """Read and write the parsed tables of one cache entry."""

    def __init__(self, entry: CachedExport, storage_options: dict[str, Any] | None) -> None:
        self.entry = entry
        self.kind = entry.ref.kind
        self.fs, root = fsspec.core.url_to_fs(
            f"{entry.path.rstrip('/')}/tables", **(storage_options or {})
        )
        self.root = root.rstrip("/")

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}.parquet"

    # -- reading -------------------------------------------------------------------------------
    def info(self) -> dict[str, Any] | None:
        """The commit marker, if it is present, valid and matches this archive."""
        try:
            with self.fs.open(f"{self.root}/{_DONE}", "rb") as fh:
                info: dict[str, Any] = orjson.loads(fh.read())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError):
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
                with self.fs.open(self._path(name), "rb") as fh:
                    table = _read_parquet(fh)
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
        self, batches: Iterable[tuple[str, pa.RecordBatch]], counts: dict[str, int]
    ) -> Iterator[tuple[str, pa.RecordBatch]]:
        """Yield ``batches`` unchanged while writing them to temporary table files.

        ``counts`` is filled with rows per table. Call :meth:`commit` or :meth:`discard`
        afterwards (``discard`` also runs if the consumer stops early with an error).
        """
        self._tmp = {
            name: f"{self._path(name)}.tmp-{uuid.uuid4().hex}" for name in table_names(self.kind)
        }
        self.fs.makedirs(self.root, exist_ok=True)
        budget = BufferBudget(BUFFER_BYTES)
        writers: dict[str, RowGroupWriter] = {}
        try:
            for name, batch in batches:
                if name not in writers:
                    writers[name] = self._writer(name, budget)
                writers[name].write(batch)
                counts[name] = counts.get(name, 0) + batch.num_rows
                yield name, batch
            for name in table_names(self.kind):
                if name not in writers:  # every table always exists, even empty
                    writers[name] = self._writer(name, budget)
                    counts.setdefault(name, 0)
            for writer in writers.values():
                writer.close()
        except BaseException:
            for writer in writers.values():
                writer.abort()
            self.discard()
            raise

    def _writer(self, name: str, budget: BufferBudget) -> RowGroupWriter:
        return RowGroupWriter(
            self.fs.open(self._tmp[name], "wb"),
            schema_for(name, self.kind),
            ROW_GROUP_ROWS,
            budget,
            use_dictionary=False,  # faster warm reads, about the same size with zstd
        )

    def read_uncommitted(self) -> ExportTables:
        """Read the temporary files written by :meth:`tee` (then :meth:`discard` them)."""
        tables = {}
        for name in table_names(self.kind):
            with self.fs.open(self._tmp[name], "rb") as fh:
                tables[name] = _read_parquet(fh)
        return ExportTables(kind=self.kind, tables=tables)

    def commit(self, counts: dict[str, int], metadata: dict[str, Any]) -> bool:
        """Move the temporary files into place and write the marker last; False if that failed."""
        try:
            for name, tmp in self._tmp.items():
                self.fs.mv(tmp, self._path(name))
            marker = {
                "format": TABLES_FORMAT,
                "library_version": __version__,
                "archive_sha256": self.entry.manifest.get("sha256"),
                "counts": counts,
                "metadata": metadata,
            }
            with self.fs.open(f"{self.root}/{_DONE}", "wb") as fh:
                fh.write(orjson.dumps(marker))
        except OSError as exc:  # an optimisation only: never fail a load for it
            logger.warning(
                "export %s: could not cache parsed tables: %s", self.entry.export_id, exc
            )
            self.discard()
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


_PARQUET = ds.ParquetFileFormat()


def _read_parquet(fh: Any) -> pa.Table:
    """Read one cached table file.

    The buffers come from the system allocator: the default pool (mimalloc) keeps about
    half a table's size again of freed decoding memory, which a warm load's peak RSS
    would otherwise pay for every table.
    """
    table: pa.Table = _PARQUET.make_fragment(fh).to_table(memory_pool=pa.system_memory_pool())
    return table
