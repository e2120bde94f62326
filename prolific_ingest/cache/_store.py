"""ExportCache: the cache's public methods; what they do to files is ``_files``'s."""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import fsspec
from fsspec.implementations.local import LocalFileSystem

from .._urls import parse_storage_url
from .._version import warn_deprecated
from ..config import default_cache_dir
from ..errors import CacheError, redact_url, storage_errors
from ..exports import ExportFilter, ExportRef
from . import _files, _locks
from ._entry import (
    ARCHIVE_NAME,
    MANIFEST_NAME,
    ArchiveFacts,
    CachedExport,
    DamagedEntryError,
    InterruptedCommitError,
    as_timedelta,
    check_id,
    entry_from_manifest,
    make_manifest,
)
from ._files import typed_storage_errors

__all__ = ["STALE_STAGING", "ExportCache"]

logger = logging.getLogger("prolific_ingest.cache")  # the name it has always logged under

#: A temporary file not written to for this long was left by a killed process.
STALE_STAGING = timedelta(hours=1)


def _facts(method: str, facts: ArchiveFacts | None, keywords: Mapping[str, Any]) -> ArchiveFacts:
    """``facts``, or the deprecated keywords of ``method`` made into them."""
    if not keywords:
        if facts is None:
            msg = f"ExportCache.{method}() needs the archive's facts: facts=ArchiveFacts(...)"
            raise TypeError(msg)
        return facts
    if facts is not None:
        msg = f"ExportCache.{method}(): give facts= or its fields as keywords, not both"
        raise TypeError(msg)
    warn_deprecated(
        f"ExportCache.{method}(size=..., sha256=..., ...)",
        "pass facts=ArchiveFacts(size=..., sha256=..., ...)",
        stacklevel=3,
    )
    return ArchiveFacts(**keywords)


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
        self._lock_dir = _locks.lock_dir(self._fs, self._base, local=self._local)

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

    def _check(
        self, ref: ExportRef, export_id: str, verify: bool | Literal["full"]
    ) -> CachedExport | None:
        """Return the entry, ``None`` when absent; raise :class:`DamagedEntryError` when invalid."""
        entry = self._entry(ref, export_id)
        data = _files.read_manifest(self._fs, entry)
        if data is None:
            _files.check_uncommitted(self._fs, entry)
            return None
        found = self._build(ref, export_id, entry, data)
        _files.check_archive(self._fs, entry, found, verify)
        return found

    @typed_storage_errors
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
                _files.remove_committed(self._fs, self._entry(ref, export_id))
                return None

    def _maybe_committing(self, ref: ExportRef, export_id: str, exc: DamagedEntryError) -> bool:
        """Whether an archive without manifest may be another machine's commit in flight.

        The locks of a remote cache are per machine, so on a remote root a fresh archive
        without a manifest is left alone (reported absent) until it is
        :data:`STALE_STAGING` old; a local root's lock already rules that out.
        """
        if self._local or not isinstance(exc, InterruptedCommitError):
            return False
        archive = f"{self._entry(ref, export_id)}/{ARCHIVE_NAME}"
        return _files.in_flight(self._fs, archive, STALE_STAGING, export_id=export_id)

    @typed_storage_errors
    def list(self, ref: ExportRef | None = None) -> builtins.list[CachedExport]:
        """Return committed entries (all, or one batch/collection's), newest first.

        Reads manifests only; entries with an unreadable manifest are skipped here
        (``lookup`` removes them).
        """
        found: builtins.list[CachedExport] = []
        for owner, export_id, entry, data in _files.manifests(self._fs, self._join(), ref):
            try:
                found.append(self._build(owner, export_id, entry, data))
            except (DamagedEntryError, CacheError):
                continue
        return sorted(found, key=lambda e: e.fetched_at, reverse=True)

    @typed_storage_errors
    def find(
        self,
        ref: ExportRef,
        filter: ExportFilter | None = None,
        *,
        max_age: timedelta | float | None,
    ) -> CachedExport | None:
        """Return the newest valid entry with the same filter, younger than ``max_age``.

        ``max_age=ANY_AGE`` (or ``None``, no limit) accepts any age. No network.
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

    @typed_storage_errors
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
        removed = [self._external(p) for p in _files.sweep_stale(self._fs, entry, cutoff)]
        if removed:
            logger.info("removed %d stale staging files of export %s", len(removed), export_id)
        return removed

    def discard(self, staging_path: str) -> None:
        """Remove a staging file if it exists (never raises)."""
        _files.discard(self._fs, self._internal(staging_path))

    def _write_json(self, path: str, data: Mapping[str, Any]) -> None:
        _files.write_json(self._fs, path, data, local=self._local)

    def pending(
        self,
        ref: ExportRef,
        export_id: str,
        facts: ArchiveFacts | None = None,
        **deprecated: Any,
    ) -> CachedExport:
        """The entry an archive staged for ``export_id`` becomes once committed; writes nothing.

        Takes the arguments of :meth:`commit`. The result is **not** committed: a lookup
        does not find it until :meth:`commit` is called (a load parses a staged archive
        and commits it only once the parse has checked the member it read).
        """
        facts = _facts("pending", facts, deprecated)
        manifest = make_manifest(ref, export_id, facts)
        return self._build(ref, export_id, self._entry(ref, export_id), manifest)

    @typed_storage_errors
    def commit(
        self,
        /,
        ref: ExportRef,
        export_id: str,
        staging_path: str,
        facts: ArchiveFacts | None = None,
        **deprecated: Any,
    ) -> CachedExport:
        """Move a downloaded archive into place, then write its manifest (the commit).

        ``facts`` is what the entry records: size and SHA-256, the download's ETag and
        host, the export's filter (or that it is unknown) and creation time. The
        keywords of :class:`ArchiveFacts` given one by one are deprecated.

        The staging file is removed in any case. Call it while holding :meth:`lock`.

        Raises
        ------
        CacheError
            The archive could not be moved or the manifest written.
        """
        facts = _facts("commit", facts, deprecated)
        size = facts.size
        entry = self._entry(ref, export_id)
        staged = self._internal(staging_path)
        archive = f"{entry}/{ARCHIVE_NAME}"
        manifest_path = f"{entry}/{MANIFEST_NAME}"
        committed = self.pending(ref, export_id, facts)
        try:
            actual = self._fs.size(staged)
            if actual != size:
                msg = f"staged archive is {actual} bytes, expected {size}"
                raise CacheError(msg)
            if self._fs.exists(manifest_path):  # un-commit the old entry before replacing it
                self._fs.rm(manifest_path)
            _files.move(self._fs, staged, archive, local=self._local)
            self._write_json(manifest_path, committed.manifest)
        except OSError as exc:
            msg = f"could not commit export {export_id} into {self._external(entry)}: {exc}"
            raise CacheError(msg) from exc
        finally:
            self.discard(staged)
        logger.info("export %s committed to cache %s", export_id, self._external(entry))
        return committed

    @contextlib.contextmanager
    def lock(self, ref: ExportRef, export_id: str) -> Iterator[None]:
        """Hold the entry's lock (across threads and processes) for the ``with`` block."""
        name = f"{ref.kind}-{check_id(ref.id, 'owner id')}-{check_id(export_id, 'export id')}"
        with _locks.entry_lock(self._lock_dir, name):
            yield

    # -- removal -------------------------------------------------------------------------------

    @typed_storage_errors
    def delete(self, ref: ExportRef, export_id: str) -> bool:
        """Remove one entry; return whether it was committed."""
        with self.lock(ref, export_id):
            entry = self._entry(ref, export_id)
            existed = bool(self._fs.exists(f"{entry}/{MANIFEST_NAME}"))
            _files.remove_committed(self._fs, entry)
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
