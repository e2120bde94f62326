"""Open an export ZIP from any path or fsspec URL: members, metadata, JSONL lines, files.

The reader is tolerant of the layout variations of spec section 2 and strict about
hostile archives. One job per module:

* :mod:`~prolific_ingest.archive._reader`: :class:`ExportArchive` and :func:`open_archive`
  (layout, kind, metadata, JSONL chunks/blocks/lines, uploaded files, verification);
* :mod:`~prolific_ingest.archive._layout`: the root folder and the ``files/`` entries;
* :mod:`~prolific_ingest.archive._members`: member I/O and its errors (open counted, read,
  copy out, check every CRC);
* :mod:`~prolific_ingest.archive._names`: the member-name safety policy;
* :mod:`~prolific_ingest.archive._budget`: the size/ratio limits (:class:`ArchiveLimits`);
* :mod:`~prolific_ingest.archive._metadata`: parsing ``batch.json`` / ``collection.json``.

The tunables (``CHUNK_BYTES``, ``VERIFY_THREADS``, ``MAX_METADATA_BYTES``) live where they
are read, in ``prolific_ingest.archive._reader``, and are deliberately not re-exported: a
value set on this package would change nothing.
"""

from __future__ import annotations

from ._budget import ArchiveLimits
from ._layout import FileEntry
from ._reader import BATCH, COLLECTION, ExportArchive, open_archive

__all__ = [
    "BATCH",
    "COLLECTION",
    "ArchiveLimits",
    "ExportArchive",
    "FileEntry",
    "open_archive",
]
