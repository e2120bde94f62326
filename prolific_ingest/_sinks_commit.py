"""Private commit protocol of :mod:`prolific_ingest.sinks`: stage, move into place, manifest last."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import _sinks_cleanup as _cleanup
from . import _sinks_manifest as _manifest
from ._sinks_layout import (
    MARKER_NAME,
    STAGING_DIR,
    Location,
    export_prefix,
    iso,
    manifest_rel,
    owner_col,
    utcnow,
)
from ._sinks_writer import StagedExport, iter_batches
from ._version import __version__
from .errors import SinkError

log = logging.getLogger(__name__)


def stage_and_commit(
    loc: Location,
    data: Mapping[str, Any] | Iterable[tuple[str, Any]],
    *,
    kind: str,
    owner_id: str,
    export_id: str,
    schemas: Mapping[str, Any],
    existing: Mapping[str, Any] | None,
    leftovers: list[str],
    partition_by: Sequence[str],
    manifest_extra: Mapping[str, Any] | None,
    row_group_rows: int,
) -> dict[str, Any]:
    """Write ``data`` into a new staging prefix and commit it; return the manifest.

    ``existing`` is the manifest being overwritten (or ``None``); ``leftovers`` are
    uncommitted partitions of this export still on storage (removed before moving in).
    Any failure raises :class:`SinkError` after removing the staging prefix and any
    partially moved files (the export is then absent, never half visible).
    """
    col = owner_col(kind)
    m_rel = manifest_rel(col, owner_id, export_id)
    staging = f"{STAGING_DIR}/{uuid.uuid4().hex}"
    marker = {
        "started_at": iso(utcnow()),
        "kind": kind,
        "owner_col": col,
        "owner_id": owner_id,
        "export_id": export_id,
        "pid": os.getpid(),
        "library_version": __version__,
    }
    writer: StagedExport | None = None
    moved: list[str] = []
    try:
        loc.ensure_parent(loc.path(f"{staging}/{MARKER_NAME}"))
        loc.fs.pipe_file(loc.path(f"{staging}/{MARKER_NAME}"), json.dumps(marker).encode())
        writer = StagedExport(
            loc,
            staging,
            col=col,
            owner_id=owner_id,
            export_id=export_id,
            schemas=schemas,
            by_date="date" in partition_by,
            row_group_rows=row_group_rows,
        )
        for table, batch in iter_batches(data, row_group_rows):
            writer.write(table, batch)
        files = writer.finish()
        watermark = writer.max_response_created_at
        manifest = _manifest.build(
            kind=kind,
            owner_id=owner_id,
            export_id=export_id,
            created_at=iso(utcnow()),
            library_version=__version__,
            partition_by=list(partition_by),
            counts=writer.counts,
            files=files,
            schemas=schemas,
            watermark=iso(watermark) if watermark is not None else None,
            extra=manifest_extra,
        )
        # Commit: uncommit the old version, clear its files, move, manifest last.
        if existing is not None:
            loc.fs.rm(loc.path(m_rel))
        old = set(leftovers)
        old.update(
            export_prefix(t, col, owner_id, export_id) for t in (existing or {}).get("files", ())
        )
        for rel in sorted(old):
            _cleanup.remove(loc, rel)
        for rels in files.values():
            for rel in rels:
                loc.move_file(loc.path(f"{staging}/{rel}"), loc.path(rel))
                moved.append(rel)
        staged_manifest = f"{staging}/_manifest.json"
        loc.fs.pipe_file(loc.path(staged_manifest), _manifest.dumps(manifest).encode())
        loc.move_file(loc.path(staged_manifest), loc.path(m_rel))
    except Exception as exc:
        if writer is not None:
            writer.abort()
        if moved:
            for table in schemas:
                _quiet_remove(loc, export_prefix(table, col, owner_id, export_id))
        raise sink_error(loc, export_id, exc) from exc
    finally:
        _quiet_remove(loc, staging)
    log.info(
        "committed export %s (%s=%s) to %s: %d files",
        export_id,
        col,
        owner_id,
        loc.display,
        sum(len(v) for v in files.values()),
    )
    manifest["manifest_path"] = loc.url(m_rel)
    return manifest


def sink_error(loc: Location, export_id: str, exc: BaseException) -> SinkError:
    """A :class:`SinkError` for ``exc``, without credentials in its text."""
    detail = loc.scrub(f"{type(exc).__name__}: {exc}")
    msg = f"could not write export {export_id} to {loc.display}: {detail}"
    return SinkError(msg, url=loc.display)


def _quiet_remove(loc: Location, rel: str) -> None:
    try:
        _cleanup.remove(loc, rel)
    except Exception:  # best effort; cleanup() retries later
        log.warning("could not remove %s", loc.safe(rel), exc_info=True)
