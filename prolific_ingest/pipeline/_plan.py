"""The load plan: what a load verb's arguments ask for, run through the pipeline.

:func:`load_export` is the one body behind ``load_batch_export`` and
``load_collection_export``: it checks the arguments, settles the filter (with the
incremental watermark policy), the reuse age, the cache and the lake target, builds the
:class:`~prolific_ingest.pipeline._run.LoadPlan` and runs
:func:`~prolific_ingest.pipeline._run.load`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from .._urls import StorageURL, parse_storage_url
from ..cache import CachedExport, ExportCache
from ..cache._entry import ANY_AGE, as_timedelta
from ..client import ProlificClient
from ..config import Settings
from ..errors import ConfigurationError
from ..exports import ExportFilter, ExportRef
from ..lake import committed_exports
from ..lake._layout import check_partition_by
from ..lake._storage import resolve_lake
from ..lake._target import LakeTarget
from ..result import Export
from . import _parse, _run
from ._options import UNSET, LoadRequest
from ._run import LoadPlan

__all__ = ["DEFAULT_MAX_AGE", "INCREMENTAL_OVERLAP", "UNSET", "incremental_filter", "load_export"]

logger = logging.getLogger(__name__)

#: Reuse a cached or server-side complete export with the same filter younger than this.
DEFAULT_MAX_AGE = timedelta(minutes=15)
#: Incremental loads re-request this much before the last watermark: the ``from`` bound's
#: exact semantics are not documented, and responses may be committed late. The overlap is
#: merged on the natural keys, so the lake's tables still hold each row once.
INCREMENTAL_OVERLAP = timedelta(hours=1)


def load_export(ref: ExportRef, request: LoadRequest) -> Export:
    """Load ``ref``'s export as ``load_batch_export`` documents."""
    if request.on_bad_records not in ("raise", "quarantine", "skip"):
        msg = (
            "on_bad_records must be 'raise', 'quarantine' or 'skip', "
            f"not {request.on_bad_records!r}"
        )
        raise ConfigurationError(msg)
    flt = ExportFilter.coerce(study_id=request.study_id, since=request.since, until=request.until)
    lake = request.output
    target = parse_storage_url(lake.url, lake.storage_options) if lake is not None else None
    if (
        lake is not None and target is not None
    ):  # a bad lake URL or option fails before any download
        resolve_lake(target.url, target.storage_options)
        check_partition_by(lake.partition_by)
        if lake.incremental:
            flt = incremental_filter(ref, flt, target)
    incremental = lake is not None and lake.incremental
    plan = LoadPlan(
        ref=ref,
        filter=flt,
        export_id=request.export_id,
        max_age=_reuse_age(request.max_age, offline=request.offline, incremental=incremental),
        offline=request.offline,
    )
    settings = _settings(request)
    store = _cache(request, settings)
    client = request.client

    def make_client() -> ProlificClient:
        if isinstance(client, ProlificClient):
            return client
        return ProlificClient(settings, retry=request.retry)

    entry, parsed = _run.load(
        plan,
        cache=store,
        client=make_client,
        progress=request.progress,
        wait_timeout=request.wait_timeout,
        on_bad_records=request.on_bad_records,
        sink_for=_lake_sink(target, ref, lake),
    )
    return Export(
        export_id=entry.export_id,
        kind=ref.kind,
        owner_id=ref.id,
        filter=entry.filter if entry.filter_known else None,
        fetched_at=entry.fetched_at,
        metadata=parsed.metadata,
        archive_url=entry.archive_path,
        row_counts=parsed.counts,
        load_tables=parsed.load,
        storage_options=store.storage_options,
        written=parsed.written,
    )


def _settings(request: LoadRequest) -> Settings:
    """The connection settings: the client's, else the environment's (and deprecated keywords)."""
    if isinstance(request.client, ProlificClient):
        return request.client.settings
    if isinstance(request.client, Settings):
        return request.client
    cache = request.cache if isinstance(request.cache, str) and request.cache else None
    return Settings.from_env(
        token=request.token,
        base_url=request.base_url,
        **({"cache_dir": cache} if cache else {}),
    )


def _cache(request: LoadRequest, settings: Settings) -> ExportCache:
    """The export cache: as given, else at the settings' location."""
    if isinstance(request.cache, ExportCache):
        return request.cache
    location = request.cache or settings.cache_dir  # the variable may be a bucket too
    return ExportCache(location, storage_options=request.cache_options)


def _reuse_age(max_age: timedelta | float | None, *, offline: bool, incremental: bool) -> timedelta:
    """The plan's reuse age: ``max_age`` as given, else the default for the kind of load."""
    if max_age is UNSET:
        if offline:
            return ANY_AGE
        if incremental:
            return timedelta(0)  # a scheduled incremental run wants the newest responses
        max_age = DEFAULT_MAX_AGE
    return as_timedelta(max_age) or timedelta(0)  # None (deprecated) was turned into 0


def _lake_sink(
    target: StorageURL | None, ref: ExportRef, lake: LakeTarget | None
) -> Callable[[CachedExport], _parse.SinkFn | None]:
    """The sink each entry's parse streams into: the lake at ``target`` (``None``: none)."""

    def sink_for(entry: CachedExport) -> _parse.SinkFn | None:
        if target is None or lake is None:
            return None
        return functools.partial(
            _parse.write_export,
            output=target.url,
            kind=ref.kind,
            owner_id=ref.id,
            export_id=entry.export_id,
            filter=entry.filter if entry.filter_known else None,
            archive_sha256=entry.manifest.get("sha256"),
            overwrite=lake.overwrite,
            partition_by=lake.partition_by,
            storage_options=target.storage_options,
        )

    return sink_for


def incremental_filter(ref: ExportRef, flt: ExportFilter, output: StorageURL) -> ExportFilter:
    """``flt`` narrowed to start at the lake's last watermark minus :data:`INCREMENTAL_OVERLAP`.

    The watermark is the newest among the load records of ``ref`` with the same study
    scope in ``output``; with none, ``flt`` is returned unchanged. An explicit later
    ``since`` wins; a window that would start after ``until`` is refused.
    """
    records = committed_exports(output.url, ref, storage_options=output.storage_options)
    # Only loads of the same study scope count: a study_id=A run says nothing about B.
    marks = [
        r["watermark"]
        for r in records
        if r.get("watermark")
        and isinstance(r.get("filter"), dict)
        and r["filter"].get("study_id") == flt.study_id
    ]
    if not marks:
        logger.info(
            "%s %s: no load recorded in %s; loading everything", ref.kind, ref.id, output.display
        )
        return flt
    watermark = max(datetime.fromisoformat(str(m)) for m in marks)
    since = (watermark - INCREMENTAL_OVERLAP).astimezone(UTC).replace(microsecond=0)
    if flt.since is not None and flt.since > since:
        since = flt.since
    if flt.until is not None and since > flt.until:
        msg = (
            f"incremental load of {ref.kind} {ref.id}: it would start at {since.isoformat()} "
            f"(the watermark in {output.display} minus the overlap), later than until "
            f"{flt.until.isoformat()}; that window is already loaded: drop until= or "
            "incremental=True"
        )
        raise ConfigurationError(msg)
    logger.info("%s %s: incremental load from %s", ref.kind, ref.id, since.isoformat())
    return ExportFilter(study_id=flt.study_id, since=since, until=flt.until)
