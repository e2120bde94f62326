"""Arrow tables -> pandas DataFrames with ``pd.ArrowDtype`` columns and expanded JSON objects.

The expansion of a JSON-text column works on its *distinct* texts only (parsed with
orjson, the stdlib where orjson would differ) and spreads the per-key columns back to
every row with one Arrow ``take``. The result is exactly that of the row-by-row
definition: for every row, ``json.loads`` the text, flatten a JSON object (nested
non-empty objects joined with dots), one column per key in order of first appearance,
``pa.array`` of the key's values, or their JSON text when the values mix types.
"""

from __future__ import annotations

import json
from itertools import chain
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ._arrow import dumps
from ._collector import no_collections

__all__ = ["EXPANDED", "to_pandas"]

#: JSON-object columns expanded per table: column -> prefix of the new columns.
EXPANDED: dict[str, dict[str, str]] = {
    "submissions": {"extra": ""},
    "tasks": {"datapoint": "datapoint.", "metadata": "metadata.", "extra": ""},
}

#: A number token of 19+ digits: orjson would read an integer beyond 64 bits as a float.
_LONG_DIGITS = r"[:,\[]\s*-?[0-9]{19}"


def _flatten(obj: dict[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            _flatten(value, name + ".", out)
        else:
            out[name] = value


def _loads(text: str, long_digits: bool) -> Any:
    """``json.loads(text)``, with orjson wherever it gives the same objects."""
    if not long_digits:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:  # NaN, Infinity, 1e400 ...: the stdlib decides
            pass
    return json.loads(text)


def _flat(text: str, long_digits: bool) -> dict[str, Any]:
    """The flattened keys of one JSON text (``{}`` unless it is an object)."""
    obj = _loads(text, long_digits)
    if type(obj) is not dict:
        return {}
    if dict not in set(map(type, obj.values())):
        return obj  # already flat: the common case
    out: dict[str, Any] = {}
    _flatten(obj, "", out)
    return out


def _column(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        # Mixed JSON types under one key: keep each value as JSON text.
        return pa.array([None if v is None else dumps(v) for v in values], type=pa.string())


def _expand(table: pa.Table, column: str, prefix: str) -> dict[str, pa.Array]:
    """One column per (flattened) key of the JSON objects in ``table[column]``."""
    texts = table.column(column)
    if texts.null_count == len(texts):
        return {}
    encoded = pc.dictionary_encode(texts.combine_chunks())
    distinct = encoded.dictionary
    long_digits = pc.match_substring_regex(distinct, _LONG_DIGITS).to_pylist()
    flats = list(map(_flat, distinct.to_pylist(), long_digits))
    keys = dict.fromkeys(chain.from_iterable(flats))
    # Inference over the distinct values gives the type the full column would have:
    # every value (and a null for absent keys) occurs in both.
    return {
        prefix + key: _column([f.get(key) for f in flats]).take(encoded.indices) for key in keys
    }


def to_pandas(name: str, table: pa.Table) -> pd.DataFrame:
    """Return ``table`` as a DataFrame (ArrowDtype), JSON-object columns expanded.

    The original JSON-text columns are kept; each expanded key becomes one more column
    (nested keys joined with dots). A key that would clash with an existing column is
    prefixed with ``"<column>."``.

    Parameters
    ----------
    name : str
        The table's name (selects the columns to expand, see :data:`EXPANDED`).
    table : pyarrow.Table
        The table, with its fixed schema.

    Returns
    -------
    pandas.DataFrame
    """
    with no_collections():  # many short-lived containers: collections would dominate
        for column, prefix in EXPANDED.get(name, {}).items():
            for key, array in _expand(table, column, prefix).items():
                label = key if key not in table.column_names else f"{column}.{key}"
                if label in table.column_names:
                    continue
                table = table.append_column(label, array)
    frame: pd.DataFrame = table.to_pandas(types_mapper=pd.ArrowDtype)
    return frame
