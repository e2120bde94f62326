"""The export archive: its layout, kind and metadata, JSONL blocks and lines, uploaded files.

Tolerant of the layout variations of spec section 2 (a top-level folder, CRLF, blank
lines, a UTF-8 BOM, lines of many megabytes); the safety policy is
:mod:`prolific_ingest.archive._names`'s and member I/O :mod:`prolific_ingest.archive._members`'s.
Member data is always streamed in chunks of :data:`CHUNK_BYTES`; a member is never held
whole in memory.
"""

from __future__ import annotations

import logging
import os
import threading
import zipfile
from collections.abc import Iterator
from types import TracebackType
from typing import IO, Any, BinaryIO, Self, cast

import fsspec

from .._urls import parse_storage_url
from ..errors import (
    ArchiveSecurityError,
    CorruptArchiveError,
    MissingMemberError,
    redact_url,
)
from ._budget import ArchiveLimits
from ._layout import FileEntry, file_entry, find_root
from ._members import READ_ERRORS, copy_member, corrupt, open_member, read_all, verify_members
from ._metadata import parse_metadata
from ._names import KNOWN_MEMBERS, SafeMember, classify_members

__all__ = [
    "BATCH",
    "CHUNK_BYTES",
    "COLLECTION",
    "MAX_METADATA_BYTES",
    "VERIFY_THREADS",
    "ExportArchive",
    "open_archive",
]

logger = logging.getLogger("prolific_ingest.archive")  # the name it has always logged under

BATCH, COLLECTION = "batch", "collection"

#: Bytes read from a member per ``read`` call; also about the size of a parse block. The
#: parser holds one block as Python objects (about ten times its size), so this bounds
#: the parse's memory; below ~2 MiB the per-block overhead starts to show.
CHUNK_BYTES = 2 * 2**20
#: Threads that check member CRCs in :meth:`ExportArchive.verify`.
VERIFY_THREADS = 2
#: Largest metadata (``batch.json`` / ``collection.json``) member that is parsed.
MAX_METADATA_BYTES = 256 * 2**20

_BOM = b"\xef\xbb\xbf"
_BATCH_MEMBERS = ("responses-by-submission.jsonl", "responses-by-task.jsonl", "batch.json")
_COLLECTION_MEMBERS = ("responses.jsonl", "collection.json")


def _display(source: str) -> str:
    return redact_url(source) or source if "://" in source else source


class ExportArchive:
    """An opened export archive (a context manager).

    Use :func:`open_archive` to create one. Attributes: ``source`` (as given), ``kind``
    (``"batch"`` or ``"collection"``), ``root`` (``""`` or ``"<folder>/"``), ``metadata``
    (parsed ``batch.json``/``collection.json``, ``{}`` if absent) and ``members`` (logical
    name -> actual member name).
    """

    def __init__(
        self,
        fileobj: IO[bytes],
        *,
        source: str,
        kind: str | None = None,
        limits: ArchiveLimits | None = None,
    ) -> None:
        self.source = source
        self._fileobj = fileobj
        self._display = _display(source)
        try:
            self._zip = zipfile.ZipFile(fileobj)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
            fileobj.close()
            msg = f"{self._display} is not a readable ZIP archive: {exc}"
            raise CorruptArchiveError(msg, source=source) from exc
        try:
            safe = classify_members(
                self._zip.infolist(),
                source=self._display,
                limits=limits or ArchiveLimits.from_env(),
            )
            self._safe: dict[str, SafeMember] = {m.name: m for m in safe}
            self.root = find_root(list(self._safe))
            self.members: dict[str, str] = {
                logical: self.root + logical
                for logical in KNOWN_MEMBERS
                if self.root + logical in self._safe
            }
            self.kind = kind or self._detect_kind()
            self.metadata: dict[str, Any] = self._read_metadata()
        except BaseException:
            self.close()
            raise

    # -- discovery -----------------------------------------------------------------------
    def _detect_kind(self) -> str:
        is_batch = any(m in self.members for m in _BATCH_MEMBERS)
        is_collection = any(m in self.members for m in _COLLECTION_MEMBERS)
        if is_collection and not is_batch:
            return COLLECTION
        if not is_batch:
            logger.warning(
                "%s has no batch or collection members; reading it as a batch export",
                self._display,
            )
        return BATCH

    def _read_metadata(self) -> dict[str, Any]:
        logical = "batch.json" if self.kind == BATCH else "collection.json"
        if logical not in self.members:
            return {}
        info = self._safe[self.members[logical]].info
        if info.file_size > MAX_METADATA_BYTES:
            msg = f"{logical} declares {info.file_size} bytes (limit {MAX_METADATA_BYTES})"
            raise ArchiveSecurityError(msg, source=self._display, member=info.filename)
        with self._open_member(info) as fh:
            raw = read_all(fh, info.filename, source=self._display)
        return parse_metadata(raw, member=info.filename, source=self._display)

    def has(self, logical: str) -> bool:
        """Return whether the logical member (e.g. ``"responses.jsonl"``) is present."""
        return logical in self.members

    # -- reading -------------------------------------------------------------------------
    def _open_member(self, info: zipfile.ZipInfo, *, fast: bool = False) -> IO[bytes]:
        return open_member(self._zip, info, source=self._display, fast=fast)

    def _open_fast(self, info: zipfile.ZipInfo) -> IO[bytes]:
        """:meth:`_open_member` for a member read to its end here (ISA-L's inflate)."""
        return self._open_member(info, fast=True)

    def _member_info(self, logical: str) -> zipfile.ZipInfo:
        if logical not in self.members:
            msg = f"{self._display} has no member {logical!r}"
            raise MissingMemberError(msg, source=self._display, member=logical)
        return self._safe[self.members[logical]].info

    def member_size(self, logical: str) -> int:
        """The uncompressed size a logical member declares, in bytes."""
        return self._member_info(logical).file_size

    def iter_chunks(self, logical: str, chunk_bytes: int | None = None) -> Iterator[bytes]:
        """Yield a member's decompressed bytes in chunks of about ``chunk_bytes``.

        Raises :class:`CorruptArchiveError` (naming the member) on a bad CRC or truncation.
        The CRC-32 of the whole member is compared with the central directory's as the
        last bytes are inflated, so the error comes instead of the last chunk: a caller
        that iterates to the end has seen only bytes of an intact member (what
        :meth:`verify` would check); one that stops early has checked nothing.
        """
        info = self._member_info(logical)
        size = chunk_bytes or CHUNK_BYTES
        with self._open_fast(info) as fh:
            while True:
                try:
                    chunk = fh.read(size)
                except READ_ERRORS as exc:
                    raise corrupt(info.filename, self._display, exc) from exc
                if not chunk:
                    return
                yield chunk

    def iter_blocks(
        self, logical: str, chunk_bytes: int | None = None
    ) -> Iterator[tuple[int, bytes]]:
        """Yield ``(first_line_number, block)``: runs of whole lines, BOM removed.

        Every block ends with ``b"\\n"`` except possibly the last; a line longer than
        ``chunk_bytes`` makes one larger block. ``first_line_number`` is 1-based.
        """
        line_no = 1
        # The pieces of the unfinished line, joined once: ``+=`` per chunk would copy a
        # line spanning many chunks again and again (quadratic in its length).
        pending: list[bytes] = []
        first = True
        for chunk in self.iter_chunks(logical, chunk_bytes):
            if first:
                first = False
                chunk = chunk.removeprefix(_BOM)
            cut = chunk.rfind(b"\n")
            if cut < 0:
                pending.append(chunk)
                continue
            if pending:
                pending.append(chunk[: cut + 1])
                block = b"".join(pending)
            else:
                block = chunk[: cut + 1]
            rest = chunk[cut + 1 :]
            pending = [rest] if rest else []
            yield line_no, block
            line_no += block.count(b"\n")
        if pending:
            yield line_no, b"".join(pending)

    def iter_lines(self, logical: str) -> Iterator[tuple[int, bytes]]:
        """Yield ``(line_number, raw_line)`` for every non-blank line of a JSONL member.

        Line numbers are 1-based and count blank lines; the raw line has no ``\\n``,
        ``\\r\\n`` or BOM.
        """
        for start, block in self.iter_blocks(logical):
            for offset, line in enumerate(block.split(b"\n")):
                if line.endswith(b"\r"):
                    line = line[:-1]
                if line.strip():
                    yield start + offset, line

    # -- uploaded files ------------------------------------------------------------------
    def file_entries(self) -> list[FileEntry]:
        """Return one :class:`FileEntry` per regular file under ``files/``."""
        prefix = self.root + "files/"
        return [
            file_entry(name, m.info.file_size, prefix)
            for name, m in self._safe.items()
            if name.startswith(prefix)
        ]

    def open_file(self, path: str) -> BinaryIO:
        """Open an uploaded file by member path (with or without the root folder)."""
        name = path.replace("\\", "/")
        if not name.startswith(self.root + "files/"):
            name = self.root + name
        member = self._safe.get(name)
        if member is None or not name.startswith(self.root + "files/"):
            msg = f"{self._display} has no uploaded file {path!r}"
            raise MissingMemberError(msg, source=self._display, member=path)
        return cast(BinaryIO, self._open_member(member.info))

    def extract_files(
        self, dest: str, *, storage_options: dict[str, Any] | None = None
    ) -> list[str]:
        """Write every ``files/`` entry under ``dest`` and return the written paths.

        ``dest`` is a local path or any fsspec URL. Paths keep the ``files/...`` layout
        (without the root folder). Only entries that passed the safety checks are written,
        and each target is checked to stay inside ``dest``.
        """
        where = parse_storage_url(dest, storage_options, purpose="output")
        fs, base = fsspec.core.url_to_fs(where.url, **where.storage_options)
        base = base.rstrip("/")
        local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
        real_base = os.path.realpath(base) if local else base
        written: list[str] = []
        for entry in self.file_entries():
            rel = entry.path[len(self.root) :]
            target = f"{base}/{rel}"
            if local:
                parent = os.path.realpath(os.path.dirname(target))
                if os.path.commonpath([parent, real_base]) != real_base:
                    msg = f"refusing to write {rel!r} outside {where.display!r}"
                    raise ArchiveSecurityError(msg, source=self._display, member=entry.path)
            with self.open_file(entry.path) as src:
                copy_member(
                    src,
                    fs,
                    target,
                    member=entry.path,
                    source=self._display,
                    chunk_bytes=CHUNK_BYTES,
                )
            written.append(fs.unstrip_protocol(target) if not local else target)
        logger.info("extracted %d uploaded files to %s", len(written), redact_url(str(dest)))
        return written

    def verify(self, *, skip: str | None = None, cancel: threading.Event | None = None) -> None:
        """Read every member fully; raise :class:`CorruptArchiveError` on a bad CRC/truncation.

        Members are checked by :data:`VERIFY_THREADS` threads (largest first), since zlib
        releases the GIL; the first corrupt member found is the one named. A member that
        cannot be read at all (encrypted, unsupported compression) raises
        :class:`ArchiveError`.

        ``skip`` names a logical member (e.g. ``"responses-by-submission.jsonl"``) left
        unchecked, for a caller that reads it to its end with :meth:`iter_chunks` (or
        :meth:`iter_blocks`, :meth:`iter_lines`), which checks the same CRC. Setting
        ``cancel`` (from another thread) makes it return soon, having checked only part.
        """
        skipped = self.members.get(skip) if skip is not None else None
        verify_members(
            (i for i in self._zip.infolist() if not i.is_dir() and i.filename != skipped),
            self._open_fast,
            source=self._display,
            chunk_bytes=CHUNK_BYTES,
            threads=VERIFY_THREADS,
            cancel=cancel,
        )

    # -- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        """Close the ZIP and the underlying file."""
        zf = getattr(self, "_zip", None)
        if zf is not None:
            zf.close()
        self._fileobj.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ExportArchive {self.kind} {self._display!r} root={self.root!r}>"


def open_archive(
    source: str | os.PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
    kind: str | None = None,
    limits: ArchiveLimits | None = None,
) -> ExportArchive:
    """Open an export archive from a local path, ``file://`` or any fsspec URL.

    Parameters
    ----------
    source : str or os.PathLike
        Local path or fsspec URL (``s3://``, ``memory://`` ...). It must be seekable.
    storage_options : dict, optional
        Passed to :func:`fsspec.open`.
    kind : {"batch", "collection"}, optional
        Force the export kind instead of detecting it from member names.
    limits : ArchiveLimits, optional
        Zip-bomb limits; the defaults allow any realistic export.

    Raises
    ------
    CorruptArchiveError
        ``source`` is not a ZIP archive.
    ArchiveSecurityError
        An entry is unsafe (see :mod:`prolific_ingest.archive._names`).
    """
    src = os.fspath(source)
    if kind not in (None, BATCH, COLLECTION):
        msg = f"kind must be 'batch' or 'collection', not {kind!r}"
        raise ValueError(msg)
    fileobj: IO[bytes]
    if "://" not in src:
        fileobj = open(src, "rb")  # noqa: SIM115  (owned by the ExportArchive)
    else:
        fileobj = fsspec.open(src, "rb", **(storage_options or {})).open()
    archive = ExportArchive(fileobj, source=src, kind=kind, limits=limits)
    logger.info(
        "opened %s export %s (root %r, members %s)",
        archive.kind,
        _display(src),
        archive.root,
        sorted(archive.members),
    )
    return archive
