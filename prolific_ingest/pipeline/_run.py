"""The load run: a :class:`LoadPlan` -> a committed cache entry and its parsed tables.

A cache hit is parsed as it is; otherwise the job is resolved (:mod:`prolific_ingest.exports._resolve`), waited
for, downloaded into a staging file (:mod:`._fetch`) and parsed before it is committed
(:mod:`._parse`). Composes the single-job modules (exports, download, cache, archive,
tables, lake); it holds no I/O code of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from .. import exports as lifecycle
from ..cache import CachedExport, ExportCache
from ..client import ProlificClient
from ..errors import CacheMissError, ConfigurationError
from ..exports import ExportFilter, ExportJob, ExportRef
from ..exports._resolve import resolve_job
from ._fetch import download_staged
from ._parse import OnBadRecords, Parsed, SinkFn, parse, parse_staged

__all__ = ["LoadPlan", "load"]

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
                staged = download_staged(job, cache, api, progress=progress, whole=False)
                return parse_staged(
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
