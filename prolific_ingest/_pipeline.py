"""The load pipeline: resolve an export, fetch it into the cache, parse it, write it.

Composes the single-job modules (exports, download, cache, archive, tables, lake);
it holds no I/O code of its own beyond the parsed-table cache beside each archive.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import pyarrow as pa

from . import exports as lifecycle
from ._export_resolve import resolve_job
from ._retry import RetryState
from .archive import open_archive
from .cache import CachedExport, ExportCache
from .cache._tables import TableCache
from .client import ProlificClient
from .download import download_archive
from .errors import (
    ArchiveError,
    BadRecordError,
    CacheError,
    CacheMissError,
    ConfigurationError,
    CorruptArchiveError,
    IntegrityError,
)
from .exports import ExportFilter, ExportJob, ExportRef
from .lake import WriteResult
from .lake import write_export as write_lake
from .lake._spool import staged_files
from .tables import ExportTables, iter_record_batches, primary_member

OnBadRecords = Literal["raise", "quarantine", "skip"]

__all__ = [
    "LoadPlan",
    "Parsed",
    "download_into_cache",
    "load",
    "parse",
    "write_export",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadPlan:
    """What to load: the export's owner, filter and how to resolve it."""

    ref: ExportRef
    filter: ExportFilter
    export_id: str | None
    max_age: timedelta
    offline: bool


def load(
    plan: LoadPlan,
    *,
    cache: ExportCache,
    client: Callable[[], ProlificClient],
    progress: bool | str | None,
    wait_timeout: float | None = None,
    on_bad_records: OnBadRecords = "raise",
    sink_for: Callable[[CachedExport], SinkFn | None] | None = None,
) -> tuple[CachedExport, Parsed]:
    """Fetch and parse ``plan``'s export: its committed entry and the :class:`Parsed` result.

    A cache hit is parsed as :func:`parse` does (the parsed-table cache, no verification).
    A cold load decompresses the primary member once: the parse's own read of it checks
    its CRC, the other members are verified on a thread while it runs, and only when both
    passed does the stream end and the archive get committed (then its parsed tables). A
    corrupt member raises :class:`CorruptArchiveError` naming it and the export, with
    nothing committed (a sink has seen an unfinished stream): the next load downloads
    again. ``sink_for(entry)`` gives the sink
    the parse streams into (``None``: none); ``entry`` is the one that will be committed.
    The entry's lock is held from the download to the commit, so concurrent loads of one
    export download it once.
    """
    found = _locate(plan, cache=cache, client=client, progress=progress, wait_timeout=wait_timeout)
    if isinstance(found, CachedExport):
        hit: CachedExport | None = found
    else:
        job, api = found
        with cache.lock(job.ref, job.export_id):
            hit = cache.lookup(job.ref, job.export_id)
            if hit is None:  # else another thread or process fetched it while we waited
                staged = _download(job, cache, api, progress=progress, whole=False)
                return _parse_staged(
                    staged, cache=cache, on_bad_records=on_bad_records, sink_for=sink_for
                )
    assert hit is not None
    sink = sink_for(hit) if sink_for is not None else None
    return hit, parse(hit, cache=cache, on_bad_records=on_bad_records, sink=sink)


def _locate(
    plan: LoadPlan,
    *,
    cache: ExportCache,
    client: Callable[[], ProlificClient],
    progress: bool | str | None,
    wait_timeout: float | None,
) -> CachedExport | tuple[ExportJob, ProlificClient]:
    """A committed entry for ``plan``, else the complete job to download (and its client)."""
    hit = _cache_hit(plan, cache)
    if hit is not None:
        if plan.export_id is not None:
            _check_filter(plan, hit.filter, known=hit.filter_known)
        logger.info("export %s: loaded from cache %s", hit.export_id, hit.path)
        return hit
    if plan.offline:
        wanted = f"export {plan.export_id}" if plan.export_id else f"{plan.ref.kind} {plan.ref.id}"
        msg = (
            f"offline=True but {wanted} is not in the cache at {cache.root!s}; "
            "load it once online (or pass the cache= it was loaded into)"
        )
        raise CacheMissError(msg)
    api = client()
    job = resolve_job(
        api, plan.ref, plan.filter, export_id=plan.export_id, max_age=plan.max_age, cache=cache
    )
    if plan.export_id is not None:
        _check_filter(plan, job.filter, known=job.filter_known)
    hit = cache.lookup(plan.ref, job.export_id)
    if hit is not None:
        return hit
    if job.status != "complete" or not job.url:
        job = lifecycle.wait_for_export(api, job, timeout=wait_timeout, progress=progress)
    return job, api


def _check_filter(plan: LoadPlan, actual: ExportFilter, *, known: bool) -> None:
    """Refuse filter arguments that contradict the export named by ``export_id``.

    An export's filter is fixed when it is requested; silently returning the rows of
    another window or study would be wrong data. Without filter arguments, or when the
    export's own filter is unknown (loaded by id, not listed), nothing is checked.
    """
    if plan.filter == ExportFilter():
        return
    if not known:
        logger.warning(
            "export %s: its filter is unknown, so the filter arguments (%s) cannot be "
            "checked against it; they do not change what it contains",
            plan.export_id,
            plan.filter.describe(),
        )
        return
    if plan.filter == actual:
        return
    msg = (
        f"export {plan.export_id} was made with filter {actual.describe()}, but "
        f"{plan.filter.describe()} was asked for; drop export_id= to request a new export "
        "with that filter, or drop the filter arguments"
    )
    raise ConfigurationError(msg)


def _cache_hit(plan: LoadPlan, cache: ExportCache) -> CachedExport | None:
    if plan.export_id is not None:
        return cache.lookup(plan.ref, plan.export_id)
    if plan.offline:
        return cache.find(plan.ref, plan.filter, max_age=plan.max_age)
    if plan.max_age > timedelta(0):
        return cache.find(plan.ref, plan.filter, max_age=plan.max_age)
    return None


def download_into_cache(
    job: ExportJob, cache: ExportCache, api: ProlificClient, *, progress: bool | str | None
) -> CachedExport:
    """Download a complete job's archive, verify every member, commit it; return the entry."""
    with cache.lock(job.ref, job.export_id):
        hit = cache.lookup(job.ref, job.export_id)
        if hit is not None:  # another thread or process fetched it while we waited
            return hit
        return _download(job, cache, api, progress=progress, whole=True).commit()


@dataclass(frozen=True)
class _Staged:
    """A downloaded archive in its entry's staging file, not committed."""

    cache: ExportCache
    entry: CachedExport  # what the entry will be once committed
    path: str
    commit_args: dict[str, Any]

    def commit(self) -> CachedExport:
        """Commit the staged archive (the entry is found by lookups from now on)."""
        entry = self.entry
        return self.cache.commit(entry.ref, entry.export_id, self.path, **self.commit_args)

    def discard(self) -> None:
        """Remove the staging file: nothing of this download is kept."""
        self.cache.discard(self.path)


def _download(
    job: ExportJob,
    cache: ExportCache,
    api: ProlificClient,
    *,
    progress: bool | str | None,
    whole: bool,
) -> _Staged:
    """Download ``job``'s archive into a staging file and check it; call under the lock.

    The archive is opened (a ZIP, safe names and sizes, readable metadata) and, with
    ``whole``, every member's CRC is verified; without, the members are left to the
    parse (:func:`_parse_staged`). A corrupt archive is fetched again while the retry
    budget lasts (it spends the budget a 503 does).
    """
    ref = job.ref
    assert job.url is not None
    url = job.url

    def refresh() -> str:
        fresh = lifecycle.refresh_url(api, job)
        assert fresh.url is not None
        return fresh.url

    settings = api.settings
    budget = RetryState(api.retry)
    while True:
        staging = cache.staging(ref, job.export_id)
        try:
            result = download_archive(
                url,
                staging,
                export_id=job.export_id,
                refresh=refresh,
                retry=api.retry,
                progress=progress,
                verify=settings.ca_bundle or True,
                storage_options=cache.storage_options,
                timeout=(settings.connect_timeout, settings.read_timeout),
                stall_timeout=settings.stall_timeout,
                stall_min_rate=settings.stall_min_rate,
            )
            with open_archive(staging, storage_options=cache.storage_options) as archive:
                if whole:
                    archive.verify()
        except (CorruptArchiveError, IntegrityError) as exc:
            cache.discard(staging)
            delay = budget.next_delay()
            if delay is None:
                if isinstance(exc, CorruptArchiveError):
                    raise  # it names the damaged member
                msg = (
                    f"export {job.export_id}: the archive was corrupt in each of "
                    f"{budget.attempts} download(s): {exc}"
                )
                raise CorruptArchiveError(msg, source=url) from exc
            logger.warning(
                "export %s: archive failed verification (%s); fetching again in %.2fs "
                "(attempt %d of %d)",
                job.export_id,
                type(exc).__name__,
                delay,
                budget.attempts + 1,
                api.retry.max_attempts,
            )
            budget.wait(delay)
            url = refresh()
            continue
        except BaseException:
            cache.discard(staging)
            raise
        commit_args: dict[str, Any] = {
            "filter": job.filter,
            "size": result.size,
            "sha256": result.sha256,
            "etag": result.etag,
            "source_url": url,
            "filter_known": job.filter_known,
            "created_at": job.created_at,
        }
        entry = cache.pending(ref, job.export_id, **commit_args)
        return _Staged(cache, entry, staging, commit_args)


# -- parsing, with the parsed-table cache beside the archive -----------------------------------

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
                    store.written_files,
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


def _parse_staged(
    staged: _Staged,
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

    def __init__(self, staged: _Staged) -> None:
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


def _after_failed_parse(staged: _Staged, exc: BaseException) -> None:
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
