"""The parse stage and the sink hand-over: an archive -> tables, the table cache, a sink.

:func:`parse` reads a committed entry's parsed-table cache or parses it once, streaming
the batches into the cache files and a sink; :func:`parse_staged` does so for a staged
download, verifying its other members meanwhile, and commits it only once all passed.
:func:`write_export` is the lake sink.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from ..archive import open_archive
from ..cache import CachedExport, ExportCache
from ..cache._tables import TableCache
from ..errors import ArchiveError, BadRecordError, CacheError, CorruptArchiveError
from ..exports import ExportFilter
from ..lake import WriteResult
from ..lake import write_export as write_lake
from ..lake._spool import staged_files
from ..tables import ExportTables, iter_record_batches, primary_member
from ._fetch import Staged

OnBadRecords = Literal["raise", "quarantine", "skip"]

__all__ = ["OnBadRecords", "Parsed", "SinkFn", "parse", "parse_staged", "write_export"]

logger = logging.getLogger(__name__)


#: Writes a stream of record batches (or a mapping of tables) as one committed export.
SinkFn = Callable[[Iterable[tuple[str, pa.RecordBatch]] | Mapping[str, pa.Table]], WriteResult]


@dataclass(frozen=True)
class Parsed:
    """The outcome of :func:`parse`: row counts and metadata now, tables on demand."""

    counts: dict[str, int]
    metadata: dict[str, Any]
    load: Callable[[], ExportTables]
    written: WriteResult | None


def parse(
    entry: CachedExport,
    *,
    cache: ExportCache,
    on_bad_records: OnBadRecords = "raise",
    sink: SinkFn | None = None,
) -> Parsed:
    """Parse ``entry`` (or read its parsed-table cache) and optionally stream it to ``sink``.

    A cold parse streams record batches once: into the parsed-table cache files and, when
    given, into ``sink`` — so with ``output=`` memory stays flat however large the export.
    The tables themselves are read back only when ``Parsed.load()`` is called.
    """
    store = TableCache(entry, cache.storage_options)
    info = store.info()
    warm = store.read(info) if info is not None else None
    if warm is not None and info is not None:
        logger.info("export %s: tables read from the parsed-table cache", entry.export_id)
        written = sink(warm.tables) if sink is not None else None
        return Parsed(warm.row_counts, info.get("metadata") or {}, lambda: warm, written)
    streamed = _stream(entry.archive_path, store, cache, on_bad_records, sink)
    return _finish(store, streamed, on_bad_records)


@dataclass(frozen=True)
class _Streamed:
    counts: dict[str, int]
    metadata: dict[str, Any]
    written: WriteResult | None


def _stream(
    path: str,
    store: TableCache,
    cache: ExportCache,
    on_bad_records: OnBadRecords,
    sink: SinkFn | None,
    last: Callable[[], None] | None = None,
) -> _Streamed:
    """Parse the archive at ``path`` once, into the table cache's files and ``sink``.

    The primary member is read to its end (its CRC checked) before this returns. ``last``
    runs after the last batch and before the stream ends: what it raises, the sink sees
    instead of the end of the stream.
    """
    counts: dict[str, int] = {}
    written = None
    with open_archive(path, storage_options=cache.storage_options) as archive:
        metadata = archive.metadata
        batches = iter_record_batches(archive, on_bad_records=on_bad_records)
        if last is not None:
            batches = _then(batches, last)
        # Without a sink the tables are wanted in memory: keep them, rather than read the
        # cache back (a sink's load must stay flat in memory: it reads back on demand).
        stream = store.tee(batches, counts, keep=sink is None)
        if sink is not None:
            # The sink reads back the table files the tee writes (no copy of its own).
            written = sink(
                staged_files(
                    stream,
                    store.open_written,
                    lambda: iter_record_batches(archive, on_bad_records=on_bad_records),
                    local=store.local,
                )
            )
        for _ in stream:  # a sink that found the export committed read nothing: parse anyway
            pass
    return _Streamed(counts, metadata, written)


def _then(
    batches: Iterator[tuple[str, pa.RecordBatch]], last: Callable[[], None]
) -> Iterator[tuple[str, pa.RecordBatch]]:
    yield from batches
    last()


def _finish(store: TableCache, streamed: _Streamed, on_bad_records: OnBadRecords) -> Parsed:
    """Commit the parsed-table cache when it may be reused; the :class:`Parsed` result."""
    counts, metadata, written = streamed.counts, streamed.metadata, streamed.written
    reusable = on_bad_records != "skip" and counts.get("rejected", 0) == 0
    kept = store.kept()
    if reusable and store.commit(counts, metadata):
        if kept is not None:
            return Parsed(counts, metadata, lambda: kept, written)
        return Parsed(counts, metadata, lambda: _read_committed(store), written)
    if kept is None and store.failed is not None:  # no table files: parse again on demand
        return Parsed(counts, metadata, lambda: store.parse_again(on_bad_records), written)
    tables = kept if kept is not None else store.read_uncommitted()
    store.discard()
    return Parsed(counts, metadata, lambda: tables, written)


def parse_staged(
    staged: Staged,
    *,
    cache: ExportCache,
    on_bad_records: OnBadRecords,
    sink_for: Callable[[CachedExport], SinkFn | None] | None,
) -> tuple[CachedExport, Parsed]:
    """Parse a staged archive, commit it once every member passed its CRC, then its tables.

    The parse's read checks the primary member; a :class:`_MemberCheck` thread verifies the
    others meanwhile (zlib releases the GIL), and the stream ends only once it passed.
    Nothing is committed when the parse fails. If the archive itself is sound (the parse
    stopped at a bad record, a sink failed ...) it is still committed after it is
    verified whole, as a download verified before the parse would have been, so that a
    retry (another ``on_bad_records``, a fixed sink) does not download it again.
    """
    store = TableCache(staged.entry, cache.storage_options)
    others = _MemberCheck(staged)
    try:
        sink = sink_for(staged.entry) if sink_for is not None else None
        streamed = _stream(staged.path, store, cache, on_bad_records, sink, last=others.result)
    except BaseException as exc:
        others.cancel()
        _after_failed_parse(staged, exc)
        raise
    try:
        entry = staged.commit()
    except BaseException:
        store.discard()
        raise
    return entry, _finish(store, streamed, on_bad_records)


class _MemberCheck:
    """Verify every member of a staged archive but the primary one, on a thread."""

    def __init__(self, staged: Staged) -> None:
        self.staged = staged
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=self._run, name="prolific-ingest-verify-members", daemon=True
        )
        self.thread.start()

    def _run(self) -> None:
        try:
            path, options = self.staged.path, self.staged.cache.storage_options
            with open_archive(path, storage_options=options) as archive:
                archive.verify(skip=primary_member(archive), cancel=self.stop)
        except BaseException as exc:  # noqa: BLE001 - raised by result()
            self.error = exc

    def result(self) -> None:
        """Wait for the check; raise what it found."""
        self.thread.join()
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        """Stop the check (within a chunk) and wait for its thread."""
        self.stop.set()
        self.thread.join()


def _after_failed_parse(staged: Staged, exc: BaseException) -> None:
    """Commit or discard a staged archive whose parse raised ``exc``.

    Raises a :class:`CorruptArchiveError` naming the export when the archive is corrupt;
    returns (the caller re-raises ``exc``) otherwise.
    """
    export_id = staged.entry.export_id
    if isinstance(exc, CorruptArchiveError):
        staged.discard()
        raise _corrupt(export_id, exc) from exc
    sound_archive = not isinstance(exc, ArchiveError) or isinstance(exc, BadRecordError)
    if not isinstance(exc, Exception) or not sound_archive:
        staged.discard()  # interrupted, or the archive is unsafe or unreadable
        return
    sound = False
    try:
        with open_archive(staged.path, storage_options=staged.cache.storage_options) as zf:
            zf.verify()  # what the parse did not reach
        sound = True
    except CorruptArchiveError as corrupt:
        raise _corrupt(export_id, corrupt) from exc
    except Exception:  # noqa: BLE001 - cannot tell: keep nothing, report the parse's error
        logger.debug("export %s: could not check the archive after the failed parse", export_id)
    finally:
        if not sound:
            staged.discard()
    if not sound:
        return
    try:
        staged.commit()
    except CacheError as failed:
        logger.warning("export %s: the archive could not be cached: %s", export_id, failed)


def _corrupt(export_id: str, exc: CorruptArchiveError) -> CorruptArchiveError:
    msg = f"export {export_id}: {exc}; nothing was cached, the next load downloads it again"
    return CorruptArchiveError(msg, source=exc.source, member=exc.member)


def _read_committed(store: TableCache) -> ExportTables:
    info = store.info()
    tables = store.read(info) if info is not None else None
    if tables is None:
        msg = f"the parsed tables of export {store.entry.export_id} changed on disk while in use"
        raise CacheError(msg)
    return tables


# -- lake output ---------------------------------------------------------------------------------


def write_export(
    data: Iterable[tuple[str, pa.RecordBatch]] | Mapping[str, pa.Table],
    output: str,
    *,
    kind: str,
    owner_id: str,
    export_id: str,
    filter: ExportFilter | None,
    archive_sha256: str | None = None,
    overwrite: bool = False,
    partition_by: Sequence[str] = (),
    storage_options: dict[str, Any] | None = None,
) -> WriteResult:
    """Load tables (or a batch stream) into the Delta lake at ``output`` as one load.

    See :mod:`prolific_ingest.lake` for the layout, the commits and the load record.
    """
    return write_lake(
        data,
        output,
        kind=kind,
        owner_id=owner_id,
        export_id=export_id,
        filter=filter.to_json() if filter is not None else None,
        archive_sha256=archive_sha256,
        overwrite=overwrite,
        partition_by=partition_by,
        storage_options=storage_options,
    )
