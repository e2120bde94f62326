"""Column helpers of the block fast path (:mod:`._fast`): answer coercion, ``extra`` and
``value`` columns, list offsets, and :class:`Fallback`, the signal to re-read a block line
by line.
"""

from __future__ import annotations

from itertools import chain, compress, count, repeat
from operator import not_
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._arrow import dumps, extra_column, json_column
from ._records import _extra, answer_items

_S = pa.string()


class Fallback(Exception):
    """The block needs the per-line builder; ``records`` are the parsed lines, if parsed."""

    def __init__(self, records: list[Any] | None = None) -> None:
        super().__init__()
        self.records = records


def _restore(undo: list[tuple[dict[str, Any], Any]]) -> None:
    """Put back the original ``answer`` values that :func:`_coerce_answers` replaced."""
    for response, answer in undo:
        response["answer"] = answer


def _coerce_answers(
    resps: list[dict[str, Any]], undo: list[tuple[dict[str, Any], Any]]
) -> tuple[int, list[Any] | None]:
    """Make every ``answer`` a list of objects in place (see ``answer_items``).

    Returns the number of coerced items and, when there were none, the answer objects
    of every response in order (``_children(resps, "answer")``, computed on the way);
    the replaced values are appended to ``undo``.
    """
    answers = list(map(dict.get, resps, repeat("answer")))
    kinds = set(map(type, answers))
    if kinds <= {list, type(None)}:
        items = list(chain.from_iterable(filter(None, answers)))
        if set(map(type, items)) <= {dict}:
            return 0, items  # the documented shape: nothing to do
    coerced = 0
    for response, answer in zip(resps, answers, strict=True):
        fixed, n = answer_items(answer)
        if n:
            undo.append((response, answer))
            response["answer"] = fixed
            coerced += n
    return coerced, None


def _grouped(r: Any) -> bool:
    if type(r) is not dict or "response" in r:
        return False
    return "tasks" in r or "submission_id" in r or "task_id" not in r


def _extras(items: list[dict[str, Any]], known: frozenset[str]) -> list[dict[str, Any] | None]:
    """``_extra(item, known)`` for every item, visiting only the items with unknown keys."""
    extras: list[dict[str, Any] | None] = [None] * len(items)
    for i in compress(count(), map(not_, map(known.issuperset, items))):
        extras[i] = _extra(items[i], known)
    return extras


def _extra_column(items: list[dict[str, Any]], known: frozenset[str]) -> pa.Array:
    """The ``extra`` column of ``items``: grouped by shape, else one dict per item."""
    grouped = extra_column(items, known)
    return json_column(_extras(items, known)) if grouped is None else grouped[0]


def _children(parents: list[dict[str, Any]], key: str) -> list[Any]:
    """The concatenated ``parent[key]`` lists.

    A string there is refused (Arrow would read it as a list of characters); any other
    non-list raises ``TypeError`` here or in the next ``dict.get``, or is refused by the
    Arrow conversion of the whole block, which checks every known key's JSON type.
    """
    lists = list(map(dict.get, parents, repeat(key)))
    if str in set(map(type, lists)):
        raise Fallback
    return list(chain.from_iterable(filter(None, lists)))


#: ``value_type`` names, and the code of each Python type of a parsed JSON value in them.
_KIND_NAMES = pa.StringArray.from_buffers(  # not pa.array: it would import pandas here
    6,
    pa.py_buffer(np.array([0, 6, 10, 17, 23, 29, 34], dtype=np.int32)),
    pa.py_buffer(b"stringnullbooleannumberobjectarray"),
)
_KIND_CODE = {str: 0, type(None): 1, bool: 2, int: 3, float: 3, dict: 4, list: 5}
#: The text of a scalar that is not a string (``None`` stays ``None``).
_SCALAR_TEXT: dict[type, Any] = {
    bool: {True: "true", False: "false"}.__getitem__,
    int: int.__repr__,
    float: float.__repr__,
}


def _value_columns(answers: list[dict[str, Any]]) -> tuple[pa.Array, pa.Array]:
    """``value`` as JSON text (strings verbatim) and ``value_type``, as in ``_value``.

    ``value_type`` is taken from a six-name array by type code (no string per answer);
    only booleans, numbers, objects and arrays are visited one by one (absent and null
    values are both ``None`` here, a null ``value`` of type ``"null"``).
    """
    n = len(answers)
    values = list(map(dict.get, answers, repeat("value", n)))
    types = list(map(type, values))
    # KeyError: not a JSON type
    codes = np.fromiter(map(_KIND_CODE.__getitem__, types), dtype=np.int8, count=n)
    text = _SCALAR_TEXT
    for i in compress(count(), map(text.__contains__, types)):
        values[i] = text[types[i]](values[i])
    nested = np.flatnonzero(codes >= 4)
    for i in nested.tolist():
        values[i] = dumps(values[i])
    return pa.array(values, type=_S), _KIND_NAMES.take(pa.array(codes))


def _check_sizes(sizes: pa.Array, answers: list[dict[str, Any]]) -> None:
    """Arrow reads ``true``/``false`` as 1.0/0.0 in a float column: refuse real booleans."""
    suspect = pc.fill_null(pc.is_in(sizes, value_set=pa.array([0.0, 1.0])), False)
    maybe = pc.indices_nonzero(suspect)
    for i in maybe.to_pylist():
        if type(answers[i].get("file_size_mb")) is bool:
            raise Fallback


def _offsets(lists: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    """Return (parent index of every child, number of children per parent)."""
    offsets = lists.offsets.to_numpy()
    counts = np.diff(offsets).astype(np.int64)
    parents = np.repeat(np.arange(len(lists), dtype=np.int64), counts)
    return parents, counts
