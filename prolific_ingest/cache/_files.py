"""Filesystem operations on one cache entry directory, on any fsspec filesystem.

What an entry's files are called and what they must contain is
:mod:`prolific_ingest.cache._entry`'s; when to call these (under which lock, what to log)
is :class:`~prolific_ingest.cache.ExportCache`'s. ``fs`` is an fsspec filesystem and
every path is internal to it (no protocol).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Concatenate, Literal, ParamSpec, Protocol, TypeVar

from ..errors import CacheError, redact_url, storage_errors
from ..exports import ExportRef
from ._entry import (
    ARCHIVE_NAME,
    KINDS,
    MANIFEST_NAME,
    TABLES_DIR,
    CachedExport,
    DamagedEntryError,
    InterruptedCommitError,
    check_id,
    parse_manifest,
)

logger = logging.getLogger("prolific_ingest.cache")

__all__ = [
    "check_archive",
    "check_uncommitted",
    "discard",
    "in_flight",
    "manifests",
    "modified",
    "move",
    "read_manifest",
    "remove_committed",
    "sha256_of",
    "subdirs",
    "sweep_stale",
    "typed_storage_errors",
    "write_json",
]


class _Rooted(Protocol):
    root: str


S = TypeVar("S", bound=_Rooted)
P = ParamSpec("P")
R = TypeVar("R")


def typed_storage_errors(
    method: Callable[Concatenate[S, P], R],
) -> Callable[Concatenate[S, P], R]:
    """Raise a storage backend's own exceptions (credentials ...) as :class:`CacheError`."""

    @functools.wraps(method)
    def guarded(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        shown = redact_url(self.root) or self.root
        with storage_errors(lambda detail: CacheError(f"cache {shown}: {detail}")):
            return method(self, *args, **kwargs)

    return guarded


def read_manifest(fs: Any, entry: str) -> dict[str, Any] | None:
    """The entry's parsed manifest, ``None`` when it has none (:class:`DamagedEntryError`)."""
    try:
        raw = fs.cat_file(f"{entry}/{MANIFEST_NAME}")
    except FileNotFoundError:
        return None
    return parse_manifest(raw)


def sha256_of(fs: Any, path: str) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with fs.open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_archive(fs: Any, entry: str, found: CachedExport, verify: bool | Literal["full"]) -> None:
    """Raise :class:`DamagedEntryError` unless the archive matches the manifest.

    ``verify``: ``False`` checks that it exists, ``True`` also its size, ``"full"`` also
    its SHA-256.
    """
    archive = f"{entry}/{ARCHIVE_NAME}"
    try:
        actual = fs.size(archive)
    except FileNotFoundError as exc:
        msg = "manifest.json without archive.zip"
        raise DamagedEntryError(msg) from exc
    if verify and actual != found.size:
        msg = f"archive.zip is {actual} bytes, the manifest says {found.size}"
        raise DamagedEntryError(msg)
    if verify == "full" and sha256_of(fs, archive) != found.manifest["sha256"]:
        msg = "archive.zip does not match the manifest's sha256"
        raise DamagedEntryError(msg)


def check_uncommitted(fs: Any, entry: str) -> None:
    """For an entry without manifest: raise :class:`InterruptedCommitError` if it has an archive."""
    if fs.exists(f"{entry}/{ARCHIVE_NAME}"):
        msg = "archive.zip without manifest.json (interrupted commit)"
        raise InterruptedCommitError(msg)


def in_flight(fs: Any, archive: str, stale: timedelta, *, export_id: str) -> bool:
    """Whether an archive without manifest may be another machine's commit in progress.

    It may be while younger than ``stale``, or when its age cannot be told (never delete
    what may be in use).
    """
    when = modified(fs, archive)
    if when is None:
        return True
    if datetime.now(UTC) - when < stale:
        logger.info(
            "export %s: archive without manifest, written %s; maybe a commit in progress "
            "elsewhere, left alone",
            export_id,
            when.isoformat(timespec="seconds"),
        )
        return True
    return False


def modified(fs: Any, path: str) -> datetime | None:
    """Last modification of ``path`` (aware UTC), ``None`` when it cannot be told."""
    try:
        when: datetime = fs.modified(path)
    except (OSError, NotImplementedError, ValueError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def subdirs(fs: Any, path: str) -> list[str]:
    """The directories directly under ``path``, sorted; ``[]`` when it does not exist."""
    try:
        items = fs.ls(path, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(i["name"] for i in items if i.get("type") == "directory")


def manifests(
    fs: Any, base: str, ref: ExportRef | None
) -> Iterator[tuple[ExportRef, str, str, dict[str, Any]]]:
    """``(ref, export_id, entry, manifest)`` of every entry under ``base`` with a manifest.

    All owners of both kinds, or only ``ref``'s. Owner folders that are no valid owner
    id, and entries whose manifest is unreadable, are skipped.
    """
    owners: list[tuple[ExportRef, str]] = []
    if ref is not None:
        owners.append((ref, f"{base}/{ref.kind}/{check_id(ref.id, 'owner id')}"))
    else:
        for kind in KINDS:
            for owner_dir in subdirs(fs, f"{base}/{kind}"):
                name = owner_dir.rstrip("/").rsplit("/", 1)[-1]
                with contextlib.suppress(Exception):
                    owners.append((ExportRef(kind, name), owner_dir.rstrip("/")))
    for owner, owner_dir in owners:
        for found in subdirs(fs, owner_dir):
            entry = found.rstrip("/")
            try:
                data = read_manifest(fs, entry)
            except DamagedEntryError:
                continue
            if data is not None:
                yield owner, entry.rsplit("/", 1)[-1], entry, data


def sweep_stale(fs: Any, entry: str, cutoff: datetime) -> list[str]:
    """Remove the entry's temporary files (``*.tmp-*``) last written before ``cutoff``.

    Looks in the entry and its ``tables/`` folder; returns the removed paths. A file whose
    age cannot be told is kept. Never raises.
    """
    removed: list[str] = []
    for folder in (entry, f"{entry}/{TABLES_DIR}"):
        try:
            names = fs.ls(folder, detail=False)
        except (OSError, ValueError):
            continue
        for path in names:
            if ".tmp-" not in path.rsplit("/", 1)[-1]:
                continue
            when = modified(fs, path)
            if when is None or when >= cutoff:
                continue
            try:
                fs.rm(path)
            except OSError:
                continue
            removed.append(path)
    return removed


def discard(fs: Any, path: str) -> None:
    """Remove a file if it exists (never raises)."""
    with contextlib.suppress(OSError):
        if fs.exists(path):
            fs.rm(path)


def move(fs: Any, src: str, dst: str, *, local: bool) -> None:
    """Rename ``src`` to ``dst``: atomic (:func:`os.replace`) on a local filesystem."""
    if local:
        os.replace(src, dst)
    else:
        fs.mv(src, dst)


def remove_committed(fs: Any, entry: str) -> None:
    """Remove the manifest first (un-commit), then archive and tables; keep staging files."""
    for name in (MANIFEST_NAME, ARCHIVE_NAME):
        with contextlib.suppress(FileNotFoundError):
            fs.rm(f"{entry}/{name}")
    with contextlib.suppress(FileNotFoundError):
        if fs.exists(f"{entry}/{TABLES_DIR}"):
            fs.rm(f"{entry}/{TABLES_DIR}", recursive=True)
    with contextlib.suppress(OSError):
        if not fs.ls(entry):
            fs.rmdir(entry)


def write_json(fs: Any, path: str, data: Mapping[str, Any], *, local: bool) -> None:
    """Write ``data`` as JSON to ``path``: to a temporary file first, then renamed."""
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex}"
    try:
        with fs.open(tmp, "wb") as fh:
            fh.write(json.dumps(data, indent=2, sort_keys=True).encode("utf-8"))
        move(fs, tmp, path, local=local)
    finally:
        discard(fs, tmp)
