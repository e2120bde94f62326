"""ExportCache: downloaded archives, keyed by export id, on any fsspec location.

Layout (pinned by ``tests/test_cache_layout.py``)::

    <root>/<kind>/<owner_id>/<export_id>/archive.zip
    <root>/<kind>/<owner_id>/<export_id>/manifest.json     written last: the commit marker
    <root>/<kind>/<owner_id>/<export_id>/tables/           parsed Parquet (written by the loader)
    <root>/.locks/                                         lock files (local roots only)

An entry exists only once its manifest is written; an archive without a manifest,
or one whose size (or, with ``verify="full"``, SHA-256) differs from the manifest,
is reported with a WARNING, removed, and treated as absent.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

import fsspec
import platformdirs
from fsspec.implementations.local import LocalFileSystem

from ._cache_entry import (
    ARCHIVE_NAME,
    FORMAT_VERSION,
    KINDS,
    LOCKS_DIR,
    MANIFEST_NAME,
    TABLES_DIR,
    CachedExport,
    DamagedEntryError,
    as_timedelta,
    check_id,
    entry_from_manifest,
    locks_for,
    make_manifest,
    parse_manifest,
)
from ._urls import parse_storage_url
from .config import default_cache_dir
from .errors import CacheError, redact_url, storage_errors
from .exports import ExportFilter, ExportRef

__all__ = ["ARCHIVE_NAME", "FORMAT_VERSION", "MANIFEST_NAME", "CachedExport", "ExportCache"]

logger = logging.getLogger(__name__)

#: A temporary file not written to for this long was left by a killed process.
STALE_STAGING = timedelta(hours=1)


class _InterruptedCommitError(DamagedEntryError):
    """``archive.zip`` without ``manifest.json``: a commit killed, or still running."""


P = ParamSpec("P")
R = TypeVar("R")


def _typed_storage_errors(
    method: Callable[Concatenate[ExportCache, P], R],
) -> Callable[Concatenate[ExportCache, P], R]:
    """Raise a storage backend's own exceptions (credentials ...) as :class:`CacheError`."""

    @functools.wraps(method)
    def guarded(self: ExportCache, /, *args: P.args, **kwargs: P.kwargs) -> R:
        shown = redact_url(self.root) or self.root
        with storage_errors(lambda detail: CacheError(f"cache {shown}: {detail}")):
            return method(self, *args, **kwargs)

    return guarded


class ExportCache:
    """Downloaded export archives under ``root`` (a local path or fsspec URL).

    Parameters
    ----------
    root : str, optional
        Local directory or URL such as ``s3://bucket/prefix`` or ``memory://x``
        (default: :func:`~prolific_ingest.config.default_cache_dir`).
    storage_options : mapping, optional
        fsspec options for a remote root; ignored for a local one (a plain path or
        ``file://``), so callers can pass the same options whatever the root is.
    """

    def __init__(
        self, root: str | None = None, *, storage_options: Mapping[str, Any] | None = None
    ) -> None:
        target = parse_storage_url(root or default_cache_dir(), storage_options, purpose="cache")
        raw = self.root = target.url  # credentials moved into the options; ``~`` expanded
        self.storage_options: dict[str, Any] = target.storage_options  # {} for a local root
        with storage_errors(lambda detail: CacheError(f"cache {redact_url(raw)}: {detail}")):
            self._fs, path = fsspec.core.url_to_fs(self.root, **self.storage_options)
        self._local = isinstance(self._fs, LocalFileSystem)
        self._base = path.rstrip("/") or "/"
        if self._local:
            self._lock_dir = os.path.join(self._base, LOCKS_DIR)
        else:
            digest = hashlib.sha256(self._fs.unstrip_protocol(self._base).encode()).hexdigest()
            user = platformdirs.user_cache_dir("prolific-ingest", appauthor=False)
            self._lock_dir = os.path.join(user, "locks", digest[:24])

    def __repr__(self) -> str:
        return f"ExportCache(root={self.root!r})"

    # -- paths ---------------------------------------------------------------------------------

    def _join(self, *parts: str) -> str:
        return "/".join([self._base.rstrip("/"), *parts])

    def _entry(self, ref: ExportRef, export_id: str) -> str:
        return self._join(ref.kind, check_id(ref.id, "owner id"), check_id(export_id, "export id"))

    def _external(self, fs_path: str) -> str:
        return fs_path if self._local else str(self._fs.unstrip_protocol(fs_path))

    def _internal(self, path: str) -> str:
        return path if self._local else str(self._fs._strip_protocol(path))

    def entry_path(self, ref: ExportRef, export_id: str) -> str:
        """Return the entry directory of an export (local path or URL)."""
        return self._external(self._entry(ref, export_id))

    # -- reading -------------------------------------------------------------------------------

    def _read_manifest(self, entry: str) -> dict[str, Any] | None:
        try:
            raw = self._fs.cat_file(f"{entry}/{MANIFEST_NAME}")
        except FileNotFoundError:
            return None
        return parse_manifest(raw)

    def _build(
        self, ref: ExportRef, export_id: str, entry: str, data: dict[str, Any]
    ) -> CachedExport:
        return entry_from_manifest(
            ref,
            export_id,
            data,
            path=self._external(entry),
            archive_path=self._external(f"{entry}/{ARCHIVE_NAME}"),
        )

    def _sha256(self, path: str) -> str:
        digest = hashlib.sha256()
        with self._fs.open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    def _check(
        self, ref: ExportRef, export_id: str, verify: bool | Literal["full"]
    ) -> CachedExport | None:
        """Return the entry, ``None`` when absent; raise :class:`DamagedEntryError` when invalid."""
        entry = self._entry(ref, export_id)
        archive = f"{entry}/{ARCHIVE_NAME}"
        data = self._read_manifest(entry)
        if data is None:
            if self._fs.exists(archive):
                msg = "archive.zip without manifest.json (interrupted commit)"
                raise _InterruptedCommitError(msg)
            return None
        found = self._build(ref, export_id, entry, data)
        try:
            actual = self._fs.size(archive)
        except FileNotFoundError as exc:
            msg = "manifest.json without archive.zip"
            raise DamagedEntryError(msg) from exc
        if verify and actual != found.size:
            msg = f"archive.zip is {actual} bytes, the manifest says {found.size}"
            raise DamagedEntryError(msg)
        if verify == "full" and self._sha256(archive) != found.manifest["sha256"]:
            msg = "archive.zip does not match the manifest's sha256"
            raise DamagedEntryError(msg)
        return found

    @_typed_storage_errors
    def lookup(
        self, ref: ExportRef, export_id: str, *, verify: bool | Literal["full"] = True
    ) -> CachedExport | None:
        """Return the committed entry of an export, or ``None`` (no network).

        Parameters
        ----------
        ref : ExportRef
            The batch or collection.
        export_id : str
            The export's id.
        verify : bool or "full"
            ``False``: manifest and archive exist; ``True`` (default): also the
            archive size; ``"full"``: also its SHA-256 (reads the whole file).

        Returns
        -------
        CachedExport or None
            The entry, or ``None`` when absent or damaged.

        Notes
        -----
        A damaged entry is logged at WARNING, removed and reported as ``None``. Except on a
        remote root, where an archive without manifest younger than :data:`STALE_STAGING`
        may be another machine's commit in progress: it is reported as ``None`` and left.
        """
        try:
            return self._check(ref, export_id, verify)
        except DamagedEntryError:
            pass
        with self.lock(ref, export_id):  # re-check: a commit may just have been finishing
            try:
                return self._check(ref, export_id, verify)
            except DamagedEntryError as exc:
                if self._maybe_committing(ref, export_id, exc):
                    return None
                logger.warning(
                    "cache entry %s of %s %s is damaged (%s); removing it",
                    export_id,
                    ref.kind,
                    ref.id,
                    exc,
                )
                self._remove_committed(self._entry(ref, export_id))
                return None

    def _maybe_committing(self, ref: ExportRef, export_id: str, exc: DamagedEntryError) -> bool:
        """Whether an archive without manifest may be another machine's commit in flight.

        The locks of a remote cache are per machine, so on a remote root a fresh archive
        without a manifest is left alone (reported absent) until it is
        :data:`STALE_STAGING` old; a local root's lock already rules that out.
        """
        if self._local or not isinstance(exc, _InterruptedCommitError):
            return False
        modified = self._modified(f"{self._entry(ref, export_id)}/{ARCHIVE_NAME}")
        if modified is None:
            return True  # cannot tell its age: never delete what may be in use
        if datetime.now(UTC) - modified < STALE_STAGING:
            logger.info(
                "export %s: archive without manifest, written %s; maybe a commit in progress "
                "elsewhere, left alone",
                export_id,
                modified.isoformat(timespec="seconds"),
            )
            return True
        return False

    def _modified(self, path: str) -> datetime | None:
        """Last modification of ``path`` (aware UTC), ``None`` when it cannot be told."""
        try:
            modified: datetime = self._fs.modified(path)
        except (OSError, NotImplementedError, ValueError):
            return None
        return modified if modified.tzinfo is not None else modified.replace(tzinfo=UTC)

    def _owner_dirs(self, ref: ExportRef | None) -> Iterator[tuple[ExportRef, str]]:
        if ref is not None:
            yield ref, self._join(ref.kind, check_id(ref.id, "owner id"))
            return
        for kind in KINDS:
            for owner_dir in self._ls(self._join(kind)):
                name = owner_dir.rstrip("/").rsplit("/", 1)[-1]
                with contextlib.suppress(Exception):
                    yield ExportRef(kind, name), owner_dir.rstrip("/")

    def _ls(self, path: str) -> builtins.list[str]:
        try:
            items = self._fs.ls(path, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(i["name"] for i in items if i.get("type") == "directory")

    @_typed_storage_errors
    def list(self, ref: ExportRef | None = None) -> builtins.list[CachedExport]:
        """Return committed entries (all, or one batch/collection's), newest first.

        Reads manifests only; entries with an unreadable manifest are skipped here
        (``lookup`` removes them).
        """
        found: builtins.list[CachedExport] = []
        for owner, owner_dir in self._owner_dirs(ref):
            for entry in self._ls(owner_dir):
                export_id = entry.rstrip("/").rsplit("/", 1)[-1]
                try:
                    data = self._read_manifest(entry.rstrip("/"))
                    if data is not None:
                        found.append(self._build(owner, export_id, entry.rstrip("/"), data))
                except (DamagedEntryError, CacheError):
                    continue
        return sorted(found, key=lambda e: e.fetched_at, reverse=True)

    @_typed_storage_errors
    def find(
        self,
        ref: ExportRef,
        filter: ExportFilter | None = None,
        *,
        max_age: timedelta | float | None,
    ) -> CachedExport | None:
        """Return the newest valid entry with the same filter, younger than ``max_age``.

        ``max_age=None`` accepts any age. No network.
        """
        flt = ExportFilter.coerce(filter)
        limit = as_timedelta(max_age)
        now = datetime.now(UTC)
        for entry in self.list(ref):
            if not entry.filter_known or entry.filter != flt:
                continue
            if limit is not None and now - entry.snapshot_at > limit:
                continue
            valid = self.lookup(ref, entry.export_id)
            if valid is not None:
                return valid
        return None

    # -- writing -------------------------------------------------------------------------------

    @_typed_storage_errors
    def staging(self, ref: ExportRef, export_id: str) -> str:
        """Return a process-unique temporary archive path inside the entry directory.

        Call it while holding :meth:`lock`. Staging files of the entry left by a killed
        process are removed first (see :meth:`sweep_staging`).
        """
        entry = self._entry(ref, export_id)
        try:
            self._fs.makedirs(entry, exist_ok=True)
        except OSError as exc:
            msg = f"cannot create cache directory {self._external(entry)}: {exc}"
            raise CacheError(msg) from exc
        self.sweep_staging(ref, export_id)
        name = f"{ARCHIVE_NAME}.tmp-{os.getpid()}-{uuid.uuid4().hex}"
        return self._external(f"{entry}/{name}")

    def sweep_staging(self, ref: ExportRef, export_id: str) -> builtins.list[str]:
        """Remove the entry's stale temporary files; return the removed paths.

        A temporary file (``*.tmp-*``: a staged archive, manifest or parsed table) that
        has not been written to for :data:`STALE_STAGING` was left by a process that was
        killed: a live download or parse writes to its file continuously. The age rule,
        not the lock alone, decides, because the locks of a remote cache are per machine.
        Never raises.
        """
        entry = self._entry(ref, export_id)
        cutoff = datetime.now(UTC) - STALE_STAGING
        removed: builtins.list[str] = []
        for folder in (entry, f"{entry}/{TABLES_DIR}"):
            try:
                names = self._fs.ls(folder, detail=False)
            except (OSError, ValueError):
                continue
            for path in names:
                if ".tmp-" not in path.rsplit("/", 1)[-1]:
                    continue
                modified = self._modified(path)
                if modified is None or modified >= cutoff:
                    continue
                try:
                    self._fs.rm(path)
                except OSError:
                    continue
                removed.append(self._external(path))
        if removed:
            logger.info("removed %d stale staging files of export %s", len(removed), export_id)
        return removed

    def discard(self, staging_path: str) -> None:
        """Remove a staging file if it exists (never raises)."""
        with contextlib.suppress(OSError):
            path = self._internal(staging_path)
            if self._fs.exists(path):
                self._fs.rm(path)

    def _move(self, src: str, dst: str) -> None:
        if self._local:
            os.replace(src, dst)
        else:
            self._fs.mv(src, dst)

    def _write_json(self, path: str, data: Mapping[str, Any]) -> None:
        tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex}"
        try:
            with self._fs.open(tmp, "wb") as fh:
                fh.write(json.dumps(data, indent=2, sort_keys=True).encode("utf-8"))
            self._move(tmp, path)
        finally:
            self.discard(tmp)

    def pending(
        self,
        ref: ExportRef,
        export_id: str,
        *,
        filter: ExportFilter | None,
        size: int,
        sha256: str,
        etag: str | None,
        source_url: str | None,
        filter_known: bool = True,
        created_at: datetime | None = None,
    ) -> CachedExport:
        """The entry an archive staged for ``export_id`` becomes once committed; writes nothing.

        Takes the arguments of :meth:`commit`. The result is **not** committed: a lookup
        does not find it until :meth:`commit` is called (a load parses a staged archive
        and commits it only once the parse has checked the member it read).
        """
        manifest = make_manifest(
            ref,
            export_id,
            filter=filter,
            size=size,
            sha256=sha256,
            etag=etag,
            source_url=source_url,
            filter_known=filter_known,
            created_at=created_at,
        )
        return self._build(ref, export_id, self._entry(ref, export_id), manifest)

    @_typed_storage_errors
    def commit(
        self,
        ref: ExportRef,
        export_id: str,
        staging_path: str,
        *,
        filter: ExportFilter | None,
        size: int,
        sha256: str,
        etag: str | None,
        source_url: str | None,
        filter_known: bool = True,
        created_at: datetime | None = None,
    ) -> CachedExport:
        """Move a downloaded archive into place, then write its manifest (the commit).

        ``filter_known=False`` records that the export's filter is unknown (loaded by id);
        ``created_at`` is the server's creation time of the export, when known.

        The staging file is removed in any case. Call it while holding :meth:`lock`.

        Raises
        ------
        CacheError
            The archive could not be moved or the manifest written.
        """
        entry = self._entry(ref, export_id)
        staged = self._internal(staging_path)
        archive = f"{entry}/{ARCHIVE_NAME}"
        manifest_path = f"{entry}/{MANIFEST_NAME}"
        manifest = make_manifest(
            ref,
            export_id,
            filter=filter,
            size=size,
            sha256=sha256,
            etag=etag,
            source_url=source_url,
            filter_known=filter_known,
            created_at=created_at,
        )
        try:
            actual = self._fs.size(staged)
            if actual != size:
                msg = f"staged archive is {actual} bytes, expected {size}"
                raise CacheError(msg)
            if self._fs.exists(manifest_path):  # un-commit the old entry before replacing it
                self._fs.rm(manifest_path)
            self._move(staged, archive)
            self._write_json(manifest_path, manifest)
        except OSError as exc:
            msg = f"could not commit export {export_id} into {self._external(entry)}: {exc}"
            raise CacheError(msg) from exc
        finally:
            self.discard(staged)
        logger.info("export %s committed to cache %s", export_id, self._external(entry))
        return self._build(ref, export_id, entry, manifest)

    @contextlib.contextmanager
    def lock(self, ref: ExportRef, export_id: str) -> Iterator[None]:
        """Hold the entry's lock (across threads and processes) for the ``with`` block."""
        os.makedirs(self._lock_dir, exist_ok=True)
        name = f"{ref.kind}-{check_id(ref.id, 'owner id')}-{check_id(export_id, 'export id')}"
        if len(name) > 200:
            name = hashlib.sha256(name.encode()).hexdigest()
        thread_lock, file_lock = locks_for(os.path.join(self._lock_dir, name + ".lock"))
        with thread_lock, file_lock:
            yield

    # -- removal -------------------------------------------------------------------------------

    def _remove_committed(self, entry: str) -> None:
        """Remove the manifest first (un-commit), then archive and tables; keep staging files."""
        for name in (MANIFEST_NAME, ARCHIVE_NAME):
            with contextlib.suppress(FileNotFoundError):
                self._fs.rm(f"{entry}/{name}")
        with contextlib.suppress(FileNotFoundError):
            if self._fs.exists(f"{entry}/{TABLES_DIR}"):
                self._fs.rm(f"{entry}/{TABLES_DIR}", recursive=True)
        with contextlib.suppress(OSError):
            if not self._fs.ls(entry):
                self._fs.rmdir(entry)

    @_typed_storage_errors
    def delete(self, ref: ExportRef, export_id: str) -> bool:
        """Remove one entry; return whether it was committed."""
        with self.lock(ref, export_id):
            entry = self._entry(ref, export_id)
            existed = bool(self._fs.exists(f"{entry}/{MANIFEST_NAME}"))
            self._remove_committed(entry)
        return existed

    def plan_clear(
        self, ref: ExportRef | None = None, *, max_age: timedelta | float | None = None
    ) -> builtins.list[CachedExport]:
        """Return the entries :meth:`clear` would remove (all, or older than ``max_age``)."""
        limit = as_timedelta(max_age)
        now = datetime.now(UTC)
        return [e for e in self.list(ref) if limit is None or now - e.fetched_at > limit]

    def plan_prune(
        self, max_age: timedelta | float, ref: ExportRef | None = None
    ) -> builtins.list[CachedExport]:
        """Return the entries :meth:`prune` would remove (fetched more than ``max_age`` ago)."""
        return self.plan_clear(ref, max_age=max_age)

    def execute(self, plan: Iterable[CachedExport]) -> builtins.list[CachedExport]:
        """Remove the entries of a plan; return those that were removed."""
        removed: builtins.list[CachedExport] = []
        for entry in plan:
            if self.delete(entry.ref, entry.export_id):
                removed.append(entry)
        return removed

    def clear(
        self, ref: ExportRef | None = None, *, max_age: timedelta | float | None = None
    ) -> builtins.list[CachedExport]:
        """Remove all entries (or one batch/collection's); return what was removed."""
        return self.execute(self.plan_clear(ref, max_age=max_age))

    def prune(
        self, max_age: timedelta | float, ref: ExportRef | None = None
    ) -> builtins.list[CachedExport]:
        """Remove entries fetched more than ``max_age`` ago; return what was removed."""
        return self.execute(self.plan_prune(max_age, ref))
