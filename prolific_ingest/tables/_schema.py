"""The fixed Arrow schemas of the export tables (docs/internals.md, "Tables")."""

from __future__ import annotations

import pyarrow as pa

__all__ = ["TABLE_NAMES", "owner_column", "schema_for", "table_names"]

TABLE_NAMES = ("submissions", "tasks", "responses", "answers", "files", "instructions", "rejected")

_S = pa.string()
_I = pa.int64()
_TS = pa.timestamp("us", tz="UTC")

_OWNER = "<owner>"

_FIELDS: dict[str, list[tuple[str, pa.DataType]]] = {
    "submissions": [
        ("submission_id", _S),
        ("participant_id", _S),
        ("study_id", _S),
        (_OWNER, _S),
        ("n_responses", _I),
        ("extra", _S),
    ],
    "tasks": [
        ("task_id", _S),
        ("batch_id", _S),
        ("task_group_id", _S),
        ("datapoint", _S),
        ("metadata", _S),
        ("extra", _S),
    ],
    "responses": [
        ("response_id", _S),
        ("created_at", _TS),
        ("submission_id", _S),
        ("participant_id", _S),
        ("study_id", _S),
        ("task_id", _S),
        ("instruction_id", _S),
        ("type", _S),
        ("n_answers", _I),
        ("extra", _S),
    ],
    "answers": [
        ("response_id", _S),
        ("answer_index", _I),
        ("submission_id", _S),
        ("participant_id", _S),
        ("task_id", _S),
        ("instruction_id", _S),
        ("type", _S),
        ("value", _S),
        ("value_type", _S),
        ("unit", _S),
        ("explanation", _S),
        ("file_key", _S),
        ("file_name", _S),
        ("file_size_mb", pa.float64()),
        ("content_type", _S),
        ("file_path", _S),
        ("extra", _S),
    ],
    "files": [
        ("path", _S),
        ("size_bytes", _I),
        ("submission_id", _S),
        ("file_key", _S),
        ("file_name", _S),
    ],
    "instructions": [
        ("instruction_id", _S),
        ("type", _S),
        ("description", _S),
        ("options", _S),
        ("extra", _S),
    ],
    "rejected": [
        ("member", _S),
        ("line_number", _I),
        ("raw", _S),
        ("error", _S),
    ],
}

_KINDS = ("batch", "collection")


def owner_column(kind: str) -> str:
    """Return ``"batch_id"`` or ``"collection_id"``."""
    if kind not in _KINDS:
        msg = f"kind must be 'batch' or 'collection', not {kind!r}"
        raise ValueError(msg)
    return f"{kind}_id"


def table_names(kind: str) -> tuple[str, ...]:
    """Return the tables an export of ``kind`` has (collections have no ``tasks``)."""
    owner_column(kind)
    if kind == "batch":
        return TABLE_NAMES
    return tuple(n for n in TABLE_NAMES if n != "tasks")


def schema_for(table: str, kind: str) -> pa.Schema:
    """Return the fixed Arrow schema of ``table`` for an export of ``kind``.

    Raises
    ------
    KeyError
        ``table`` is not one of :data:`TABLE_NAMES`.
    """
    owner = owner_column(kind)
    fields = _FIELDS[table]
    return pa.schema([(owner if name == _OWNER else name, typ) for name, typ in fields])
