"""Member-name safety rules and size limits for export archives (pure, no I/O).

Policy (one row per hostile case; see :func:`classify_members`):

========================================  ===========================  =========================
case                                      entry under ``files/``       any other entry
========================================  ===========================  =========================
``..`` / absolute / drive letter / NUL    skipped, WARNING logged      ``ArchiveSecurityError``
symlink (``external_attr`` S_IFLNK)       skipped, WARNING logged      ``ArchiveSecurityError``
duplicate name                            every copy skipped, WARNING  ``ArchiveSecurityError``
                                                                       (known members); others
                                                                       skipped with a WARNING
declared size / ratio over the limits     ``ArchiveSecurityError``     ``ArchiveSecurityError``
========================================  ===========================  =========================

Backslashes are treated as path separators before these checks, so ``..\\..\\x`` is a
traversal and ``export\\batch.json`` is an ordinary (Windows-written) name. Skipped names
are never used as paths. The size limits (per member and for the whole archive, checked
before and while inflating) are :mod:`prolific_ingest.archive._budget`'s.
"""

from __future__ import annotations

import logging
import re
import stat
import zipfile
from collections import Counter
from dataclasses import dataclass

from ..errors import ArchiveSecurityError
from ._budget import ArchiveLimits, check_declared

__all__ = [
    "KNOWN_MEMBERS",
    "ArchiveLimits",
    "SafeMember",
    "classify_members",
]  # ArchiveLimits: re-export

logger = logging.getLogger(__name__)

#: Logical member names an export may contain (spec section 2).
KNOWN_MEMBERS = (
    "responses-by-submission.jsonl",
    "responses-by-task.jsonl",
    "responses.jsonl",
    "batch.json",
    "collection.json",
    "README.md",
)

_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class SafeMember:
    """A regular archive entry that passed every check; ``name`` uses ``/`` separators."""

    name: str
    info: zipfile.ZipInfo


def _unsafe_reason(name: str) -> str | None:
    if "\x00" in name:
        return "NUL byte in name"
    if name.startswith("/"):
        return "absolute path"
    if _DRIVE.match(name):
        return "drive letter"
    parts = name.rstrip("/").split("/")
    if any(p == ".." for p in parts):
        return "path traversal"
    if any(p in ("", ".") for p in parts):
        return "empty or '.' path component"
    return None


def _in_files_area(parts: list[str]) -> bool:
    return "files" in parts[:2]


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def classify_members(
    infos: list[zipfile.ZipInfo], *, source: str, limits: ArchiveLimits
) -> list[SafeMember]:
    """Apply the safety policy to every entry and return the usable regular entries.

    Raises
    ------
    ArchiveSecurityError
        For the cases the module docstring lists as errors.
    """
    check_declared(infos, source=source, limits=limits)

    candidates: list[SafeMember] = []
    for info in infos:
        name = info.filename.replace("\\", "/")
        parts = name.rstrip("/").split("/")
        reason = _unsafe_reason(name)
        if reason is None and _is_symlink(info):
            reason = "symbolic link"
        if reason is not None:
            if _in_files_area(parts):
                logger.warning(
                    "skipping unsafe archive entry %r in %s: %s", info.filename, source, reason
                )
                continue
            msg = f"unsafe archive entry {info.filename!r}: {reason}"
            raise ArchiveSecurityError(msg, source=source, member=info.filename)
        if name.endswith("/"):
            continue  # directory entry
        candidates.append(SafeMember(name, info))

    counts = Counter(m.name for m in candidates)
    safe: list[SafeMember] = []
    for member in candidates:
        if counts[member.name] == 1:
            safe.append(member)
            continue
        base = member.name.rsplit("/", 1)[-1]
        parts = member.name.split("/")
        if base in KNOWN_MEMBERS and not _in_files_area(parts):
            msg = f"archive entry {member.name!r} appears {counts[member.name]} times"
            raise ArchiveSecurityError(msg, source=source, member=member.name)
        logger.warning(
            "skipping duplicate archive entry %r in %s (%d copies)",
            member.name,
            source,
            counts[member.name],
        )
    return safe
