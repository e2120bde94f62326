"""Cache entry model: names, manifest (de)serialisation and validation.

Private helpers of :class:`~prolific_ingest.cache.ExportCache` (no filesystem access here).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from .._version import __version__
from ..errors import CacheError
from ..exports import ExportFilter, ExportRef, parse_timestamp

__all__ = [
    "ANY_AGE",
    "ARCHIVE_NAME",
    "FORMAT_VERSION",
    "KINDS",
    "LOCKS_DIR",
    "MANIFEST_NAME",
    "TABLES_DIR",
    "ArchiveFacts",
    "CachedExport",
    "DamagedEntryError",
    "InterruptedCommitError",
    "as_timedelta",
    "check_id",
    "entry_from_manifest",
    "make_manifest",
    "parse_manifest",
]

ARCHIVE_NAME = "archive.zip"
MANIFEST_NAME = "manifest.json"
TABLES_DIR = "tables"
LOCKS_DIR = ".locks"
FORMAT_VERSION = 1
KINDS: tuple[Literal["batch", "collection"], ...] = ("batch", "collection")


def check_id(value: str, what: str) -> str:
    if not value or any(c in value for c in "/\\") or value in {".", ".."}:
        msg = f"invalid {what} for the cache: {value!r}"
        raise CacheError(msg)
    return value


#: ``max_age=ANY_AGE``: reuse an export however old it is (in a load and in the cache alike).
ANY_AGE = timedelta.max


def as_timedelta(max_age: timedelta | float | None) -> timedelta | None:
    """``max_age`` as a timedelta (a number is seconds); ``None`` stays ``None`` (no limit)."""
    if max_age is None or isinstance(max_age, timedelta):
        return max_age
    return timedelta(seconds=float(max_age))


@dataclass(frozen=True)
class CachedExport:
    """A committed cache entry.

    Attributes
    ----------
    ref : ExportRef
    export_id : str
    path : str
        The entry directory (local path, or fsspec URL for remote caches).
    archive_path : str
        ``<path>/archive.zip``.
    manifest : dict
        The parsed ``manifest.json``.
    fetched_at : datetime
        When the archive was committed (aware UTC).
    size : int
        Archive size in bytes.
    filter : ExportFilter
        The filter the export was requested with.
    filter_known : bool
        ``False`` when the export was loaded by id and the API did not say its filter;
        such an entry is only ever used by id, never to answer a filtered request.
    created_at : datetime or None
        When the server created the export (its data snapshot), if known; ``max_age``
        is measured from it, else from ``fetched_at``.
    """

    ref: ExportRef
    export_id: str
    path: str
    archive_path: str
    manifest: dict[str, Any] = field(compare=False, hash=False, repr=False)
    fetched_at: datetime
    size: int
    filter: ExportFilter
    filter_known: bool = True
    created_at: datetime | None = None

    @property
    def snapshot_at(self) -> datetime:
        """The export's data snapshot time: ``created_at`` if known, else ``fetched_at``."""
        return self.created_at or self.fetched_at


class DamagedEntryError(Exception):
    """An entry is present but not valid (the message says why)."""


class InterruptedCommitError(DamagedEntryError):
    """``archive.zip`` without ``manifest.json``: a commit killed, or still running."""


def parse_manifest(raw: bytes) -> dict[str, Any]:
    """Decode ``manifest.json``; raise :class:`DamagedEntryError` when unreadable."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        msg = "manifest.json is not valid JSON"
        raise DamagedEntryError(msg) from exc
    if not isinstance(data, dict):
        msg = "manifest.json is not a JSON object"
        raise DamagedEntryError(msg)
    return data


def entry_from_manifest(
    ref: ExportRef, export_id: str, data: dict[str, Any], *, path: str, archive_path: str
) -> CachedExport:
    """Validate a manifest for ``ref``/``export_id`` and build the :class:`CachedExport`."""
    try:
        if data.get("export_id") != export_id or data.get("kind") != ref.kind:
            msg = "manifest.json names another export"
            raise DamagedEntryError(msg)
        if data.get("owner_id") != ref.id:
            msg = "manifest.json names another owner"
            raise DamagedEntryError(msg)
        size = data["size"]
        if not isinstance(size, int) or size < 0 or not isinstance(data.get("sha256"), str):
            msg = "manifest.json has no valid size/sha256"
            raise DamagedEntryError(msg)
        fetched = parse_timestamp(data.get("fetched_at"))
        flt = ExportFilter.from_json(data.get("filter"))
        created = parse_timestamp(data.get("created_at"))
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"manifest.json is incomplete ({type(exc).__name__})"
        raise DamagedEntryError(msg) from exc
    return CachedExport(
        ref=ref,
        export_id=export_id,
        path=path,
        archive_path=archive_path,
        manifest=data,
        fetched_at=fetched or datetime.fromtimestamp(0, UTC),
        size=size,
        filter=flt,
        filter_known=data.get("filter_known", True) is not False,
        created_at=created,
    )


@dataclass(frozen=True)
class ArchiveFacts:
    """What a cache entry records about its archive and the export job it came from.

    Parameters
    ----------
    size : int
        The archive's size in bytes (checked against the staged file at commit).
    sha256 : str
        The archive's SHA-256 (hex).
    etag : str, optional
        The download's ``ETag``.
    source_url : str, optional
        Where it was downloaded from; only the host is kept.
    filter : ExportFilter, optional
        The export's filter.
    filter_known : bool, default True
        ``False``: the filter is unknown (loaded by id); the entry is then used only when
        asked for by id.
    created_at : datetime, optional
        The server's creation time of the export (its data snapshot), when known.
    """

    size: int
    sha256: str
    etag: str | None = None
    source_url: str | None = None
    filter: ExportFilter | None = None
    filter_known: bool = True
    created_at: datetime | None = None


def make_manifest(ref: ExportRef, export_id: str, facts: ArchiveFacts) -> dict[str, Any]:
    """The manifest of a new entry (``source_host`` keeps the host only: no path, no query)."""
    created_at, source_url = facts.created_at, facts.source_url
    return {
        "export_id": export_id,
        "kind": ref.kind,
        "owner_id": ref.id,
        "filter": ExportFilter.coerce(facts.filter).to_json(),
        "filter_known": facts.filter_known,
        "created_at": created_at.isoformat().replace("+00:00", "Z") if created_at else None,
        "fetched_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "size": facts.size,
        "sha256": facts.sha256,
        "etag": facts.etag,
        "source_host": urlsplit(source_url).hostname if source_url else None,
        "library_version": __version__,
        "format_version": FORMAT_VERSION,
    }
