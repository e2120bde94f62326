"""The load pipeline: resolve an export, fetch it into the cache, parse it, write it.

Composes the single-job modules (exports, download, cache, archive, tables, lake);
it holds no I/O code of its own beyond the parsed-table cache beside each archive.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pyarrow as pa

from . import exports as lifecycle
from ._retry import RetryState
from ._table_cache import TableCache
from .archive import open_archive
from .cache import CachedExport, ExportCache
from .client import ProlificClient
from .download import download_archive
from .errors import (
    APIError,
    AuthenticationError,
    CacheError,
    CacheMissError,
    ConfigurationError,
    CorruptArchiveError,
    ExportLimitError,
    IntegrityError,
)
from .exports import ExportFilter, ExportJob, ExportRef
from .lake import WriteResult
from .lake import write_export as write_lake
from .lake._spool import staged_files
from .manage import delete_finished_job, prunable_jobs
from .tables import ExportTables, iter_record_batches

OnBadRecords = Literal["raise", "quarantine", "skip"]

__all__ = ["LoadPlan", "Parsed", "download_into_cache", "fetch", "parse", "write_export"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadPlan:
    """What to load: the export's owner, filter and how to resolve it."""

    ref: ExportRef
    filter: ExportFilter
    export_id: str | None
    max_age: timedelta
    offline: bool


def fetch(
    plan: LoadPlan,
    *,
    cache: ExportCache,
    client: Callable[[], ProlificClient],
    progress: bool | str | None,
    wait_timeout: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> CachedExport:
    """Return a committed cache entry for ``plan``, downloading only when needed.

    ``client`` is a factory so that an offline or cache-hit load never builds one.
    """
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
    job = _resolve_job(plan, api, cache)
    if plan.export_id is not None:
        _check_filter(plan, job.filter, known=job.filter_known)
    hit = cache.lookup(plan.ref, job.export_id)
    if hit is not None:
        return hit
    if job.status != "complete" or not job.url:
        job = lifecycle.wait_for_export(api, job, timeout=wait_timeout, progress=progress)
    return download_into_cache(job, cache, api, progress=progress)


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


def _resolve_job(plan: LoadPlan, api: ProlificClient, cache: ExportCache) -> ExportJob:
    if plan.export_id is not None:
        return _job_by_id(plan, api)
    if plan.max_age > timedelta(0):
        reusable = _server_side_reusable(plan, api)
        if reusable is not None:
            logger.info("export %s: reusing a complete server-side export", reusable.export_id)
            return reusable
    try:
        return lifecycle.request_export(api, plan.ref, plan.filter)
    except ExportLimitError as exc:
        if not _free_a_slot(exc, plan.ref, api, cache):
            raise
    return lifecycle.request_export(api, plan.ref, plan.filter)


def _free_a_slot(
    exc: ExportLimitError, ref: ExportRef, api: ProlificClient, cache: ExportCache
) -> bool:
    """At the job cap, delete the oldest job that holds nothing new; ``False`` if none.

    Only a ``failed`` job, or a ``complete`` one whose archive is committed in this
    cache, qualifies (the rule of :func:`~prolific_ingest.prune_exports`), so scheduled
    loads (incremental ones request a new export every run) keep working at the cap.
    """
    jobs = exc.existing_jobs or _listed_jobs(api, ref)
    candidates = prunable_jobs(jobs, cache, keep=0)
    if not candidates:
        return False
    oldest = candidates[-1]
    logger.warning(
        "%s %s is at the export job cap; deleting export %s (%s, already cached) to make room",
        ref.kind,
        ref.id,
        oldest.export_id,
        oldest.status,
    )
    delete_finished_job(api, oldest)
    return True


def _job_by_id(plan: LoadPlan, api: ProlificClient) -> ExportJob:
    """The status of an export named by id, with its filter and age from the list if listed.

    A status body does not say which filter the export was made with: without a list
    entry the job's filter stays *unknown*, so its cache entry never answers a request
    by filter (only by id).
    """
    assert plan.export_id is not None
    job = lifecycle.get_export(api, plan.ref, plan.export_id)
    for item in _listed_jobs(api, plan.ref):
        if item.export_id == job.export_id and item.filter_known:
            return job.replace(filter=item.filter, filter_known=True, created_at=item.created_at)
    return job


def _server_side_reusable(plan: LoadPlan, api: ProlificClient) -> ExportJob | None:
    jobs = _listed_jobs(api, plan.ref)
    return lifecycle.find_reusable_job(jobs, plan.filter, plan.max_age, datetime.now(UTC))


def _listed_jobs(api: ProlificClient, ref: ExportRef) -> list[ExportJob]:
    """The job list, or ``[]`` when the endpoint fails with anything but 401.

    The list endpoint is newer than the rest of the API: it never blocks a load.
    """
    try:
        return lifecycle.list_exports(api, ref)
    except AuthenticationError:
        raise
    except APIError as exc:
        logger.info("listing exports of %s %s failed (%s)", ref.kind, ref.id, exc.status)
        return []


def download_into_cache(
    job: ExportJob, cache: ExportCache, api: ProlificClient, *, progress: bool | str | None
) -> CachedExport:
    ref = job.ref
    assert job.url is not None
    with cache.lock(ref, job.export_id):
        hit = cache.lookup(ref, job.export_id)
        if hit is not None:  # another thread or process fetched it while we waited
            return hit
        url = job.url

        def refresh() -> str:
            fresh = lifecycle.refresh_url(api, job)
            assert fresh.url is not None
            return fresh.url

        settings = api.settings
        budget = RetryState(api.retry)  # a corrupt archive spends the budget a 503 does
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
            return cache.commit(
                ref,
                job.export_id,
                staging,
                filter=job.filter,
                size=result.size,
                sha256=result.sha256,
                etag=result.etag,
                source_url=url,
                filter_known=job.filter_known,
                created_at=job.created_at,
            )


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

    counts: dict[str, int] = {}
    written = None
    with open_archive(entry.archive_path, storage_options=cache.storage_options) as archive:
        metadata = archive.metadata
        batches = iter_record_batches(archive, on_bad_records=on_bad_records)
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
    reusable = on_bad_records != "skip" and counts.get("rejected", 0) == 0
    kept = store.kept()
    if reusable and store.commit(counts, metadata):
        if kept is not None:
            return Parsed(counts, metadata, lambda: kept, written)
        return Parsed(counts, metadata, lambda: _read_committed(store), written)
    tables = kept if kept is not None else store.read_uncommitted()
    store.discard()
    return Parsed(counts, metadata, lambda: tables, written)


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
