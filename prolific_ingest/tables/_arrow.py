"""Shared column finishing: JSON text, timestamps, typed columns, uploaded-file paths.

Both record builders (the orjson one and the Arrow fast path) go through these
functions, so the two produce exactly the same table content.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import chain, compress, count, repeat
from operator import is_not, itemgetter, not_
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ._strings import spread, string_array

__all__ = [
    "TIMESTAMP",
    "dumps",
    "extra_column",
    "file_paths",
    "json_column",
    "parse_timestamp",
    "timestamps",
    "typed_column",
]

TIMESTAMP = pa.timestamp("us", tz="UTC")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Strings of this exact shape convert identically in Arrow and in datetime.fromisoformat.
_STRICT_ISO = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$"
_FLOAT_FORMS = re.compile(rb"[0-9][eE]|0\.0000")
#: Digits -> "0" and "E" -> "e": ``_FLOAT_FORMS`` can only match where ``0e``/``0.0000`` occur.
_DIGIT_TO_ZERO = bytes.maketrans(b"0123456789E", b"0000000000e")
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=True)


def _encode(obj: Any) -> str:
    """``_ENCODER.encode(obj)``, also for values nested deeper than the recursion limit.

    orjson reads objects nested up to 1024 levels but writes at most 255, and the stdlib
    encoder stops at Python's recursion limit (1000 by default). Such a value is written
    by :func:`_encode_deep` instead, which needs no recursion (and so changes no
    interpreter-wide setting, which other threads would see).
    """
    try:
        text = _ENCODER.encode(obj)
    except RecursionError:
        text = _encode_deep(obj)
    return _escape_surrogates(text)


#: A surrogate code point: Python strings from JSON may hold one alone (``"\\udc80"``).
_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape_surrogates(text: str) -> str:
    """``text`` with every lone surrogate written as its ``\\uXXXX`` escape.

    The stdlib encoder (``ensure_ascii=False``) writes such a code point as is, and no
    UTF-8 text (so no Arrow string) can hold it. In JSON text it can only stand inside a
    string, where the escape means exactly that code point: ``json.loads`` of the result
    gives the original value back, so nothing is lost.
    """
    if _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _encode_deep(obj: Any) -> str:
    """The stdlib encoder's compact output, written with an explicit stack."""
    out: list[str] = []
    stack: list[Any] = [obj]
    while stack:
        item = stack.pop()
        if type(item) is _Token:
            out.append(item.text)
        elif isinstance(item, dict):
            if not item:
                out.append("{}")
                continue
            out.append("{")
            parts: list[Any] = []
            for i, (key, value) in enumerate(item.items()):
                prefix = "," if i else ""
                parts += [_Token(prefix + _ENCODER.encode(_key(key)) + ":"), value]
            stack.append(_Token("}"))
            stack.extend(reversed(parts))
        elif isinstance(item, list | tuple):
            if not item:
                out.append("[]")
                continue
            out.append("[")
            parts = []
            for i, value in enumerate(item):
                parts += [_Token(","), value] if i else [value]
            stack.append(_Token("]"))
            stack.extend(reversed(parts))
        else:
            out.append(_ENCODER.encode(item))  # a scalar: never deep
    return "".join(out)


class _Token:
    """Literal text on the :func:`_encode_deep` stack (not a value to encode)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _key(key: Any) -> str:
    """A dict key as the stdlib encoder writes it (strings; numbers, booleans, None)."""
    if isinstance(key, str):
        return key
    if key is True or key is False or key is None:
        return json.dumps(key)
    return _ENCODER.encode(key) if isinstance(key, float) else str(key)


def dumps(obj: Any) -> str:
    """Return compact JSON text (``json.dumps(ensure_ascii=False, separators=(",", ":"))``).

    orjson writes the same text except for some floats (``1e-05`` vs ``0.00001``, exponent
    forms) and integers beyond 64 bits; whenever its output could hold such a float, or it
    refuses the object, the stdlib encoder is used instead. A lone surrogate (which orjson
    refuses) is written as its ``\\uXXXX`` escape, so the text is always valid UTF-8.
    """
    try:
        text = orjson.dumps(obj)
    except TypeError:  # orjson.JSONEncodeError: integer beyond 64 bits, deep nesting ...
        return _encode(obj)
    if _FLOAT_FORMS.search(text):
        return _encode(obj)
    return text.decode()


def json_column(values: Sequence[Any]) -> pa.Array:
    """Return a string column holding ``dumps(v)`` for every non-``None`` value.

    The values are encoded by **one** ``orjson.dumps`` call (:func:`_joined`), and the
    float-form check of :func:`dumps` runs once over the whole text; only when it could
    match (or orjson refuses a value) is every value encoded, checked and re-encoded on
    its own, exactly as :func:`dumps` does.
    """
    n = len(values)
    present = list(compress(count(), map(is_not, values, repeat(None, n))))
    if not present:
        return pa.nulls(n, type=pa.string())
    items = values if len(present) == n else list(map(values.__getitem__, present))
    column = _joined(items)
    if column is None:
        column = pa.array(_one_by_one(items), type=pa.string())
    if len(present) == n:
        return column
    at = np.full(n, -1, dtype=np.int64)
    at[present] = np.arange(len(present), dtype=np.int64)
    return column.take(pa.array(at, mask=at < 0))


#: Written between the values by :func:`_joined`: orjson never writes a raw newline
#: itself (a newline in a string is escaped), so ``,\n,`` can only be this separator.
_SEPARATOR = orjson.Fragment(b"\n")


def _joined(items: Sequence[Any]) -> pa.Array | None:
    """The values' compact JSON text as one string array, or ``None`` to go value by value.

    One ``orjson.dumps`` of ``[v0, SEP, v1, SEP, ...]`` (one call instead of one per
    value: about 7x less CPU), then the separators are cut out of the text and the value
    offsets computed with numpy; the array is made over that buffer without copying.
    ``None`` when orjson refuses a value (an integer beyond 64 bits, deep nesting) or
    the text could hold a float orjson writes differently from the stdlib.
    """
    try:
        blob = orjson.dumps(list(chain.from_iterable(zip(items, repeat(_SEPARATOR)))))
    except TypeError:  # orjson.JSONEncodeError
        return None
    if b"0.0000" in blob or b"0e" in blob.translate(_DIGIT_TO_ZERO):
        return None
    # blob: "[" t0 ",\n," t1 ",\n," ... t(m-1) ",\n]"
    ends = np.flatnonzero(np.frombuffer(blob, dtype=np.uint8) == 0x0A)
    if len(ends) != len(items):  # cannot happen (see _SEPARATOR); never guess
        return None
    lengths = ends - 1 - np.concatenate(([1], ends[:-1] + 2))
    offsets = np.zeros(len(ends) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    data = blob.replace(b",\n,", b"")[1:-3]
    return pa.StringArray.from_buffers(
        len(ends), pa.py_buffer(offsets), pa.py_buffer(data), null_count=0
    )


def extra_column(
    items: Sequence[dict[str, Any]], known: frozenset[str]
) -> tuple[pa.Array, set[str]] | None:
    """``json_column`` of every item's unknown keys (``None`` where it has none), built
    without a dict per item, and the set of those keys; ``None`` to ask the caller for
    the dict way.

    The items with unknown keys are grouped by key tuple (their few distinct shapes).
    For each shape, the unknown keys' values are picked with C-level ``itemgetter``
    maps, and all of them go through **one** ``orjson.dumps``, spliced between
    :class:`orjson.Fragment` pieces that write the object's punctuation and keys
    (``{"k1":`` / ``"k2":`` / ``}``). The fragments carry control bytes that orjson never
    writes itself (it escapes them in strings), which mark the commas to cut and the end
    of each object. The text is exactly ``dumps`` of the dict: keys in their order, the
    same key and value encoding; when the float-form check of :func:`dumps` could match,
    or orjson refuses a value, ``None`` sends the column back to the dict way.
    """
    n = len(items)
    at = list(compress(count(), map(not_, map(known.issuperset, items))))
    if not at:
        return pa.nulls(n, type=pa.string()), set()
    objs = list(map(items.__getitem__, at))
    shapes = list(map(tuple, objs))
    code_of: dict[tuple[str, ...], int] = dict.fromkeys(shapes, 0)
    if len(code_of) > max(16, len(at) // 16):
        return None  # (nearly) every item its own shape: no gain in grouping
    order = None
    if len(code_of) == 1:
        groups = [(shapes[0], objs)]
    else:
        for code, shape in enumerate(code_of):
            code_of[shape] = code
        codes = np.fromiter(map(code_of.__getitem__, shapes), dtype=np.int64, count=len(at))
        order = np.argsort(codes, kind="stable")
        bounds = np.concatenate(([0], np.cumsum(np.bincount(codes, minlength=len(code_of)))))
        groups = [
            (shape, list(map(objs.__getitem__, order[bounds[code] : bounds[code + 1]].tolist())))
            for shape, code in code_of.items()
        ]
    parts: list[Any] = []
    unknown: set[str] = set()
    for shape, group in groups:
        keys = [k for k in shape if k not in known]
        unknown.update(keys)
        pieces: list[Any] = []
        for j, key in enumerate(keys):
            head = (b"{" if j == 0 else b"") + orjson.dumps(key) + b":\x02"
            pieces += [repeat(orjson.Fragment(head)), map(itemgetter(key), group)]
        pieces.append(repeat(_CLOSE))
        parts.append(chain.from_iterable(zip(*pieces, strict=False)))  # repeat(): endless
    try:
        blob = orjson.dumps(list(chain.from_iterable(parts)))
    except TypeError:  # orjson.JSONEncodeError
        return None
    if b"0.0000" in blob or b"0e" in blob.translate(_DIGIT_TO_ZERO):
        return None
    # '[{"k":\x02,v,"k2":\x02,v2,\x01}\x04\x02,{...' -> '[{"k":v,"k2":v2}\x04{...}\x04\x02]'
    text = blob.replace(b"\x02,", b"").replace(b",\x01", b"")
    ends = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == 0x04)
    if len(ends) != len(at):  # cannot happen (see above); never guess
        return None
    lengths = ends - np.concatenate(([1], ends[:-1] + 1))
    data = text[1:-2].replace(b"\x04", b"")
    if order is not None:  # back from shape order to item order
        grouped = string_array(lengths, data).take(pa.array(np.argsort(order, kind="stable")))
        _, offsets, data = grouped.buffers()
        lengths = np.diff(np.frombuffer(offsets, dtype=np.int32, count=len(at) + 1)).astype(
            np.int64
        )
    return spread(n, np.asarray(at, dtype=np.int64), lengths, data), unknown


_CLOSE = orjson.Fragment(b"\x01}\x04\x02")


def _one_by_one(items: Sequence[Any]) -> list[Any]:
    """:func:`dumps` of every value (as bytes where orjson's text is already right)."""
    texts: list[Any]
    try:
        texts = [orjson.dumps(v) for v in items]
    except TypeError:  # an integer beyond 64 bits somewhere: value by value
        return [dumps(v) for v in items]
    return [
        _encode(v).encode() if _FLOAT_FORMS.search(t) else t
        for v, t in zip(items, texts, strict=True)
    ]


def parse_timestamp(value: Any) -> int | None:
    """Return microseconds since the epoch (UTC) for an ISO-8601 string, else ``None``.

    Uses :meth:`datetime.fromisoformat`; a string without an offset is taken as UTC.
    """
    if type(value) is not str:
        return None
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        delta = moment - _EPOCH
    except (ValueError, OverflowError):
        return None
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def timestamps(values: Sequence[Any] | pa.Array) -> tuple[pa.Array, dict[int, Any]]:
    """Convert ``created_at`` values to ``timestamp[us, UTC]``.

    Returns the column and ``{row: raw value}`` for every non-null value that could not
    be parsed (those rows are null in the column; the caller keeps the raw value in
    ``extra``).
    """
    if isinstance(values, pa.Array):
        strings = values
    else:
        try:
            strings = pa.array(values, type=pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            strings = None
    if strings is not None:
        strict = pc.match_substring_regex(strings, _STRICT_ISO)
        if pc.all(pc.or_kleene(strict, pc.is_null(strings))).as_py() is not False:
            try:
                return pc.cast(strings, TIMESTAMP), {}
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
        values = strings.to_pylist()
    micros: list[int | None] = []
    bad: dict[int, Any] = {}
    for i, value in enumerate(values):
        parsed = parse_timestamp(value)
        micros.append(parsed)
        if parsed is None and value is not None:
            bad[i] = value
    return pa.array(micros, type=pa.int64()).cast(TIMESTAMP), bad


def typed_column(
    values: list[Any], typ: pa.DataType, key: str, extras: list[dict[str, Any] | None]
) -> pa.Array:
    """Return ``values`` as an Arrow column of ``typ``.

    A value of the wrong JSON type (say a number where a string is expected, or a
    boolean for a float) is not coerced: it is moved to that row's ``extras`` under
    ``key`` and the cell becomes null, so no value is lost.
    """
    try:
        if typ == pa.float64() and any(type(v) is bool for v in values):
            raise pa.ArrowTypeError("bool in float column")  # noqa: EM101
        return pa.array(values, type=typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    cleaned: list[Any] = []
    for i, value in enumerate(values):
        if _fits(value, typ):
            cleaned.append(value)
        else:
            cleaned.append(None)
            extras[i] = {**(extras[i] or {}), key: value}
    return pa.array(cleaned, type=typ)


def _fits(value: Any, typ: pa.DataType) -> bool:
    if value is None:
        return True
    if pa.types.is_string(typ):
        return type(value) is str
    if typ == pa.int64():
        return type(value) is int and -(2**63) <= value < 2**63
    if type(value) is int:
        return -(2**53) <= value <= 2**53
    return type(value) is float


def file_paths(
    submission_ids: pa.Array,
    file_keys: pa.Array,
    file_names: pa.Array,
    *,
    prefix: str,
    existing: pa.Array,
) -> pa.Array:
    """Return ``<prefix><submission_id>/<file_key>/<file_name>`` where that member exists."""
    if len(existing) == 0 or len(file_keys) == 0:
        return pa.nulls(len(file_keys), type=pa.string())
    joined = pc.binary_join_element_wise(
        pa.scalar(prefix.rstrip("/"), pa.string()),
        submission_ids,
        file_keys,
        file_names,
        "/",
    )
    return pc.if_else(pc.is_in(joined, value_set=existing), joined, pa.scalar(None, pa.string()))
