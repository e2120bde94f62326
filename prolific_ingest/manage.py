"""Export housekeeping by id: list, delete and prune server-side export jobs.

Prolific keeps at most 10 export jobs per batch; :func:`prune_exports` frees slots by
deleting only finished jobs that are already safely in the local cache (or failed ones,
which hold no data).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Literal

from . import exports as lifecycle
from .cache import ExportCache
from .client import ProlificClient
from .config import Settings
from .errors import NotFoundError
from .exports import ExportJob, ExportRef

__all__ = ["delete_export", "job_summary", "list_exports", "prune_exports"]

logger = logging.getLogger(__name__)

Kind = Literal["batch", "collection"]


def _client(
    client: ProlificClient | None, token: str | None, base_url: str | None
) -> ProlificClient:
    return (
        client
        if client is not None
        else ProlificClient(Settings.from_env(token=token, base_url=base_url))
    )


def list_exports(
    owner_id: str,
    *,
    kind: Kind = "batch",
    client: ProlificClient | None = None,
    token: str | None = None,
    base_url: str | None = None,
) -> list[ExportJob]:
    """List the export jobs of a batch (or collection), newest first.

    Parameters
    ----------
    owner_id : str
        Batch id, or collection id with ``kind="collection"``.
    kind : {"batch", "collection"}
    client, token, base_url
        Connection, as in :func:`~prolific_ingest.load_batch_export`.
    """
    return lifecycle.list_jobs(_client(client, token, base_url), ExportRef(kind, owner_id))


def delete_export(
    owner_id: str,
    export_id: str,
    *,
    kind: Kind = "batch",
    client: ProlificClient | None = None,
    token: str | None = None,
    base_url: str | None = None,
) -> None:
    """Delete one finished export job and its archive on the server.

    Raises :class:`~prolific_ingest.ExportStillGeneratingError` while it is generating.
    """
    lifecycle.delete_export(_client(client, token, base_url), ExportRef(kind, owner_id), export_id)


def prune_exports(
    owner_id: str,
    *,
    keep: int = 3,
    kind: Kind = "batch",
    cache: str | None = None,
    dry_run: bool = False,
    client: ProlificClient | None = None,
    token: str | None = None,
    base_url: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> list[ExportJob]:
    """Delete old finished export jobs on the server, keeping the newest ``keep``.

    Only ``failed`` jobs and ``complete`` jobs that are committed in the cache are deleted;
    ``generating`` jobs and complete ones that are not cached are never touched. A job
    that is already gone (404) counts as deleted.

    ``storage_options`` are fsspec options for a remote ``cache`` (``s3://`` ...).

    Returns
    -------
    list of ExportJob
        The jobs deleted (or, with ``dry_run=True``, that would be).
    """
    api = _client(client, token, base_url)
    ref = ExportRef(kind, owner_id)
    store = ExportCache(cache or api.settings.cache_dir, storage_options=storage_options)
    listed = lifecycle.list_jobs(api, ref)
    plan = prunable_jobs(listed, store, keep=keep)
    for job in plan if not dry_run else ():
        delete_finished_job(api, job)
    return plan


def prunable_jobs(jobs: list[ExportJob], store: ExportCache, *, keep: int) -> list[ExportJob]:
    """The finished jobs that can go, oldest last: all but the newest ``keep`` finished
    jobs, of which only ``failed`` ones and ``complete`` ones committed in ``store``."""
    # Newest first by creation time (the list order itself is an ASSUMED detail).
    floor = datetime.min.replace(tzinfo=UTC)
    ordered = sorted(jobs, key=lambda j: j.created_at or floor, reverse=True)
    finished = [j for j in ordered if j.status in ("complete", "failed")]
    return [
        job
        for job in finished[max(keep, 0) :]
        if job.status == "failed" or store.lookup(job.ref, job.export_id) is not None
    ]


def delete_finished_job(api: ProlificClient, job: ExportJob) -> None:
    """Delete ``job`` on the server; a 404 counts as done (a retried DELETE whose first
    response was lost, or another process that pruned it first)."""
    ref = job.ref
    try:
        lifecycle.delete_export(api, ref, job.export_id)
    except NotFoundError:
        logger.info("%s %s: export %s was already gone", ref.kind, ref.id, job.export_id)
        return
    logger.info("%s %s: deleted export %s (%s)", ref.kind, ref.id, job.export_id, job.status)


def job_summary(job: ExportJob) -> dict[str, Any]:
    """A JSON-ready dict of a job (no URL: presigned URLs are credentials)."""
    return {
        "export_id": job.export_id,
        "status": job.status,
        "filter": job.filter.to_json(),
        "created_at": job.created_at.isoformat() if job.created_at else None,
    }
