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
from ._version import warn_deprecated
from .cache import ExportCache
from .client import ProlificClient
from .config import Settings, deprecated_connection_keyword
from .errors import ConfigurationError, NotFoundError
from .exports import ExportJob, ExportRef

__all__ = ["delete_export", "job_summary", "list_exports", "prune_exports"]

logger = logging.getLogger(__name__)

Kind = Literal["batch", "collection"]


def _owner(verb: str, owner: ExportRef | str, kind: Kind | None) -> ExportRef:
    """``owner`` as an :class:`ExportRef`; an id with ``kind=`` is the deprecated spelling."""
    if isinstance(owner, ExportRef):
        if kind is not None:
            msg = f"{verb}(): the ExportRef names the kind already; drop kind={kind!r}"
            raise ConfigurationError(msg)
        return owner
    named = kind or "batch"
    warn_deprecated(
        f"{verb}(owner_id, kind=...)", f"pass ExportRef({named!r}, owner_id)", stacklevel=3
    )
    return ExportRef(named, owner)


def _client(
    verb: str,
    client: ProlificClient | Settings | None,
    token: str | None,
    base_url: str | None,
) -> ProlificClient:
    """The client to call the API with: ``client=``, else one from the environment."""
    given = [name for name, value in (("token", token), ("base_url", base_url)) if value]
    for name in given:
        instead = f"client=ProlificClient({name}=...)"
        deprecated_connection_keyword(
            verb, name, instead, beside_client=client is not None, stacklevel=3
        )
    if isinstance(client, ProlificClient):
        return client
    if isinstance(client, Settings):
        return ProlificClient(client)
    return ProlificClient(Settings.from_env(token=token, base_url=base_url))


def list_exports(
    owner: ExportRef | str,
    *,
    kind: Kind | None = None,
    client: ProlificClient | Settings | None = None,
    token: str | None = None,
    base_url: str | None = None,
) -> list[ExportJob]:
    """List the export jobs of a batch (or collection), newest first.

    Parameters
    ----------
    owner : ExportRef
        The batch or collection, e.g. ``ExportRef("batch", batch_id)``.
    client : ProlificClient or Settings, optional
        The connection; default ``Settings.from_env()``.
    kind, token, base_url
        Deprecated (removed in 0.3): pass an ``ExportRef`` and ``client=``.
    """
    api = _client("list_exports", client, token, base_url)
    return lifecycle.list_jobs(api, _owner("list_exports", owner, kind))


def delete_export(
    owner: ExportRef | str,
    export_id: str,
    *,
    kind: Kind | None = None,
    client: ProlificClient | Settings | None = None,
    token: str | None = None,
    base_url: str | None = None,
) -> None:
    """Delete one finished export job and its archive on the server.

    Parameters
    ----------
    owner : ExportRef
        The batch or collection, e.g. ``ExportRef("batch", batch_id)``.
    export_id : str
        The job to delete.
    client : ProlificClient or Settings, optional
        The connection; default ``Settings.from_env()``.
    kind, token, base_url
        Deprecated (removed in 0.3): pass an ``ExportRef`` and ``client=``.

    Raises
    ------
    ExportStillGeneratingError
        The job is still generating.
    """
    api = _client("delete_export", client, token, base_url)
    lifecycle.delete_job(api, _owner("delete_export", owner, kind), export_id)


def prune_exports(
    owner: ExportRef | str,
    *,
    keep: int = 3,
    cache: str | ExportCache | None = None,
    dry_run: bool = False,
    client: ProlificClient | Settings | None = None,
    storage_options: dict[str, Any] | None = None,
    kind: Kind | None = None,
    token: str | None = None,
    base_url: str | None = None,
) -> list[ExportJob]:
    """Delete old finished export jobs on the server, keeping the newest ``keep``.

    Only ``failed`` jobs and ``complete`` jobs that are committed in the cache are deleted;
    ``generating`` jobs and complete ones that are not cached are never touched. A job
    that is already gone (404) counts as deleted.

    Parameters
    ----------
    owner : ExportRef
        The batch or collection, e.g. ``ExportRef("batch", batch_id)``.
    keep : int, default 3
        The newest finished jobs to keep.
    cache : str or ExportCache, optional
        The cache that decides which complete jobs are safe to delete; default the
        client's settings.
    dry_run : bool, default False
        Only say what would be deleted.
    client : ProlificClient or Settings, optional
        The connection; default ``Settings.from_env()``.
    storage_options : dict, optional
        fsspec options for a remote ``cache`` given as a URL (``s3://`` ...).
    kind, token, base_url
        Deprecated (removed in 0.3): pass an ``ExportRef`` and ``client=``.

    Returns
    -------
    list of ExportJob
        The jobs deleted (or, with ``dry_run=True``, that would be).
    """
    api = _client("prune_exports", client, token, base_url)
    ref = _owner("prune_exports", owner, kind)
    store = (
        cache
        if isinstance(cache, ExportCache)
        else ExportCache(cache or api.settings.cache_dir, storage_options=storage_options)
    )
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
        lifecycle.delete_job(api, ref, job.export_id)
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
