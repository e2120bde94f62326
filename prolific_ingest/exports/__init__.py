"""The export lifecycle: request, poll, refresh, list, delete, reuse.

Every function takes a :class:`~prolific_ingest.client.ProlificClient` and an
:class:`ExportRef`; none of them touches the token or the download host.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from .._progress import make_progress
from .._version import warn_deprecated
from ..client import ProlificClient, response_json
from ..errors import (
    APIError,
    ExportFailedError,
    ExportLimitError,
    ExportTimeoutError,
    ProlificIngestError,
    TransportError,
)
from ._models import (
    ExportFilter,
    ExportJob,
    ExportKind,
    ExportRef,
    ExportStatus,
    format_timestamp,
    job_from_body,
    parse_timestamp,
)
from ._rules import carry, find_reusable_job, fresh_enough, url_problem

__all__ = [
    "ExportFilter",
    "ExportJob",
    "ExportKind",
    "ExportRef",
    "ExportStatus",
    "delete_job",
    "find_reusable_job",
    "format_timestamp",
    "get_export",
    "list_jobs",
    "parse_timestamp",
    "refresh_url",
    "request_export",
    "wait_for_export",
]

logger = logging.getLogger(__name__)

_STATUSES = frozenset({"generating", "complete", "failed", "unknown"})

#: A status poll gets at least this long, even when the wait's deadline is (nearly) gone.
MIN_POLL_TIME = 1.0


def _failed(job: ExportJob) -> ExportFailedError:
    msg = (
        f"export {job.export_id} of {job.ref.kind} {job.ref.id} failed (or its archive was "
        "deleted from storage); request a new export"
    )
    return ExportFailedError(msg, export_id=job.export_id)


def _legacy_id(url: str) -> str:
    digest = hashlib.sha256(urlsplit(url).path.encode("utf-8")).hexdigest()
    return "legacy-" + digest[:16]


def _find_legacy_export_id(
    client: ProlificClient, ref: ExportRef, flt: ExportFilter, url: str
) -> str:
    """Find the id of a legacy ``200 complete`` answer via the job list, or synthesise one."""
    try:
        jobs = list_jobs(client, ref)
    except ProlificIngestError as exc:
        logger.debug("export list unavailable for %s %s: %s", ref.kind, ref.id, type(exc).__name__)
        jobs = []
    path = urlsplit(url).path
    for job in jobs:  # same archive object first
        if job.url and urlsplit(job.url).path == path:
            return job.export_id
    reusable = find_reusable_job(jobs, flt, None)
    if reusable is not None:
        return reusable.export_id
    export_id = _legacy_id(url)
    logger.info(
        "export of %s %s: the API returned a complete export without an id; using %s",
        ref.kind,
        ref.id,
        export_id,
    )
    return export_id


def request_export(
    client: ProlificClient, ref: ExportRef, filter: ExportFilter | None = None
) -> ExportJob:
    """Start an export job (``POST .../export``) and return it.

    Parameters
    ----------
    client : ProlificClient
    ref : ExportRef
    filter : ExportFilter, optional
        Study id and ``[since, until)`` window.

    Returns
    -------
    ExportJob
        Usually ``generating``; ``complete`` (with ``url``) when the API answers the
        legacy ``200``. A legacy answer carries no ``export_id``: it is looked up in
        the job list (same URL, else the newest complete job with the same filter),
        else a stable ``"legacy-<sha256 of the URL path>"`` id is made up.

    Raises
    ------
    ExportLimitError
        The job cap is reached; ``existing_jobs`` lists the jobs when they could be read.
    ExportFailedError
        The API answered ``failed`` straight away.

    Notes
    -----
    A POST whose response was lost is retried by the client. That cannot leak jobs:
    while a job with the same filter is generating the API returns it again.
    """
    flt = ExportFilter.coerce(filter)
    path = f"{ref.path}/export"
    try:
        resp = client.request("POST", path, params=flt.to_params(), expect=(200, 201, 202))
    except ExportLimitError as exc:
        try:
            jobs = list_jobs(client, ref)
        except ProlificIngestError:
            raise exc from None
        listing = ", ".join(f"{j.export_id} ({j.status})" for j in jobs) or "none listed"
        msg = f"{exc}; existing jobs: {listing}"
        raise ExportLimitError(
            msg,
            existing_jobs=jobs,
            status=exc.status,
            error_code=exc.error_code,
            title=exc.title,
            detail=exc.detail,
            method=exc.method,
            url=exc.url,
            request_id=exc.request_id,
        ) from exc
    body = response_json(resp)
    if not isinstance(body, dict):
        msg = f"POST {path} -> {resp.status_code}: expected a JSON object"
        raise APIError(msg, status=resp.status_code, method="POST", url=resp.url)
    status = body.get("status")
    url = body.get("url")
    if status == "complete" or (status is None and isinstance(url, str)):
        if not isinstance(url, str) or not url:
            msg = f"POST {path} -> {resp.status_code}: complete export without a url"
            raise APIError(msg, status=resp.status_code, method="POST", url=resp.url)
        export_id = body.get("export_id") or _find_legacy_export_id(client, ref, flt, url)
        job = job_from_body(ref, {**body, "status": "complete"}, export_id=export_id, filter=flt)
    else:
        job = job_from_body(ref, body, export_id=None, filter=flt)
        if job is not None and job.created_at is None:
            # A new job snapshots the responses now (a reused generating one a little earlier).
            job = job.replace(created_at=datetime.now(UTC))
    if job is None:
        msg = f"POST {path} -> {resp.status_code}: the answer has no export_id"
        raise APIError(msg, status=resp.status_code, method="POST", url=resp.url)
    if job.status == "failed":
        raise _failed(job)
    logger.info("export %s requested for %s %s: %s", job.export_id, ref.kind, ref.id, job.status)
    return job


def get_export(
    client: ProlificClient,
    ref: ExportRef,
    export_id: str,
    filter: ExportFilter | None = None,
    *,
    timeout: float | None = None,
) -> ExportJob:
    """Return the current state of one job (``GET .../export/<export_id>``).

    ``filter`` is carried into the returned job (the status body does not repeat it);
    without it the job's filter is unknown (``filter_known=False``). ``timeout``
    bounds the call, retries included (see :meth:`ProlificClient.request`).

    Raises
    ------
    APIError
        The body is not a readable status, or it says ``complete`` without a usable
        download ``url`` (missing, ``null``, empty or not a string).
    """
    path = f"{ref.path}/export/{export_id}"
    body = client.get_json(path, timeout=timeout)
    if not isinstance(body, dict):
        msg = f"GET {path}: expected a JSON object"
        raise APIError(msg, status=200, method="GET", url=client.url_for(path))
    job = job_from_body(ref, {**body, "export_id": export_id}, export_id=export_id, filter=filter)
    if job is None:  # only an unreadable body can get here
        msg = f"GET {path}: unreadable export status"
        raise APIError(msg, status=200, method="GET", url=client.url_for(path))
    if job.status not in _STATUSES:  # server text: it may go into messages and logs
        job = job.replace(status=client.scrub(job.status))
    problem = url_problem(body) if job.status == "complete" else None
    if problem is not None:
        msg = (
            f"GET {path} -> 200: export {export_id} is 'complete' but the status {problem}, "
            "so there is nothing to download; this is a fault of the API, not a job still "
            "generating: request a new export (or try again later)"
        )
        raise APIError(msg, status=200, method="GET", url=client.url_for(path))
    return job


def wait_for_export(
    client: ProlificClient,
    job: ExportJob,
    *,
    timeout: float | None = None,
    poll_interval: float | None = None,
    poll_max_interval: float | None = None,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    progress: bool | str | None = None,
) -> ExportJob:
    """Poll a job until it is complete and return it (with its download ``url``).

    Parameters
    ----------
    client : ProlificClient
    job : ExportJob
        A job from :func:`request_export` / :func:`get_export` / :func:`list_jobs`.
    timeout : float, optional
        Seconds to wait (default ``settings.wait_timeout``).
    poll_interval, poll_max_interval : float, optional
        First interval and ceiling; the interval grows by x1.5 per poll
        (defaults from the settings).
    sleep, clock : callable
        Injectable ``time.sleep`` / ``time.monotonic``.
    progress : bool, str or None
        Show status and elapsed time (see ``make_progress``).

    Raises
    ------
    ExportFailedError
        The job reported ``failed``: request a new export.
    ExportTimeoutError
        Not complete within ``timeout``; pass ``export_id=`` to resume waiting. Each
        status poll is bounded by the time left, however slowly the API answers.
    APIError
        A status ``complete`` without a usable download ``url``.
    """
    settings = client.settings
    limit = settings.wait_timeout if timeout is None else timeout
    interval = settings.poll_interval if poll_interval is None else poll_interval
    ceiling = settings.poll_max_interval if poll_max_interval is None else poll_max_interval
    interval = max(0.0, min(interval, ceiling))
    if job.status == "failed":
        raise _failed(job)
    if fresh_enough(job):
        return job
    start = clock()
    last_status: str = job.status
    with make_progress(progress, desc=f"export {job.export_id}", unit="poll") as bar:
        while True:
            current = carry(job, _poll(client, job, limit, start, clock))
            elapsed = clock() - start
            bar.set_postfix_str(f"{current.status}, {elapsed:.0f}s")
            if current.status != last_status:
                logger.info(
                    "export %s: %s -> %s after %.1fs",
                    job.export_id,
                    last_status,
                    current.status,
                    elapsed,
                )
                last_status = current.status
            if current.status == "complete" and current.url:
                return current
            if current.status == "failed":
                raise _failed(current)
            if elapsed >= limit:
                msg = (
                    f"export {job.export_id} of {job.ref.kind} {job.ref.id} is still "
                    f"{current.status} after {elapsed:.0f}s; call again with "
                    f"export_id={job.export_id!r} to resume waiting"
                )
                raise ExportTimeoutError(
                    msg, export_id=job.export_id, elapsed=elapsed, last_status=current.status
                )
            sleep(min(interval, max(0.0, limit - elapsed)))
            bar.update(1)
            interval = min(interval * 1.5, ceiling)


def _poll(
    client: ProlificClient,
    job: ExportJob,
    limit: float,
    start: float,
    clock: Callable[[], float],
) -> ExportJob:
    """One status poll, bounded by the wait's time left; reaching the deadline is a timeout."""
    time_left = limit - (clock() - start)
    try:
        return get_export(
            client, job.ref, job.export_id, job.filter, timeout=max(time_left, MIN_POLL_TIME)
        )
    except TransportError as exc:
        elapsed = clock() - start
        if elapsed < limit:
            raise
        msg = (
            f"export {job.export_id} of {job.ref.kind} {job.ref.id}: the status poll got no "
            f"complete answer before the wait's deadline ({elapsed:.0f}s); call again with "
            f"export_id={job.export_id!r} to resume waiting"
        )
        raise ExportTimeoutError(
            msg, export_id=job.export_id, elapsed=elapsed, last_status=job.status
        ) from exc


def refresh_url(client: ProlificClient, job: ExportJob) -> ExportJob:
    """Return the job with a fresh download URL (after the old one expired).

    Raises :class:`ExportFailedError` when the job has turned ``failed``.
    Legacy jobs (``"legacy-…"`` ids, unknown to the status endpoint) are refreshed
    by requesting the export again.
    """
    if job.export_id.startswith("legacy-"):
        fresh = request_export(client, job.ref, job.filter)
        if not fresh.is_complete:
            fresh = wait_for_export(client, fresh)
        return job.replace(status="complete", url=fresh.url, expires_at=fresh.expires_at)
    fresh = carry(job, get_export(client, job.ref, job.export_id, job.filter))
    if fresh.status == "failed":
        raise _failed(fresh)
    if not fresh.is_complete:
        fresh = wait_for_export(client, fresh)
    logger.info("export %s: download URL refreshed", job.export_id)
    return fresh.replace(created_at=fresh.created_at or job.created_at)


def list_jobs(client: ProlificClient, ref: ExportRef) -> list[ExportJob]:
    """List the jobs of a batch/collection, newest first (``GET .../export``).

    Accepts a bare array or ``{"results": [...]}``; items without an id or with
    an unreadable filter are skipped, other missing keys are tolerated. The public
    verb, by owner id, is :func:`prolific_ingest.list_exports`.
    """
    body = client.get_json(f"{ref.path}/export")
    items: Iterable[Any]
    if isinstance(body, list):
        items = body
    elif isinstance(body, dict) and isinstance(body.get("results"), list):
        items = body["results"]
    else:
        items = []
    jobs: list[ExportJob] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        job = job_from_body(ref, item, export_id=None, filter=None)
        if job is None:
            logger.debug("skipping an unreadable export job entry of %s %s", ref.kind, ref.id)
            continue
        jobs.append(job)
    return jobs


def delete_job(client: ProlificClient, ref: ExportRef, export_id: str) -> None:
    """Delete a finished job and its archive (``DELETE .../export/<export_id>``).

    Raises :class:`ExportStillGeneratingError` while it is generating. The public verb is
    :func:`prolific_ingest.delete_export`.
    """
    client.request("DELETE", f"{ref.path}/export/{export_id}", expect=(200, 202, 204))
    logger.info("export %s of %s %s deleted", export_id, ref.kind, ref.id)


def __getattr__(name: str) -> Any:
    """``delete_export``: the old name of :func:`delete_job`, deprecated."""
    if name != "delete_export":
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    instead = "use delete_job, or prolific_ingest.delete_export(ref, export_id, client=...)"
    warn_deprecated("prolific_ingest.exports.delete_export", instead)
    return delete_job
