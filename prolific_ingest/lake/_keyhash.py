"""A stable 64-bit hash of key values, vectorised with NumPy over Arrow string buffers.

Stable across processes, platforms and versions of the libraries (little-endian 8-byte
words, fixed constants, splitmix64 mixing): the key index (:mod:`._keyindex`) keeps
these hashes on storage. Not cryptographic: a collision only makes the index name a file
that holds none of the keys looked up.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["hash_keys", "holds_any", "unique_hashes"]

_CHUNK = 16384
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_SEED = np.uint64(0x9E3779B97F4A7C15)
#: The hash of a null key.
_NULL = np.uint64(0x6E756C6C6B657921)


def _mix(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer (wrapping uint64 arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    out: np.ndarray = x ^ (x >> np.uint64(31))
    return out


def _words(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """Rows of at most ``8 * width`` bytes, zero-padded, as ``(rows, width)`` uint64 words."""
    n, size = len(starts), width * 8
    padded = np.zeros((n, size), np.uint8)
    if n and (lengths == lengths[0]).all() and (np.diff(starts) == lengths[0]).all():
        length = int(lengths[0])  # contiguous rows of one length (ids): no gather
        padded[:, :length] = data[starts[0] : starts[0] + n * length].reshape(n, length)
    else:
        columns = np.arange(size)
        where = np.minimum(starts[:, None] + columns[None, :], len(data) - 1)
        np.copyto(padded, data[where], where=columns[None, :] < lengths[:, None])
    return padded.view("<u8").reshape(n, width)


def _hash_rows(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The hashes of rows of one padded width (at most :data:`_CHUNK` of them)."""
    h = _mix(lengths.astype(np.uint64) ^ _SEED)
    width = (int(lengths[0]) + 7) // 8 if len(lengths) else 0
    if width:
        words = _words(data, starts, lengths, width)
        for j in range(width):
            h ^= words[:, j]
            h *= _M1
            h ^= h >> np.uint64(31)
    return _mix(h)


def _hash_strings(strings: pa.Array) -> np.ndarray:
    """A 64-bit hash of each string (stable: little-endian words, fixed constants)."""
    n = len(strings)
    offsets = np.frombuffer(strings.buffers()[1], np.int32)[strings.offset : strings.offset + n + 1]
    starts = offsets[:-1].astype(np.int64)
    lengths = np.diff(offsets).astype(np.int64)
    raw = strings.buffers()[2]
    data = np.frombuffer(raw, np.uint8) if raw is not None and raw.size else np.zeros(1, np.uint8)
    widths = (lengths + 7) // 8
    out = np.empty(n, np.uint64)
    with np.errstate(over="ignore"):
        if n == 0 or widths.min() == widths.max():  # ids: one width, slices, no gather
            for lo in range(0, n, _CHUNK):
                hi = lo + _CHUNK
                out[lo:hi] = _hash_rows(data, starts[lo:hi], lengths[lo:hi])
            return out
        for w in np.unique(widths):
            rows = np.flatnonzero(widths == w)
            for lo in range(0, len(rows), _CHUNK):
                part = rows[lo : lo + _CHUNK]
                out[part] = _hash_rows(data, starts[part], lengths[part])
    return out


def hash_keys(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The hash of each value of a first-key column (null-safe: a null has its own hash)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    text = values if pa.types.is_string(values.type) else pc.cast(values, pa.string())
    out = _hash_strings(text)
    if text.null_count:
        out[np.asarray(text.is_null())] = _NULL
    return out


def unique_hashes(parts: Iterable[np.ndarray]) -> np.ndarray:
    """The distinct hashes of several arrays, as one ascending array."""
    joined = [p for p in parts if len(p)]
    if not joined:
        return np.empty(0, np.uint64)
    ordered = np.sort(np.concatenate(joined))  # vectorised: far quicker than a hash set
    out: np.ndarray = ordered[np.concatenate([[True], ordered[1:] != ordered[:-1]])]
    return out


def holds_any(run: np.ndarray, hashes: np.ndarray) -> bool:
    """Whether the ascending ``run`` holds one of the ascending ``hashes`` (binary search)."""
    if not len(run) or not len(hashes):
        return False
    where = np.minimum(np.searchsorted(run, hashes), len(run) - 1)
    return bool((run[where] == hashes).any())
