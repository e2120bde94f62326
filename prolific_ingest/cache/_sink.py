"""The destination of a download: one open handle on any fsspec URL, with running hashes."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping
from typing import Any

import fsspec

from ..errors import CacheError, redact_url

__all__ = ["Sink"]


class Sink:
    """The destination file, with running hashes.

    A failure to write the destination (a full disk, a read-only folder ...) raises
    :class:`~prolific_ingest.errors.CacheError` naming the destination, never a raw
    ``OSError`` that retry logic could take for a network error; the caller removes the
    partial file (:meth:`remove`).

    The file stays open across retries, so a resumed response is appended to the same
    handle: that works for every fsspec destination alike (an object store's upload in
    progress included), not only for local files that can be reopened for appending.
    """

    def __init__(self, dest: str, storage_options: Mapping[str, Any] | None) -> None:
        self.dest = dest
        self.fs, self.path = fsspec.core.url_to_fs(dest, **dict(storage_options or {}))
        self.handle: Any = None
        self.written = 0
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False)

    @property
    def resumable(self) -> bool:
        """Whether bytes were written to a handle that is still open."""
        return self.written > 0 and self.handle is not None

    def open(self, *, resume: bool) -> None:
        """Keep appending (``resume``, open handle) or start the file over from byte 0."""
        if resume and self.handle is not None:
            return
        self.close()
        self.written = 0
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False)
        try:
            self.handle = self.fs.open(self.path, "wb")
        except OSError as exc:
            raise self._error(exc) from exc

    def _error(self, exc: OSError) -> CacheError:
        shown = redact_url(self.dest) or self.path
        return CacheError(f"could not write the download to {shown}: {exc}")

    def write(self, chunk: bytes) -> None:
        try:
            self.handle.write(chunk)
        except OSError as exc:
            raise self._error(exc) from exc
        self.sha256.update(chunk)
        self.md5.update(chunk)
        self.written += len(chunk)

    def close(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            try:
                handle.close()
            except OSError as exc:
                raise self._error(exc) from exc

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
        with contextlib.suppress(OSError):
            if self.fs.exists(self.path):
                self.fs.rm(self.path)
