"""String arrays built over a text buffer from value lengths (numpy offsets, no copy)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["spread", "string_array"]


def string_array(lengths: np.ndarray, data: Any) -> pa.StringArray:
    """A string array over ``data``, the values' texts one after the other (no copy)."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.StringArray.from_buffers(
        len(lengths), pa.py_buffer(offsets), pa.py_buffer(data), null_count=0
    )


def spread(n: int, at: np.ndarray, lengths: np.ndarray, data: Any) -> pa.StringArray:
    """``n`` strings: the texts of ``data`` (``lengths``) at the ascending rows ``at``, null
    elsewhere. The offsets and validity are computed with numpy; ``data`` is not copied.
    """
    if len(at) == n:
        return string_array(lengths, data)
    full = np.zeros(n, dtype=np.int32)
    full[at] = lengths
    present = np.zeros(n, dtype=bool)
    present[at] = True
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(full, out=offsets[1:])
    validity = np.packbits(present, bitorder="little")
    return pa.StringArray.from_buffers(
        n,
        pa.py_buffer(offsets),
        pa.py_buffer(data),
        pa.py_buffer(validity),
        null_count=n - len(at),
    )
