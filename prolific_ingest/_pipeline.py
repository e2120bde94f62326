"""The load pipeline: resolve an export, fetch it into the cache, parse it, write it.

Composes the single-job modules (exports, download, cache, archive, tables, sinks);
it holds no I/O code of its own beyond the parsed-table cache beside each archive.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import fsspec
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from . import exports as lifecycle
from ._version import __version__
from .archive import open_archive
from .cache import CachedExport, ExportCache
from .client import ProlificClient
from .download import download_archive
from .errors import APIError, AuthenticationError, CacheMissError, CorruptArchiveError
from .exports import ExportFilter, ExportJob, ExportRef
from .sinks import WriteResult, write_parquet
from .tables import ExportTables, build_tables, schema_for, table_names

OnBadRecords = Literal["raise", "quarantine", "skip"]

__all__ = ["LoadPlan", "download_into_cache", "fetch", "parse", "write_export"]

logger = logging.getLogger(__name__)

#: Bump when the parsed-table cache format or table schemas change.
TABLES_FORMAT = 1
_TABLES_DIR = "tables"
_TABLES_DONE = "_tables.json"


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
    job = _resolve_job(plan, cache, api)
    hit = cache.lookup(plan.ref, job.export_id)
    if hit is not None:
        return hit
    if job.status != "complete" or not job.url:
        job = lifecycle.wait_for_export(api, job, timeout=wait_timeout, progress=progress)
    return download_into_cache(job, cache, api, progress=progress)


def _cache_hit(plan: LoadPlan, cache: ExportCache) -> CachedExport | None:
    if plan.export_id is not None:
        return cache.lookup(plan.ref, plan.export_id)
    if plan.offline:
        return cache.find(plan.ref, plan.filter, max_age=None)
    if plan.max_age > timedelta(0):
        return cache.find(plan.ref, plan.filter, max_age=plan.max_age)
    return None


def _resolve_job(plan: LoadPlan, cache: ExportCache, api: ProlificClient) -> ExportJob:
    if plan.export_id is not None:
        return lifecycle.get_export(api, plan.ref, plan.export_id, filter=plan.filter)
    if plan.max_age > timedelta(0):
        reusable = _server_side_reusable(plan, api)
        if reusable is not None:
            logger.info("export %s: reusing a complete server-side export", reusable.export_id)
            return reusable
    return lifecycle.request_export(api, plan.ref, plan.filter)


def _server_side_reusable(plan: LoadPlan, api: ProlificClient) -> ExportJob | None:
    try:
        jobs = lifecycle.list_exports(api, plan.ref)
    except AuthenticationError:
        raise
    except APIError as exc:  # the list endpoint is newer than the rest: never let it block a load
        logger.info("listing exports failed (%s); requesting a new export", exc.status)
        return None
    return lifecycle.find_reusable_job(jobs, plan.filter, plan.max_age, datetime.now(UTC))


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

        for attempt in (1, 2):
            staging = cache.staging(ref, job.export_id)
            try:
                result = download_archive(
                    url,
                    staging,
                    export_id=job.export_id,
                    refresh=refresh,
                    retry=api.retry,
                    progress=progress,
                    verify=api.settings.ca_bundle or True,
                    storage_options=cache.storage_options,
                )
                with open_archive(staging, storage_options=cache.storage_options) as archive:
                    archive.verify()
            except CorruptArchiveError:
                cache.discard(staging)
                if attempt == 2:
                    raise
                logger.warning(
                    "export %s: archive failed verification; fetching again", job.export_id
                )
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
            )
    msg = "unreachable"  # pragma: no cover
    raise AssertionError(msg)  # pragma: no cover


# -- parsing, with the parsed-table cache beside the archive -----------------------------------


def parse(
    entry: CachedExport,
    *,
    cache: ExportCache,
    on_bad_records: OnBadRecords = "raise",
) -> tuple[ExportTables, dict[str, Any]]:
    """Return the entry's tables and metadata, from the parsed-table cache when it is valid."""
    warm = _read_table_cache(entry, cache)
    if warm is not None:
        logger.info("export %s: tables read from the parsed-table cache", entry.export_id)
        return warm
    with open_archive(entry.archive_path, storage_options=cache.storage_options) as archive:
        tables = build_tables(archive, on_bad_records=on_bad_records)
        metadata = archive.metadata
    if on_bad_records != "skip" and tables.row_counts.get("rejected", 0) == 0:
        _write_table_cache(entry, cache, tables, metadata)
    return tables, metadata


def _table_dir(entry: CachedExport) -> str:
    return f"{entry.path.rstrip('/')}/{_TABLES_DIR}"


def _read_table_cache(
    entry: CachedExport, cache: ExportCache
) -> tuple[ExportTables, dict[str, Any]] | None:
    fs, root = fsspec.core.url_to_fs(_table_dir(entry), **(cache.storage_options or {}))
    done = f"{root}/{_TABLES_DONE}"
    try:
        with fs.open(done, "rb") as fh:
            info = orjson.loads(fh.read())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError):
        logger.warning("export %s: unreadable parsed-table cache; re-parsing", entry.export_id)
        return None
    if info.get("format") != TABLES_FORMAT or info.get("archive_sha256") != entry.manifest.get(
        "sha256"
    ):
        return None
    kind = entry.ref.kind
    tables: dict[str, pa.Table] = {}
    try:
        for name in table_names(kind):
            with fs.open(f"{root}/{name}.parquet", "rb") as fh:
                table = pq.read_table(fh)
            if not table.schema.equals(schema_for(name, kind)) or table.num_rows != info[
                "counts"
            ].get(name):
                return None
            tables[name] = table
    except (OSError, KeyError, pa.ArrowException):
        logger.warning("export %s: damaged parsed-table cache; re-parsing", entry.export_id)
        return None
    return ExportTables(kind=kind, tables=tables), info.get("metadata") or {}


def _write_table_cache(
    entry: CachedExport, cache: ExportCache, tables: ExportTables, metadata: dict[str, Any]
) -> None:
    fs, root = fsspec.core.url_to_fs(_table_dir(entry), **(cache.storage_options or {}))
    try:
        fs.makedirs(root, exist_ok=True)
        for name, table in tables.tables.items():
            tmp = f"{root}/{name}.parquet.tmp-{uuid.uuid4().hex}"
            with fs.open(tmp, "wb") as fh:
                pq.write_table(table, fh, compression="zstd")
            fs.mv(tmp, f"{root}/{name}.parquet")
        info = {
            "format": TABLES_FORMAT,
            "library_version": __version__,
            "archive_sha256": entry.manifest.get("sha256"),
            "counts": tables.row_counts,
            "metadata": metadata,
        }
        with fs.open(f"{root}/{_TABLES_DONE}", "wb") as fh:  # written last: the commit marker
            fh.write(orjson.dumps(info))
    except OSError as exc:  # the cache is an optimisation: never fail a load for it
        logger.warning("export %s: could not cache parsed tables: %s", entry.export_id, exc)


# -- Parquet output ------------------------------------------------------------------------------


def write_export(
    tables: ExportTables,
    output: str,
    *,
    kind: str,
    owner_id: str,
    export_id: str,
    filter: ExportFilter,
    archive_sha256: str | None = None,
    overwrite: bool = False,
    partition_by: Sequence[str] = (),
    storage_options: dict[str, Any] | None = None,
) -> WriteResult:
    """Write ``tables`` to ``output`` as one committed export (see :mod:`prolific_ingest.sinks`)."""
    return write_parquet(
        tables.tables,
        output,
        kind=kind,
        owner_id=owner_id,
        export_id=export_id,
        schemas={name: schema_for(name, kind) for name in tables.tables},
        overwrite=overwrite,
        partition_by=partition_by,
        storage_options=storage_options,
        manifest_extra={"filter": filter.to_json(), "archive_sha256": archive_sha256},
    )
