"""Arrow tables -> pandas DataFrames with ``pd.ArrowDtype`` columns and expanded JSON objects."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pyarrow as pa

from ._tables_arrow import dumps

__all__ = ["EXPANDED", "to_pandas"]

#: JSON-object columns expanded per table: column -> prefix of the new columns.
EXPANDED: dict[str, dict[str, str]] = {
    "submissions": {"extra": ""},
    "tasks": {"datapoint": "datapoint.", "metadata": "metadata.", "extra": ""},
}


def _flatten(obj: dict[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            _flatten(value, name + ".", out)
        else:
            out[name] = value


def _column(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        # Mixed JSON types under one key: keep each value as JSON text.
        return pa.array([None if v is None else dumps(v) for v in values], type=pa.string())


def _expand(table: pa.Table, column: str, prefix: str) -> dict[str, pa.Array]:
    rows: list[dict[str, Any]] = []
    for text in table.column(column).to_pylist():
        flat: dict[str, Any] = {}
        if text is not None:
            obj = json.loads(text)
            if isinstance(obj, dict):
                _flatten(obj, prefix, flat)
        rows.append(flat)
    keys: dict[str, None] = {}
    for flat in rows:
        keys.update(dict.fromkeys(flat))
    return {key: _column([flat.get(key) for flat in rows]) for key in keys}


def to_pandas(name: str, table: pa.Table) -> pd.DataFrame:
    """Return ``table`` as a DataFrame (ArrowDtype), JSON-object columns expanded.

    The original JSON-text columns are kept; each expanded key becomes one more column
    (nested keys joined with dots). A key that would clash with an existing column is
    prefixed with ``"<column>."``.
    """
    for column, prefix in EXPANDED.get(name, {}).items():
        for key, array in _expand(table, column, prefix).items():
            label = key if key not in table.column_names else f"{column}.{key}"
            if label in table.column_names:
                continue
            table = table.append_column(label, array)
    frame: pd.DataFrame = table.to_pandas(types_mapper=pd.ArrowDtype)
    return frame
