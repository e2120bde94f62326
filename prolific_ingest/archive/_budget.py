"""The expansion budget of an export archive: size limits checked before and while inflating.

A ZIP's central directory declares every member's compressed and uncompressed size, so
most bombs are refused before a byte is inflated (:func:`check_declared`):

* one member larger than ``max_member_bytes``;
* all members together larger than ``max_total_bytes``;
* one member, or the archive as a whole, expanding more than ``max_ratio`` times its
  compressed size (the whole-archive ratio catches a bomb split into many members that
  are each too small for the per-member ratio check);
* more than ``max_members`` entries.

Headers can lie, so every member read is also counted as it inflates
(:class:`CountedMember`): a member that yields more bytes than it declared is refused, so
the declared total is a real bound on what one pass over the archive inflates (the
integrity check, the parse, file extraction).

Every limit can be raised for a trusted archive, by ``ArchiveLimits(...)`` or by the
environment variable that the error message names (see :data:`ENV_VARS`).
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import IO, Any

from ..errors import ArchiveSecurityError, ConfigurationError

__all__ = ["ENV_VARS", "ArchiveLimits", "CountedMember", "check_declared", "format_bytes"]

#: ``ArchiveLimits`` field -> the environment variable that overrides its default.
ENV_VARS: Mapping[str, str] = {
    "max_member_bytes": "PROLIFIC_INGEST_MAX_MEMBER_BYTES",
    "max_total_bytes": "PROLIFIC_INGEST_MAX_ARCHIVE_BYTES",
    "max_ratio": "PROLIFIC_INGEST_MAX_RATIO",
    "ratio_min_bytes": "PROLIFIC_INGEST_RATIO_MIN_BYTES",
    "max_members": "PROLIFIC_INGEST_MAX_MEMBERS",
}


def format_bytes(n: float) -> str:
    """``n`` bytes for a message: ``3.1 GiB``, ``31.0 MiB``, ``512 B``."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


@dataclass(frozen=True)
class ArchiveLimits:
    """Size limits that reject zip bombs before (and while) anything is decompressed.

    The defaults allow any realistic export. Each default can be changed with an
    environment variable (:data:`ENV_VARS`), read by :meth:`from_env`, which is what
    every reader uses when no ``limits`` are given.

    Parameters
    ----------
    max_member_bytes : int
        Largest uncompressed size of one member (``PROLIFIC_INGEST_MAX_MEMBER_BYTES``).
    max_total_bytes : int
        Largest uncompressed size of all members together
        (``PROLIFIC_INGEST_MAX_ARCHIVE_BYTES``).
    max_ratio : float
        Largest uncompressed/compressed ratio, of each member of at least
        ``ratio_min_bytes`` and of the whole archive once its members together reach
        ``ratio_min_bytes`` (``PROLIFIC_INGEST_MAX_RATIO``).
    ratio_min_bytes : int
        Below this uncompressed size (per member, and for the archive) the ratio is not
        checked: tiny members compress absurdly (``PROLIFIC_INGEST_RATIO_MIN_BYTES``).
    max_members : int
        Largest number of entries (``PROLIFIC_INGEST_MAX_MEMBERS``).
    """

    max_member_bytes: int = 32 * 2**30
    max_total_bytes: int = 128 * 2**30
    max_ratio: float = 500.0
    ratio_min_bytes: int = 32 * 2**20
    max_members: int = 1_000_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ArchiveLimits:
        """The defaults, with every limit whose environment variable is set replaced.

        Raises
        ------
        ConfigurationError
            A variable is set to something that is not a positive number.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for item in fields(cls):
            name = ENV_VARS[item.name]
            raw = env.get(name, "").strip()
            if not raw:
                continue
            try:
                number = float(raw.replace("_", ""))
            except ValueError:
                number = 0.0
            if not number > 0 or number == float("inf"):
                msg = f"{name} must be a positive number, not {raw!r}"
                raise ConfigurationError(msg)
            value = number if item.type in (float, "float") else int(number)
            values[item.name] = value
        return cls(**values)


def _raise_hint(field: str, value: float) -> str:
    shown = f"{value:.0f}" if isinstance(value, float) else str(value)
    return (
        f"if the archive is trusted, raise the limit with {ENV_VARS[field]}=<value> "
        f"(now {shown}) or ArchiveLimits({field}=...)"
    )


def check_declared(infos: list[zipfile.ZipInfo], *, source: str, limits: ArchiveLimits) -> None:
    """Refuse an archive whose central directory declares a bomb (nothing is inflated).

    Raises
    ------
    ArchiveSecurityError
        A limit of ``limits`` is exceeded; the message names it and how to raise it.
    """
    if len(infos) > limits.max_members:
        msg = (
            f"archive has {len(infos)} entries (limit max_members={limits.max_members}); "
            + _raise_hint("max_members", limits.max_members)
        )
        raise ArchiveSecurityError(msg, source=source)
    total = compressed = 0
    for info in infos:
        total += info.file_size
        compressed += info.compress_size
        if info.file_size > limits.max_member_bytes:
            msg = (
                f"member {info.filename!r} declares {info.file_size} bytes "
                f"(limit max_member_bytes={limits.max_member_bytes}); "
                + _raise_hint("max_member_bytes", limits.max_member_bytes)
            )
            raise ArchiveSecurityError(msg, source=source, member=info.filename)
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size >= limits.ratio_min_bytes and ratio > limits.max_ratio:
            msg = (
                f"member {info.filename!r} has compression ratio {ratio:.0f} "
                f"(limit max_ratio={limits.max_ratio:.0f}): refusing a possible zip bomb; "
                + _raise_hint("max_ratio", limits.max_ratio)
            )
            raise ArchiveSecurityError(msg, source=source, member=info.filename)
    if total > limits.max_total_bytes:
        msg = (
            f"archive declares {total} uncompressed bytes "
            f"(limit max_total_bytes={limits.max_total_bytes}); "
            + _raise_hint("max_total_bytes", limits.max_total_bytes)
        )
        raise ArchiveSecurityError(msg, source=source)
    ratio = total / max(compressed, 1)
    if total >= limits.ratio_min_bytes and ratio > limits.max_ratio:
        msg = (
            f"archive's {len(infos)} members expand to {format_bytes(total)} from "
            f"{format_bytes(compressed)} (compression ratio {ratio:.0f}, limit "
            f"max_ratio={limits.max_ratio:.0f}): refusing a possible zip bomb; "
            + _raise_hint("max_ratio", limits.max_ratio)
        )
        raise ArchiveSecurityError(msg, source=source)


class CountedMember(io.BufferedIOBase):
    """A member's inflating stream that refuses to yield more than the member declared.

    ``zipfile`` trusts the central directory's sizes; counting the bytes actually
    inflated keeps the declared sizes (which :func:`check_declared` bounded) a real bound
    whatever the member's headers or compressed data say.
    """

    def __init__(self, raw: IO[bytes], info: zipfile.ZipInfo, *, source: str) -> None:
        super().__init__()
        self._raw = raw
        self._info = info
        self._source = source
        self._left = info.file_size
        self.inflated = 0

    def _count(self, data: bytes) -> bytes:
        self.inflated += len(data)
        if self.inflated > self._left:
            name = self._info.filename
            msg = (
                f"member {name!r} inflates past the {self._info.file_size} bytes it declares: "
                "its headers lie (a possible zip bomb)"
            )
            raise ArchiveSecurityError(msg, source=self._source, member=name)
        return data

    def read(self, size: int | None = -1) -> bytes:
        """Read up to ``size`` inflated bytes (all that are left for ``-1``/``None``)."""
        return self._count(self._raw.read(-1 if size is None else size))

    def read1(self, size: int = -1) -> bytes:
        """Like :meth:`read` (the underlying stream decides how much one call inflates)."""
        return self._count(self._raw.read(size))

    def readable(self) -> bool:
        """Always ``True``."""
        return True

    def close(self) -> None:
        """Close the underlying member stream."""
        if not self.closed:
            self._raw.close()
        super().close()
