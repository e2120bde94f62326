"""Streaming JSONL members inside a ZIP, with the real-world formatting variations."""

from __future__ import annotations

import json
import zipfile
from types import TracebackType
from typing import IO, Any, Self

__all__ = ["LineWriter", "dumps"]

_BOM = b"\xef\xbb\xbf"


def dumps(obj: Any, *, ascii_only: bool = False) -> bytes:
    """Compact JSON as UTF-8 bytes."""
    return json.dumps(obj, ensure_ascii=ascii_only, separators=(",", ":")).encode("utf-8")


class LineWriter:
    """Write one JSON object per line to a ZIP member, streaming.

    Parameters
    ----------
    zf : zipfile.ZipFile
        Archive open for writing.
    name : str
        Member name.
    crlf, bom, blank_lines : bool
        Line ends ``\\r\\n``; a UTF-8 BOM first; blank lines at the start, between
        some records and at the end.
    zip64 : bool
        Force ZIP64 headers (members larger than 2 GiB).

    Every fifth line is written with ``ensure_ascii=True`` (``\\uXXXX`` escapes, surrogate
    pairs for emoji) so that both spellings of non-ASCII text occur.
    """

    def __init__(
        self,
        zf: zipfile.ZipFile,
        name: str,
        *,
        crlf: bool = False,
        bom: bool = False,
        blank_lines: bool = False,
        zip64: bool = False,
    ) -> None:
        self._fh: IO[bytes] = zf.open(name, "w", force_zip64=zip64)
        self._nl = b"\r\n" if crlf else b"\n"
        self._blank = blank_lines
        self.bytes_written = 0
        self.records = 0
        if bom:
            self._write(_BOM)
        if blank_lines:
            self._write(self._nl)

    def _write(self, data: bytes) -> None:
        self._fh.write(data)
        self.bytes_written += len(data)

    def write(self, obj: Any) -> None:
        """Append one record."""
        self._write(dumps(obj, ascii_only=self.records % 5 == 4) + self._nl)
        self.records += 1
        if self._blank and self.records % 3 == 1:
            self._write(self._nl)

    def close(self) -> None:
        """Finish the member."""
        if self._blank:
            self._write(self._nl)
        self._fh.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
