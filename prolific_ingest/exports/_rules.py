"""Pure decisions about export jobs: which job to reuse, whether a status is usable.

No I/O here (tested without sockets); :mod:`prolific_ingest.exports` applies them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from ._models import ExportFilter, ExportJob

__all__ = ["URL_EXPIRY_MARGIN", "carry", "find_reusable_job", "fresh_enough", "url_problem"]

#: A complete job whose URL expires sooner than this is polled again before use.
URL_EXPIRY_MARGIN = timedelta(seconds=30)


def carry(old: ExportJob, new: ExportJob) -> ExportJob:
    """Keep what a status body does not repeat: whether the filter is known, the creation time."""
    return new.replace(filter_known=old.filter_known, created_at=new.created_at or old.created_at)


def fresh_enough(job: ExportJob) -> bool:
    """Whether ``job`` is complete with a URL that stays valid for :data:`URL_EXPIRY_MARGIN`."""
    if not job.is_complete:
        return False
    return job.expires_at is None or job.expires_at > datetime.now(UTC) + URL_EXPIRY_MARGIN


def url_problem(body: dict[str, Any]) -> str | None:
    """Why a ``complete`` status body gives no usable download URL, or ``None``."""
    if "url" not in body or body["url"] is None:
        return "has no url"
    url = body["url"]
    if not isinstance(url, str):
        return f"has a url that is a JSON {type(url).__name__}, not a string"
    if not url.strip():
        return "has an empty url"
    return None


def find_reusable_job(
    jobs: Iterable[ExportJob],
    filter: ExportFilter | None,
    max_age: timedelta | None,
    now: datetime | None = None,
) -> ExportJob | None:
    """Pick the newest complete job with the same filter, younger than ``max_age``.

    Pure function. ``max_age=None`` accepts any age; with a ``max_age``, jobs with
    no ``created_at`` are not reused (their age is unknown). Ties keep list order
    (the API lists newest first).
    """
    flt = ExportFilter.coerce(filter)
    current = now or datetime.now(UTC)
    if current.tzinfo is None:
        current = current.replace(tzinfo=UTC)
    candidates = [j for j in jobs if j.status == "complete" and j.filter_known and j.filter == flt]
    if max_age is not None:
        candidates = [
            j for j in candidates if j.created_at is not None and current - j.created_at <= max_age
        ]
    if not candidates:
        return None
    floor = datetime.min.replace(tzinfo=UTC)
    return max(candidates, key=lambda j: j.created_at or floor)  # first of equals wins
