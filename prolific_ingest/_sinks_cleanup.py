"""Private clean-up of :mod:`prolific_ingest.sinks`: stale staging, uncommitted partitions.

Race safety with a concurrent writer: partitions are listed first, staging
markers second and manifests last. A writer removes its marker only after its
manifest exists, so a partition is either covered by a fresh marker or by a
manifest that this listing order is guaranteed to see.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

from ._sinks_layout import (
    KINDS,
    MARKER_NAME,
    STAGING_DIR,
    Location,
    mtime,
    parse_iso,
    utcnow,
)
from ._sinks_manifest import list_manifests

log = logging.getLogger(__name__)

ExportKey = tuple[str, str, str]  # (owner_col, owner_id, export_id)


def _rel(loc: Location, path: str) -> str:
    path = path.rstrip("/")
    return path[len(loc.root) + 1 :] if path.startswith(loc.root + "/") else path


def remove(loc: Location, rel: str) -> bool:
    """Remove ``rel`` (recursively); ``False`` when it did not exist."""
    try:
        loc.fs.rm(loc.path(rel), recursive=True)
    except FileNotFoundError:
        return False
    return True


def list_partitions(loc: Location, prefixes: list[str]) -> dict[str, ExportKey]:
    """Export partitions (``<table>/<col>=<id>/export_id=<eid>``) holding files under ``prefixes``."""
    found: dict[str, ExportKey] = {}
    owner_cols = {f"{k}_id" for k in KINDS}
    for prefix in prefixes:
        for path in loc.fs.find(loc.path(prefix)):
            parts = _rel(loc, path).split("/")
            if len(parts) < 4 or parts[0].startswith(("_", ".")):
                continue
            col, _, owner = parts[1].partition("=")
            key, _, export = parts[2].partition("=")
            if col in owner_cols and key == "export_id" and owner and export:
                found["/".join(parts[:3])] = (col, owner, export)
    return found


def staging_state(loc: Location, older_than: timedelta) -> tuple[list[str], set[ExportKey]]:
    """Split staging prefixes into stale ones and the exports of fresh (running) writers."""
    try:
        entries = loc.fs.ls(loc.path(STAGING_DIR), detail=False)
    except FileNotFoundError:
        return [], set()
    now = utcnow()
    stale: list[str] = []
    fresh: set[ExportKey] = set()
    for entry in entries:
        rel = _rel(loc, entry)
        marker: dict[str, Any] = {}
        try:
            marker = json.loads(loc.fs.cat_file(loc.path(f"{rel}/{MARKER_NAME}")))
        except (FileNotFoundError, ValueError, NotADirectoryError):
            marker = {}
        started = parse_iso(marker.get("started_at")) or mtime(loc.fs, loc.path(rel))
        if started is None or now - started >= older_than:
            stale.append(rel)
        elif {"owner_col", "owner_id", "export_id"} <= marker.keys():
            fresh.add((marker["owner_col"], marker["owner_id"], marker["export_id"]))
    return stale, fresh


def sweep(
    loc: Location, prefixes: list[str], older_than: timedelta
) -> tuple[list[str], dict[str, ExportKey]]:
    """Remove stale staging prefixes and uncommitted partitions under ``prefixes``.

    Returns the removed locations as URLs (the caller's form of the output), and
    the partitions that remain (relative prefix -> export key).
    """
    partitions = list_partitions(loc, prefixes)
    stale, fresh = staging_state(loc, older_than)
    committed: set[ExportKey] = {
        (m.get("owner_col") or f"{m['kind']}_id", m["owner_id"], m["export_id"])
        for m in list_manifests(loc, list(KINDS), None)
    }
    removed: list[str] = []
    for rel in stale:
        if remove(loc, rel):
            log.info("removed stale staging %s", loc.safe(rel))
            removed.append(loc.url(rel))
    remaining: dict[str, ExportKey] = {}
    for rel, key in sorted(partitions.items()):
        if key in committed or key in fresh:
            remaining[rel] = key
        elif remove(loc, rel):
            log.info("removed uncommitted partition %s", loc.safe(rel))
            removed.append(loc.url(rel))
    return removed, remaining


def top_level_tables(loc: Location) -> list[str]:
    """Table directories directly under the output root (underscore/dot names skipped)."""
    try:
        entries = loc.fs.ls(loc.root, detail=True)
    except FileNotFoundError:
        return []
    names = []
    for entry in entries:
        if entry.get("type") != "directory":
            continue
        name = _rel(loc, entry["name"]).split("/")[-1]
        if not name.startswith(("_", ".")):
            names.append(name)
    return sorted(names)
