"""Private helpers of :mod:`prolific_ingest.sinks`: naming, paths, validation, clocks.

Relative layout under an output root (see the ``sinks`` module docstring)::

    <table>/<owner_col>=<owner_id>/export_id=<export_id>[/date=<YYYY-MM-DD>]/part-<n>.parquet
    _manifests/<owner_col>=<owner_id>/<export_id>.json
    _staging/<token>/_writer.json          (marker, written first)
    _staging/<token>/<same relative layout as above>
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import fsspec

from .errors import redact_url

KINDS = ("batch", "collection")
STAGING_DIR = "_staging"
MANIFEST_DIR = "_manifests"
MARKER_NAME = "_writer.json"
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
SUPPORTED_PARTITIONS = ("date",)

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TABLE_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def owner_col(kind: str) -> str:
    """Return the owner id column / partition key for ``kind`` (``batch_id``...)."""
    if kind not in KINDS:
        msg = f"kind must be one of {KINDS}, not {kind!r}"
        raise ValueError(msg)
    return f"{kind}_id"


def check_id(name: str, value: str) -> str:
    """Validate an id used as a path segment (no separators, ``=``, globs, dots-only)."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        msg = f"{name} {value!r} cannot be used as a partition value (letters, digits, . _ - only)"
        raise ValueError(msg)
    return value


def check_table(name: str) -> str:
    """Validate a table name (lower snake case, never underscore-prefixed)."""
    if not isinstance(name, str) or not _TABLE_RE.match(name):
        msg = f"table name {name!r} is not a lower-case identifier"
        raise ValueError(msg)
    return name


@dataclass(frozen=True)
class Location:
    """An output root resolved to an fsspec filesystem.

    ``root`` is the filesystem path (no protocol); ``display`` is the URL as the
    caller gave it, without credentials, used to build returned URLs and messages.
    """

    fs: Any
    root: str
    given: str
    display: str

    def path(self, rel: str) -> str:
        """Filesystem path of ``rel`` under the root."""
        return f"{self.root}/{rel}" if rel else self.root

    def url(self, rel: str) -> str:
        """URL (in the caller's form) of ``rel`` under the root."""
        return f"{self.given}/{rel}"

    def safe(self, rel: str) -> str:
        """URL of ``rel`` without credentials (for messages and logs)."""
        return f"{self.display}/{rel}"

    @property
    def is_local(self) -> bool:
        """Whether this is the local filesystem (directories exist; rename is atomic)."""
        protocol = self.fs.protocol
        protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol)
        return "file" in protocols or "local" in protocols

    def ensure_parent(self, path: str) -> None:
        """Create the parent directory of ``path`` where directories are real."""
        if self.is_local:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)

    def move_file(self, src: str, dst: str) -> None:
        """Move one file: a rename locally, copy + delete elsewhere (one request each)."""
        self.ensure_parent(dst)
        if self.is_local:
            self.fs.mv(src, dst)
        else:
            self.fs.cp_file(src, dst)
            self.fs.rm_file(src)

    def scrub(self, text: str) -> str:
        """Remove the URL's password (if any) from ``text``."""
        return scrub_password(self.given, text)


def scrub_password(url: str, text: str) -> str:
    """Return ``text`` with the password of ``url`` (if it has one) replaced by ``***``."""
    password = urlsplit(url).password if "://" in url else None
    return text.replace(password, "***") if password else text


def safe_url(output: str) -> str:
    """``output`` without user info, query string or fragment (for messages and logs)."""
    if "://" in output:
        return redact_url(output) or ""
    return output


def resolve(output: str, storage_options: Mapping[str, Any] | None) -> Location:
    """Resolve ``output`` (path or URL) with ``storage_options`` to a :class:`Location`."""
    if not isinstance(output, str) or not output.strip():
        msg = "output must be a non-empty path or URL"
        raise ValueError(msg)
    given = output.rstrip("/") or output
    fs, root = fsspec.core.url_to_fs(given, **dict(storage_options or {}))
    return Location(fs=fs, root=str(root).rstrip("/"), given=given, display=safe_url(given))


def export_prefix(table: str, col: str, owner_id: str, export_id: str) -> str:
    """Relative prefix of one export's partition of ``table``."""
    return f"{table}/{col}={owner_id}/export_id={export_id}"


def leaf_rel(table: str, col: str, owner_id: str, export_id: str, date: str | None, n: int) -> str:
    """Relative path of one Parquet file."""
    prefix = export_prefix(table, col, owner_id, export_id)
    if date is not None:
        prefix = f"{prefix}/date={date}"
    return f"{prefix}/part-{n}.parquet"


def manifest_rel(col: str, owner_id: str, export_id: str) -> str:
    """Relative path of one export's manifest."""
    return f"{MANIFEST_DIR}/{col}={owner_id}/{export_id}.json"


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def iso(value: datetime) -> str:
    """Sortable ISO-8601 UTC text with microseconds (``2026-01-02T03:04:05.000006Z``)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: Any) -> datetime | None:
    """Parse :func:`iso` output (or any ISO-8601 text); ``None`` when impossible."""
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def mtime(fs: Any, path: str) -> datetime | None:
    """Best-effort modification time of ``path`` across fsspec implementations."""
    try:
        info = fs.info(path)
    except (OSError, ValueError):
        return None
    for key in ("mtime", "LastModified", "created", "last_modified", "updated"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str) and (parsed := parse_iso(value)):
            return parsed
    return None


def json_default(value: Any) -> Any:
    """``json.dumps`` fallback: datetimes as ISO text, everything else as ``str``."""
    if isinstance(value, datetime):
        return iso(value)
    return str(value)
