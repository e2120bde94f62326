"""Compare loaded tables with the generator's ground truth, exactly."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

JSON_COLUMNS = {"extra", "datapoint", "metadata", "options"}
SORT_KEYS = {
    "submissions": ("submission_id",),
    "tasks": ("task_id",),
    "responses": ("response_id",),
    "answers": ("response_id", "answer_index"),
    "files": ("path",),
    "instructions": ("instruction_id",),
}


def _instant(value: Any) -> Any:
    if isinstance(value, str):
        return datetime.fromisoformat(value).astimezone(UTC)
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return value


def _normalise(row: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    out = {}
    for key in keys:
        value = row.get(key)
        if key in JSON_COLUMNS and isinstance(value, str):
            value = json.loads(value)
        if key == "created_at":
            value = _instant(value)
        out[key] = value
    return out


def _sort_key(row: dict[str, Any], keys: tuple[str, ...]) -> tuple[str, ...]:
    return tuple("" if row.get(k) is None else str(row.get(k)) for k in keys)


def table_rows(table: pa.Table, truth_rows: list[dict[str, Any]], name: str) -> tuple[list, list]:
    """Return (actual, expected) rows restricted to the truth's columns, both sorted."""
    keys = sorted({k for r in truth_rows for k in r}) or [f.name for f in table.schema]
    sort = SORT_KEYS[name]
    actual = sorted(
        (_normalise(r, keys) for r in table.to_pylist()), key=lambda r: _sort_key(r, sort)
    )
    expected = sorted((_normalise(r, keys) for r in truth_rows), key=lambda r: _sort_key(r, sort))
    return actual, expected


def assert_matches_truth(tables: dict[str, pa.Table], truth: Any) -> None:
    """Every table the truth describes matches row for row and value for value."""
    for name in SORT_KEYS:
        if name == "tasks" and truth.kind != "batch":
            assert "tasks" not in tables
            continue
        rows = getattr(truth, name)
        assert tables[name].num_rows == truth.counts[name], name
        actual, expected = table_rows(tables[name], rows, name)
        if actual != expected:
            for a, e in zip(actual, expected, strict=False):
                assert a == e, f"{name}: first differing row"
        assert actual == expected, name
