"""ExportCache: downloaded archives, keyed by export id, on any fsspec location.

Layout (pinned by ``tests/test_cache_layout.py``)::

    <root>/<kind>/<owner_id>/<export_id>/archive.zip
    <root>/<kind>/<owner_id>/<export_id>/manifest.json     written last: the commit marker
    <root>/<kind>/<owner_id>/<export_id>/tables/           parsed tables (Arrow IPC, written by the loader)
    <root>/.locks/                                         lock files (local roots only)

An entry exists only once its manifest is written; an archive without a manifest,
or one whose size (or, with ``verify="full"``, SHA-256) differs from the manifest,
is reported with a WARNING, removed, and treated as absent.

One job per module: ``_store`` (:class:`ExportCache`, its public methods and
``STALE_STAGING``), ``_entry`` (names, the manifest and its validation), ``_files`` (the
filesystem operations on an entry), ``_locks`` (per-entry locks across threads and
processes) and ``_sink`` (a download's destination file with running hashes).
``STALE_STAGING`` is deliberately not re-exported: it is read in ``_store``, so a value
set on this package would change nothing.
"""

from __future__ import annotations

from ._entry import ARCHIVE_NAME, FORMAT_VERSION, MANIFEST_NAME, ArchiveFacts, CachedExport
from ._store import ExportCache

__all__ = [
    "ARCHIVE_NAME",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "ArchiveFacts",
    "CachedExport",
    "ExportCache",
]
