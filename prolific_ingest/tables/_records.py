"""Reading one JSONL line: strict JSON parsing, record checks, task digests, answer items.

The per-record rules shared by :class:`~._builder.RecordBuilder` (the per-line path) and
the block fast path (:mod:`._fast`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

import numpy as np
import orjson

from ._arrow import dumps

__all__ = [
    "BadLine",
    "TaskDigests",
    "answer_items",
    "check_record",
    "maybe_big_int",
    "parse_line",
    "stdlib_loads",
    "task_key",
]

_ABSENT: Any = object()
_ANSWER_KNOWN = frozenset(
    ("value", "unit", "explanation", "file_key", "file_name", "file_size_mb", "content_type")
)
_RESPONSE_KNOWN = frozenset(
    (
        "id",
        "created_at",
        "instruction_id",
        "type",
        "answer",
        "participant_id",
        "submission_id",
        "study_id",
    )
)
_TASK_KNOWN = frozenset(("task_id", "task_group_id", "datapoint", "metadata", "responses"))
_FLAT_INNER_KNOWN = frozenset(("instruction_id", "type", "answer"))
#: A JSON number token of 19+ digits: maybe an integer beyond 64 bits.
_DIGITS = re.compile(rb"[0-9]{19}")
LONG_DIGITS = re.compile(rb"[:,\[]\s*-?[0-9]{19}")
#: A surrogate escape (backslash, ``u``, ``D800``-``DFFF``), or text that looks like one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_STRICT = json.JSONEncoder(ensure_ascii=False)


class BadLine(ValueError):
    """A line that is not a JSON object of a known shape (message says why)."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")  # noqa: EM102


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: orjson refuses it, so must we
        raise ValueError(f"number {text} is out of range (infinity as a double)")  # noqa: EM102
    return value


def maybe_big_int(line: bytes) -> bool:
    """Whether ``line`` may hold an integer beyond 64 bits (a cheap scan first)."""
    return _DIGITS.search(line) is not None and LONG_DIGITS.search(line) is not None


def stdlib_loads(line: bytes) -> Any:
    """Parse ``line`` with the stdlib ``json``, refusing what orjson refuses too.

    orjson reads integers beyond 64 bits as floats, so lines that may hold one are parsed
    here instead (integers stay exact). Everything else must be judged as orjson judges
    it, so a line is a bad record whichever parser reads it: ``NaN``/``Infinity``, numbers
    beyond the double range (``1e400``) and lone UTF-16 surrogate escapes (``"\\ud83d"``,
    which no UTF-8 text can hold) raise :class:`ValueError`, as does nesting too deep.
    The one difference: "too deep" is about 1000 levels here (Python's recursion limit)
    and 1024 for orjson, so a line nested 1000-1024 levels that also holds a 19+-digit
    integer is a bad record where the same line without it is read.
    """
    try:
        record = json.loads(
            line.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
        )
        if _SURROGATE_ESCAPE.search(line):  # maybe a lone surrogate: strict re-encoding
            _STRICT.encode(record).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("lone surrogate escape in a string (not valid Unicode)") from exc  # noqa: EM101
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc  # noqa: EM101
    return record


def parse_line(line: bytes) -> dict[str, Any]:
    """Parse one JSONL line into a dict; raise :class:`BadLine` when it is not an object.

    orjson reads integers beyond 64 bits as floats; a line with a long run of digits is
    therefore parsed with the stdlib instead (:func:`stdlib_loads`), so such integers stay
    exact.
    """
    try:
        record = stdlib_loads(line) if maybe_big_int(line) else orjson.loads(line)
    except ValueError as exc:  # orjson.JSONDecodeError, json.JSONDecodeError, UnicodeError
        raise BadLine(f"invalid JSON: {exc}") from exc  # noqa: EM102
    return check_record(record)


def check_record(record: Any) -> dict[str, Any]:
    """Return ``record`` if it is a dict; raise :class:`BadLine` otherwise."""
    if type(record) is not dict:
        raise BadLine(f"line is valid JSON but a {type(record).__name__}, not an object")  # noqa: EM102
    return record


def _value(item: dict[str, Any]) -> tuple[str | None, str | None]:
    value = item.get("value", _ABSENT)
    kind = type(value)
    if kind is str:
        return value, "string"
    if value is None or value is _ABSENT:
        return None, "null"
    if kind is bool:
        return ("true" if value else "false"), "boolean"
    if kind is int:
        return int.__repr__(value), "number"
    if kind is float:
        return float.__repr__(value), "number"
    return dumps(value), ("object" if kind is dict else "array")


def _extra(obj: dict[str, Any], known: frozenset[str]) -> dict[str, Any] | None:
    if known.issuperset(obj):
        return None
    return {k: v for k, v in obj.items() if k not in known}


def task_key(row: tuple[Any, ...]) -> bytes:
    """The 128-bit digest of a ``tasks`` row's exact content (its de-duplication key).

    A digest, not the text: thousands of long-lived texts scattered through the parse's
    short-lived objects kept ~45 MB of the allocator's arenas in use.
    """
    try:
        text = orjson.dumps(row)
    except TypeError:  # an integer beyond 64 bits
        text = b"\0" + dumps(row).encode("utf-8")
    return hashlib.blake2b(text, digest_size=16).digest()


class TaskDigests:
    """The set of :func:`task_key` digests seen in an export, 16 bytes an entry.

    A Python set of 16-byte ``bytes`` costs about 100 bytes an entry: some 140 MB over a
    10 GB export (about 1.4 million distinct task rows). Here the digests live in a few
    sorted levels, each two NumPy ``uint64`` arrays (the digest's halves, sorted by the
    first: exactly 16 bytes an entry); only the latest, fewer than
    :data:`RECENT`, are in a Python set. :meth:`settle` (called between records and
    blocks, never inside one, so :meth:`forget` only touches the recent set) turns a full
    recent set into a level and merges levels of similar size, like a binary counter: at
    most ``log2(n / RECENT) + 1`` levels, each digest copied O(log n) times. Memory is
    thus proportional to the export's distinct task rows (the ``tasks`` table's own row
    count) at 16 bytes each, plus a set of bounded size.
    """

    #: The recent set is turned into a sorted level when it reaches this size.
    RECENT = 4096

    def __init__(self) -> None:
        self.levels: list[tuple[np.ndarray, np.ndarray]] = []  # (first, second), largest first
        self.recent: set[bytes] = set()

    def __len__(self) -> int:
        return sum(len(first) for first, _ in self.levels) + len(self.recent)

    @property
    def nbytes(self) -> int:
        """Bytes held by the sorted levels (16 per digest)."""
        return sum(first.nbytes + second.nbytes for first, second in self.levels)

    def __contains__(self, key: bytes) -> bool:
        return key in self.recent or bool(self._in_levels([key])[0])

    def _in_levels(self, keys: list[bytes]) -> list[bool]:
        halves = np.frombuffer(b"".join(keys), dtype=np.uint64).reshape(-1, 2)
        order = np.argsort(halves[:, 0])  # sorted needles: searchsorted reads memory in order
        want_first, want_second = halves[order, 0], halves[order, 1]
        found = np.zeros(len(keys), dtype=bool)
        for first, second in self.levels:
            left = np.searchsorted(first, want_first, side="left")
            right = np.searchsorted(first, want_first, side="right")
            hit = (right > left) & (second[np.minimum(left, len(first) - 1)] == want_second)
            found |= hit
            # first halves shared by several digests (about never): look at each of them
            for i in np.flatnonzero(~hit & (right - left > 1)).tolist():
                found[i] |= bool((second[left[i] : right[i]] == want_second[i]).any())
        in_order = np.empty_like(found)
        in_order[order] = found
        return in_order.tolist()

    def add(self, key: bytes) -> None:
        """Mark ``key`` seen (:meth:`settle` later keeps the recent set bounded)."""
        self.recent.add(key)

    def forget(self, keys: list[bytes]) -> None:
        """Unmark keys added since the last :meth:`settle` (a record that was refused)."""
        self.recent.difference_update(keys)

    def claim(self, keys: list[bytes]) -> list[bool]:
        """For each key, whether it is new (and mark it seen), in order; then settle."""
        old = self._in_levels(keys) if self.levels else [False] * len(keys)
        recent = self.recent
        keep = []
        for key, seen in zip(keys, old, strict=True):
            new = not seen and key not in recent
            if new:
                recent.add(key)
            keep.append(new)
        self.settle()
        return keep

    def settle(self) -> None:
        """Turn a full recent set into a sorted level, merging levels of similar size."""
        if len(self.recent) < self.RECENT:
            return
        halves = np.frombuffer(b"".join(self.recent), dtype=np.uint64).reshape(-1, 2)
        self.recent = set()
        order = np.argsort(halves[:, 0], kind="stable")
        first, second = halves[order, 0], halves[order, 1]
        while self.levels and len(self.levels[-1][0]) <= 2 * len(first):
            first, second = _merge(*self.levels.pop(), first, second)
        self.levels.append((first, second))


def _merge(
    a_first: np.ndarray, a_second: np.ndarray, b_first: np.ndarray, b_second: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Two levels sorted by first half as one (O(n): no sort)."""
    at = np.searchsorted(a_first, b_first) + np.arange(len(b_first))
    from_b = np.zeros(len(a_first) + len(b_first), dtype=bool)
    from_b[at] = True
    first = np.empty(len(from_b), dtype=np.uint64)
    second = np.empty(len(from_b), dtype=np.uint64)
    first[at], second[at] = b_first, b_second
    first[~from_b], second[~from_b] = a_first, a_second
    return first, second


def _hashable(value: Any) -> Any:
    """``value`` if it is a string or null, else a hashable stand-in for it.

    Ids are grouped and deduplicated by value; an id of the wrong JSON type (a list, an
    object, a number) is grouped by its JSON type and text, so ``1``, ``1.0`` and ``true``
    stay apart and a list or object never raises ``TypeError: unhashable type``.
    """
    if value is None or type(value) is str:
        return value
    return (type(value).__name__, dumps(value))


_NO_TASK_CONTENT = (None, None, None, None)


def _no_task(row: tuple[Any, ...]) -> bool:
    """Whether a task row has neither a ``task_id`` nor content (its owner is the line's)."""
    return row[0] is None and row[2:] == _NO_TASK_CONTENT


def _as_list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if type(value) is not list:
        raise BadLine(f"{what} is a {type(value).__name__}, not a list")  # noqa: EM102
    return value


def answer_items(answer: Any) -> tuple[list[Any], int]:
    """Return ``answer`` as a list of answer objects, and how many items were coerced.

    The documented shape is a list of objects. Anything else is kept rather than
    rejected (``video_narration`` answers are undocumented): ``null`` or absent is no
    item; a single object is a one-item list; a bare scalar (or any non-object list
    item, arrays included) becomes an item ``{"value": <it>}``, so the usual ``value``
    / ``value_type`` semantics apply. Each such object or scalar counts as coerced.
    """
    if answer is None:
        return [], 0
    kind = type(answer)
    if kind is list:
        odd = sum(type(item) is not dict for item in answer)
        if not odd:
            return answer, 0
        return [item if type(item) is dict else {"value": item} for item in answer], odd
    if kind is dict:
        return [answer], 1
    return [{"value": answer}], 1


def _as_dict(value: Any, what: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise BadLine(f"{what} is a {type(value).__name__}, not an object")  # noqa: EM102
    return value
