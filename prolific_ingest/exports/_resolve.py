"""The export lifecycle's job resolution: which server-side job a load downloads.

By id (with its filter and age from the job list when listed), a complete job with the
same filter young enough to reuse, or a new one — freeing a slot first when the owner is
at the job cap. Composes :mod:`~prolific_ingest.exports` (the single API calls) and the
pruning rule of :mod:`~prolific_ingest.manage`.

Not re-exported by the package: it reaches the cache and ``manage``, which import the
package, so importing it from ``exports/__init__`` would close an import circle. Import it
as ``prolific_ingest.exports._resolve``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from .. import exports as lifecycle
from ..cache import ExportCache
from ..client import ProlificClient
from ..errors import APIError, AuthenticationError, ExportLimitError
from ..manage import delete_finished_job, prunable_jobs
from ._models import ExportFilter, ExportJob, ExportRef

__all__ = ["listed_jobs", "resolve_job"]

logger = logging.getLogger(__name__)


def resolve_job(
    api: ProlificClient,
    ref: ExportRef,
    filter: ExportFilter,
    *,
    export_id: str | None,
    max_age: timedelta,
    cache: ExportCache,
) -> ExportJob:
    """The job to load: ``export_id``'s, else a reusable complete one, else a new one.

    A complete job with ``filter`` younger than ``max_age`` (``0``: none) is reused. At the
    job cap the oldest job that holds nothing new is deleted and the request made again
    (see :func:`_free_a_slot`); when none qualifies the :class:`ExportLimitError` is raised.
    """
    if export_id is not None:
        return _job_by_id(api, ref, export_id)
    if max_age > timedelta(0):
        jobs = listed_jobs(api, ref)
        reusable = lifecycle.find_reusable_job(jobs, filter, max_age, datetime.now(UTC))
        if reusable is not None:
            logger.info("export %s: reusing a complete server-side export", reusable.export_id)
            return reusable
    try:
        return lifecycle.request_export(api, ref, filter)
    except ExportLimitError as exc:
        if not _free_a_slot(exc, ref, api, cache):
            raise
    return lifecycle.request_export(api, ref, filter)


def _free_a_slot(
    exc: ExportLimitError, ref: ExportRef, api: ProlificClient, cache: ExportCache
) -> bool:
    """At the job cap, delete the oldest job that holds nothing new; ``False`` if none.

    Only a ``failed`` job, or a ``complete`` one whose archive is committed in this
    cache, qualifies (the rule of :func:`~prolific_ingest.prune_exports`), so scheduled
    loads (incremental ones request a new export every run) keep working at the cap.
    """
    jobs = exc.existing_jobs or listed_jobs(api, ref)
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


def _job_by_id(api: ProlificClient, ref: ExportRef, export_id: str) -> ExportJob:
    """The status of an export named by id, with its filter and age from the list if listed.

    A status body does not say which filter the export was made with: without a list
    entry the job's filter stays *unknown*, so its cache entry never answers a request
    by filter (only by id).
    """
    job = lifecycle.get_export(api, ref, export_id)
    for item in listed_jobs(api, ref):
        if item.export_id == job.export_id and item.filter_known:
            return job.replace(filter=item.filter, filter_known=True, created_at=item.created_at)
    return job


def listed_jobs(api: ProlificClient, ref: ExportRef) -> list[ExportJob]:
    """The job list, or ``[]`` when the endpoint fails with anything but 401.

    The list endpoint is newer than the rest of the API: it never blocks a load.
    """
    try:
        return lifecycle.list_jobs(api, ref)
    except AuthenticationError:
        raise
    except APIError as exc:
        logger.info("listing exports of %s %s failed (%s)", ref.kind, ref.id, exc.status)
        return []
