"""Detect the manifest layout that previews of prolific-ingest wrote before the Delta lake.

That layout (``<lake>/_manifests/…`` beside hive-partitioned Parquet) is not a Delta
table, and nothing is migrated in place: the cache still holds every loaded archive, so
re-loading offline rebuilds the lake exactly.
"""

from __future__ import annotations

import logging
import os

import fsspec

from ..errors import LegacyLakeError
from ._storage import Lake

__all__ = ["refuse_legacy"]

logger = logging.getLogger("prolific_ingest.lake")

MANIFEST_DIR = "_manifests"


def _has_manifests(lake: Lake) -> bool:
    if lake.is_local:
        return os.path.isdir(os.path.join(lake.uri, MANIFEST_DIR))
    try:
        fs, root = fsspec.core.url_to_fs(lake.uri, **lake.fsspec_options)
        return bool(fs.exists(f"{str(root).rstrip('/')}/{MANIFEST_DIR}"))
    except Exception:  # noqa: BLE001 - no fsspec backend installed, options it does not take
        logger.debug("could not look for the old manifest layout in %s", lake.display)
        return False


def refuse_legacy(lake: Lake) -> None:
    """Raise :class:`~prolific_ingest.LegacyLakeError` if ``lake`` holds ``_manifests/``."""
    if not _has_manifests(lake):
        return
    msg = (
        f"{lake.display} holds the Parquet-plus-manifest layout of prolific-ingest previews, "
        "not Delta tables. Rebuild the lake from the cache: move that folder aside (or pick a "
        "new output), then re-load each export offline, e.g. "
        "`prolific-ingest batch <batch_id> --offline --out <new-lake>` or "
        "`load_batch_export(batch_id, export_id=..., offline=True, output=new_lake)`; "
        "delete the old folder once the new lake reads back right"
    )
    raise LegacyLakeError(msg, url=lake.display)
