"""Parse an export's metadata member (``batch.json`` / ``collection.json``), hostile or not.

Every failure is a :class:`~prolific_ingest.errors.BadRecordError` naming the member:
bytes that are not UTF-8, text that is not JSON, a value that is not an object, and a
value nested deeper than :data:`MAX_METADATA_DEPTH` (a nesting that deep is no Prolific
metadata, and deeper ones would exhaust the recursion of every JSON encoder and decoder
that later meets the value; 100,000 levels make the stdlib decoder itself raise
``RecursionError``, reported the same way).

Lone surrogates: JSON text may spell a UTF-16 surrogate on its own (``"\\udc80"``), which
no UTF-8 text can hold. The stdlib decoder keeps it, exactly, as that code point, and so
does the metadata: nothing is replaced or dropped. Code that encodes metadata must use an
encoder that cannot fail on it: ``json.dumps`` with ``ensure_ascii=True`` (the default)
writes it back as the same ``\\udc80`` escape, so the value round-trips losslessly (the
parsed-table cache stores metadata that way). :func:`has_lone_surrogate` tells such text.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import BadRecordError

__all__ = ["MAX_METADATA_DEPTH", "has_lone_surrogate", "parse_metadata"]

#: Deepest nesting of objects and arrays accepted in a metadata member.
MAX_METADATA_DEPTH = 100

_SURROGATE = re.compile("[\ud800-\udfff]")


def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a surrogate code point (it cannot be encoded as UTF-8)."""
    return _SURROGATE.search(text) is not None


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests objects/arrays deeper than ``limit`` (iterative, no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def parse_metadata(raw: bytes, *, member: str, source: str) -> dict[str, Any]:
    """Decode a metadata member (UTF-8, optional BOM) into a dict.

    Raises
    ------
    BadRecordError
        Not UTF-8, not JSON, not an object, or nested deeper than
        :data:`MAX_METADATA_DEPTH`; the message and ``member`` name the member.
    """
    where = f"{member} in {source}"
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"{where} is not valid JSON: {exc}"
        raise BadRecordError(msg, source=source, member=member) from exc
    except RecursionError as exc:
        msg = f"{where} nests JSON deeper than can be parsed (limit {MAX_METADATA_DEPTH} levels)"
        raise BadRecordError(msg, source=source, member=member) from exc
    if not isinstance(data, dict):
        msg = f"{where} is not a JSON object"
        raise BadRecordError(msg, source=source, member=member)
    if _depth_exceeds(data, MAX_METADATA_DEPTH):
        msg = f"{where} nests JSON more than {MAX_METADATA_DEPTH} levels deep"
        raise BadRecordError(msg, source=source, member=member)
    return data
