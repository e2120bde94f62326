"""Private manifest helpers of :mod:`prolific_ingest.sinks`.

A manifest is the commit record of one export in one output. It is written last;
an export without a (parseable) manifest does not exist for our readers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pyarrow as pa

from ._sinks_layout import KINDS, MANIFEST_DIR, Location, json_default, owner_col

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
#: Keys of ``manifest_extra`` that fill a documented manifest field.
KNOWN_EXTRA = ("archive_sha256", "filter", "watermark")
RESERVED = frozenset(
    {
        "format_version",
        "kind",
        "owner_col",
        "owner_id",
        "export_id",
        "created_at",
        "library_version",
        "partition_by",
        "counts",
        "files",
        "schema_fingerprints",
        "schemas",
        "manifest_path",
    }
)


def schema_bytes(schema: Any) -> bytes:
    """The IPC serialization of ``schema`` without its metadata."""
    return bytes(schema.remove_metadata().serialize().to_pybytes())


def fingerprint(schema: Any) -> str:
    """``sha256`` (hex) of the serialized schema."""
    return hashlib.sha256(schema_bytes(schema)).hexdigest()


def encode_schema(schema: Any) -> str:
    """Base64 of the serialized schema (stored so readers know empty tables' columns)."""
    return base64.b64encode(schema_bytes(schema)).decode("ascii")


def decode_schema(text: str) -> Any:
    """Inverse of :func:`encode_schema`."""
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def build(
    *,
    kind: str,
    owner_id: str,
    export_id: str,
    created_at: str,
    library_version: str,
    partition_by: list[str],
    counts: Mapping[str, int],
    files: Mapping[str, list[str]],
    schemas: Mapping[str, Any],
    watermark: str | None,
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Assemble the manifest dictionary (JSON-ready)."""
    extra = dict(extra or {})
    clash = sorted(RESERVED.intersection(extra))
    if clash:
        msg = f"manifest_extra may not set reserved manifest keys {clash}"
        raise ValueError(msg)
    given_watermark = extra.pop("watermark", None)
    if isinstance(given_watermark, datetime):
        given_watermark = json_default(given_watermark)
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "owner_col": owner_col(kind),
        "owner_id": owner_id,
        "export_id": export_id,
        "created_at": created_at,
        "watermark": given_watermark if given_watermark is not None else watermark,
        "archive_sha256": extra.pop("archive_sha256", None),
        "filter": extra.pop("filter", None),
        "library_version": library_version,
        "partition_by": partition_by,
        "counts": dict(counts),
        "schema_fingerprints": {name: fingerprint(s) for name, s in schemas.items()},
        "schemas": {name: encode_schema(s) for name, s in schemas.items()},
        "files": {name: list(paths) for name, paths in files.items()},
    }
    manifest.update(extra)
    # Round-trip now so an unserialisable extra fails before anything is committed.
    result: dict[str, Any] = json.loads(dumps(manifest))
    return result


def dumps(manifest: Mapping[str, Any]) -> str:
    """Serialise a manifest (stable key order, datetimes as ISO text)."""
    return json.dumps(manifest, indent=1, default=json_default, ensure_ascii=False)


def parse(raw: bytes, where: str) -> dict[str, Any] | None:
    """Parse manifest bytes; ``None`` (with a warning) when it is not a valid manifest."""
    try:
        data = json.loads(raw)
    except ValueError:
        log.warning("ignoring unreadable manifest %s", where)
        return None
    needed = ("kind", "owner_id", "export_id", "files", "created_at")
    if not isinstance(data, dict) or any(k not in data for k in needed):
        log.warning("ignoring manifest without the required keys %s", where)
        return None
    if data["kind"] not in KINDS or not isinstance(data["files"], dict):
        log.warning("ignoring malformed manifest %s", where)
        return None
    return data


def read(loc: Location, rel: str) -> dict[str, Any] | None:
    """Read the manifest at ``rel``; ``None`` when absent or invalid."""
    path = loc.path(rel)
    try:
        raw = loc.fs.cat_file(path)
    except FileNotFoundError:
        return None
    manifest = parse(raw, loc.safe(rel))
    if manifest is not None:
        manifest["manifest_path"] = loc.url(rel)
    return manifest


def sort_key(manifest: Mapping[str, Any]) -> tuple[int, str, str, str]:
    """Order manifests oldest first: by watermark (none first), then created_at, export_id."""
    watermark = manifest.get("watermark")
    return (
        0 if watermark is None else 1,
        str(watermark or ""),
        str(manifest.get("created_at") or ""),
        str(manifest.get("export_id") or ""),
    )


def list_manifests(loc: Location, kinds: list[str], owner_id: str | None) -> list[dict[str, Any]]:
    """Every valid manifest of ``kinds`` (and ``owner_id``), sorted with :func:`sort_key`."""
    base = loc.path(MANIFEST_DIR)
    try:
        loc.fs.invalidate_cache()
    except Exception:  # some filesystems have no cache to drop
        log.debug("invalidate_cache failed", exc_info=True)
    wanted = {f"{owner_col(k)}={owner_id}" if owner_id else owner_col(k) for k in kinds}
    found: list[dict[str, Any]] = []
    for path in loc.fs.find(base):
        rel = path[len(loc.root) + 1 :] if path.startswith(loc.root + "/") else path
        parts = rel.split("/")
        if len(parts) != 3 or not parts[2].endswith(".json"):
            continue
        segment = parts[1]
        if owner_id is None and segment.split("=", 1)[0] not in wanted:
            continue
        if owner_id is not None and segment not in wanted:
            continue
        manifest = read(loc, rel)
        if manifest is not None:
            found.append(manifest)
    return sorted(found, key=sort_key)
