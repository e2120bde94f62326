"""``read_export``: an export archive already on disk or in a bucket, without the API.

The archive's identity (its export id in Parquet output) comes from the cache manifest
beside it when it sits in an export cache, else from its content (``sha256-…``), never
from its file name.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import fsspec

from ._parquet import check_id
from ._urls import parse_storage_url
from .archive import open_archive
from .cache._entry import ARCHIVE_NAME, MANIFEST_NAME
from .errors import ConfigurationError
from .pipeline._parse import OnBadRecords
from .result import Export
from .tables import build_tables

__all__ = ["read_export"]


def read_export(
    source: str,
    *,
    export_id: str | None = None,
    on_bad_records: OnBadRecords = "raise",
    storage_options: dict[str, Any] | None = None,
) -> Export:
    """Read an export archive already on disk or in a bucket; no API call.

    Parameters
    ----------
    source : str
        Local path or fsspec URL of the ZIP (for example one saved by Prolific's own CLI).
    export_id : str, optional
        The export's id, used as its identity in Parquet output (letters, digits, ``.``,
        ``_`` and ``-``; not starting with ``.``, ``_`` or ``-``). Default: for an archive
        inside the export cache, the export id its ``manifest.json`` records; otherwise
        ``sha256-`` and the first 16 hex digits of the file's SHA-256, so the same bytes
        always get the same id and a different archive saved under the same name (say, a
        re-downloaded ``export.zip``) gets a new one. The file name is never used.
    on_bad_records : {"raise", "quarantine", "skip"}, default "raise"
        As in :func:`load_batch_export`.
    storage_options : dict, optional
        Passed to fsspec.

    Returns
    -------
    Export
        ``filter`` is ``None`` (unknown); the owner id comes from the archive's metadata or
        records.

    Raises
    ------
    ConfigurationError
        ``export_id`` cannot be used as an id (checked before the archive is opened).
    ArchiveError
        The archive cannot be read.
    """
    if export_id is not None:
        export_id = _check_export_id(export_id)
    src = parse_storage_url(source, storage_options, purpose="read")
    source, storage_options = src.url, src.storage_options  # credentials out of the URL
    with open_archive(source, storage_options=storage_options) as archive:
        tables = build_tables(archive, on_bad_records=on_bad_records)
        metadata = archive.metadata
        kind = archive.kind
    owner_col = f"{kind}_id"
    owner = metadata.get("id")
    if owner is None and tables.tables["submissions"].num_rows:
        owner = tables.tables["submissions"].column(owner_col)[0].as_py()
    return Export(
        export_id=export_id or _archive_identity(str(source), storage_options),
        kind=kind,
        owner_id=str(owner) if owner is not None else "",
        filter=None,
        fetched_at=datetime.now(UTC),
        metadata=metadata,
        archive_url=str(source),
        row_counts=tables.row_counts,
        load_tables=lambda: tables,
        storage_options=storage_options,
    )


def _check_export_id(export_id: str) -> str:
    """Return ``export_id`` if it can name an export (a cache entry, a Parquet partition).

    Raises
    ------
    ConfigurationError
        It is empty or has characters other than letters, digits, ``.``, ``_`` and ``-``
        (or starts with ``.``, ``_`` or ``-``).
    """
    try:
        return check_id("export_id", export_id)
    except ValueError as exc:
        msg = (
            f"export id {export_id!r} is not usable: use letters, digits, '.', '_' and '-' "
            "only, starting with a letter or digit"
        )
        raise ConfigurationError(msg) from exc


def _archive_identity(source: str, storage_options: dict[str, Any] | None) -> str:
    """An archive's export id: its cache entry's id, else ``sha256-`` and its checksum.

    The file name is never used: a newer archive saved under an old name must not be
    taken for the export already written from the old one.
    """
    fs, path = fsspec.core.url_to_fs(source, **(storage_options or {}))
    recorded = _cache_entry_id(fs, path)
    if recorded is not None:
        return recorded
    digest = hashlib.sha256()
    with fs.open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return f"sha256-{digest.hexdigest()[:16]}"


def _cache_entry_id(fs: Any, path: str) -> str | None:
    """The export id of a committed cache entry's ``archive.zip``, else ``None``.

    An entry is ``<export_id>/archive.zip`` beside a ``manifest.json`` that records that
    export id and the archive's size.
    """
    entry, _, name = path.rstrip("/").rpartition("/")
    if name != ARCHIVE_NAME:
        return None
    try:
        with fs.open(f"{entry}/{MANIFEST_NAME}", "rb") as fh:
            manifest = json.loads(fh.read())
        recorded = manifest.get("export_id")
        if (
            isinstance(recorded, str)
            and recorded == entry.rpartition("/")[2]
            and manifest.get("size") == fs.size(path)
        ):
            return _check_export_id(recorded)
    except (OSError, ValueError, AttributeError):
        pass
    return None
