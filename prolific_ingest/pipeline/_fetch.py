"""The download stage: a complete job's archive into its cache entry's staging file.

:func:`download_staged` downloads and opens it (fetching again while the retry budget
lasts when it is corrupt) and returns it :class:`Staged`, not committed;
:func:`download_into_cache` verifies every member and commits it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .. import exports as lifecycle
from .._http.retry import RetryState
from ..archive import open_archive
from ..cache import ArchiveFacts, CachedExport, ExportCache
from ..client import ProlificClient
from ..download import download_archive
from ..errors import CorruptArchiveError, IntegrityError
from ..exports import ExportJob

__all__ = ["Staged", "download_into_cache", "download_staged"]

logger = logging.getLogger(__name__)


def download_into_cache(
    job: ExportJob, cache: ExportCache, api: ProlificClient, *, progress: bool | str | None
) -> CachedExport:
    """Download a complete job's archive, verify every member, commit it; return the entry."""
    with cache.lock(job.ref, job.export_id):
        hit = cache.lookup(job.ref, job.export_id)
        if hit is not None:  # another thread or process fetched it while we waited
            return hit
        return download_staged(job, cache, api, progress=progress, whole=True).commit()


@dataclass(frozen=True)
class Staged:
    """A downloaded archive in its entry's staging file, not committed."""

    cache: ExportCache
    entry: CachedExport  # what the entry will be once committed
    path: str
    facts: ArchiveFacts

    def commit(self) -> CachedExport:
        """Commit the staged archive (the entry is found by lookups from now on)."""
        entry = self.entry
        return self.cache.commit(entry.ref, entry.export_id, self.path, self.facts)

    def discard(self) -> None:
        """Remove the staging file: nothing of this download is kept."""
        self.cache.discard(self.path)


def download_staged(
    job: ExportJob,
    cache: ExportCache,
    api: ProlificClient,
    *,
    progress: bool | str | None,
    whole: bool,
) -> Staged:
    """Download ``job``'s archive into a staging file and check it; call under the lock.

    The archive is opened (a ZIP, safe names and sizes, readable metadata) and, with
    ``whole``, every member's CRC is verified; without, the members are left to the
    parse (:func:`~prolific_ingest.pipeline._parse.parse_staged`). A corrupt archive is fetched again while the retry
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
                settings=settings,
                storage_options=cache.storage_options,
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
        facts = ArchiveFacts(
            size=result.size,
            sha256=result.sha256,
            etag=result.etag,
            source_url=url,
            filter=job.filter,
            filter_known=job.filter_known,
            created_at=job.created_at,
        )
        return Staged(cache, cache.pending(ref, job.export_id, facts), staging, facts)
