"""Parser edge cases: odd ids, odd JSON, repeated tasks, lossless rejected lines.

Every archive is read twice, with the block fast path and with the per-line builder
only (``tables.FAST_PATH = False``), and the two must give identical tables.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from prolific_ingest import tables as tables_mod
from prolific_ingest.archive import open_archive
from prolific_ingest.errors import BadRecordError
from prolific_ingest.tables import ExportTables, build_tables

BY_SUBMISSION = "responses-by-submission.jsonl"
BY_TASK = "responses-by-task.jsonl"
COLLECTION = "responses.jsonl"


def _line(record: Any) -> bytes:
    return record if isinstance(record, bytes) else json.dumps(record).encode()


def _zip(tmp_path: Path, records: list[Any], member: str, metadata: Any) -> Path:
    path = tmp_path / "export.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, b"\n".join(map(_line, records)) + b"\n")
        if metadata is not None:
            name = "collection.json" if member == COLLECTION else "batch.json"
            zf.writestr(name, json.dumps(metadata))
    return path


def _build(path: Path, kind: str, policy: str, fast: bool, monkeypatch: Any) -> ExportTables:
    monkeypatch.setattr(tables_mod, "FAST_PATH", fast)
    with open_archive(path, kind=kind) as archive:
        return build_tables(archive, on_bad_records=policy)  # type: ignore[arg-type]


def read(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    records: list[Any],
    *,
    member: str = BY_SUBMISSION,
    policy: str = "raise",
    metadata: Any = None,
) -> ExportTables:
    """Build the tables with and without the fast path; assert they are identical."""
    path = _zip(tmp_path, records, member, metadata)
    kind = "collection" if member == COLLECTION else "batch"
    fast = _build(path, kind, policy, True, monkeypatch)
    slow = _build(path, kind, policy, False, monkeypatch)
    assert fast.tables.keys() == slow.tables.keys()
    for name in fast.tables:
        assert fast[name].to_pylist() == slow[name].to_pylist(), name
        assert fast[name].schema == slow[name].schema
    return slow


def read_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    records: list[Any],
    *,
    member: str = BY_SUBMISSION,
) -> list[BadRecordError]:
    """The ``BadRecordError`` of both paths (they must agree on member and line)."""
    path = _zip(tmp_path, records, member, None)
    kind = "collection" if member == COLLECTION else "batch"
    errors = []
    for fast in (True, False):
        with pytest.raises(BadRecordError) as info:
            _build(path, kind, "raise", fast, monkeypatch)
        errors.append(info.value)
    assert {(e.member, e.line) for e in errors} == {(errors[0].member, errors[0].line)}
    return errors


def rows(tables: ExportTables, name: str) -> list[dict[str, Any]]:
    return tables[name].to_pylist()


def extra(row: dict[str, Any]) -> Any:
    return None if row["extra"] is None else json.loads(row["extra"])


def task(task_id: Any = "t1", **keys: Any) -> dict[str, Any]:
    responses = keys.pop("responses", [{"id": "r1", "answer": [{"value": "a"}]}])
    return {"task_id": task_id, **keys, "responses": responses}


def submission(sub: Any = "s1", tasks: list[Any] | None = None, **keys: Any) -> dict[str, Any]:
    record = {"submission_id": sub, "participant_id": "p1", "study_id": "st1", "batch_id": "b1"}
    return {**record, **keys, "tasks": [task()] if tasks is None else tasks}


GOOD = submission("ok")


# -- rejected.raw keeps undecodable bytes recoverable ------------------------------------


def test_rejected_raw_escapes_undecodable_bytes_instead_of_replacing_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = b'{"submission_id": "caf\xe9 \xff\xfe"}'
    tables = read(tmp_path, monkeypatch, [GOOD, bad, GOOD], policy="quarantine")
    [rejected] = rows(tables, "rejected")
    assert rejected["line_number"] == 2
    assert rejected["raw"] == '{"submission_id": "caf\\xe9 \\xff\\xfe"}'
    assert rejected["raw"].encode("ascii").decode("unicode_escape").encode("latin-1") == bad


# -- instructions: wrong-typed known keys are not coerced --------------------------------


def test_wrong_typed_instruction_keys_are_null_and_kept_in_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    metadata = {
        "id": "b1",
        "instructions": [
            {"id": 5, "type": "free_text", "description": "Say", "answer_limit": 1},
            {"id": "i2", "type": ["multiple_choice"], "description": {"en": "Pick"}},
            {"id": "i3", "type": "free_text", "description": None, "options": "odd"},
            "not an object",
        ],
    }
    tables = read(tmp_path, monkeypatch, [GOOD], metadata=metadata)
    assert rows(tables, "instructions") == [
        {
            "instruction_id": None,
            "type": "free_text",
            "description": "Say",
            "options": None,
            "extra": '{"answer_limit":1,"id":5}',
        },
        {
            "instruction_id": "i2",
            "type": None,
            "description": None,
            "options": None,
            "extra": '{"type":["multiple_choice"],"description":{"en":"Pick"}}',
        },
        {
            "instruction_id": "i3",
            "type": "free_text",
            "description": None,
            "options": '"odd"',
            "extra": None,
        },
        {
            "instruction_id": None,
            "type": None,
            "description": None,
            "options": None,
            "extra": '{"instruction":"not an object"}',
        },
    ]


# -- a null id on a response inherits its submission's -----------------------------------


def test_a_null_id_on_a_response_inherits_the_submissions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nulls = {"submission_id": None, "participant_id": None, "study_id": None}
    responses = [
        {"id": "r1", **nulls, "answer": [{"value": "a"}]},
        {"id": "r2", "submission_id": "other", "participant_id": None, "answer": []},
        {"id": "r3", "study_id": None, "answer": []},
    ]
    tables = read(tmp_path, monkeypatch, [submission(tasks=[task(responses=responses)])])
    ids = [
        (r["submission_id"], r["participant_id"], r["study_id"]) for r in rows(tables, "responses")
    ]
    assert ids == [("s1", "p1", "st1"), ("other", "p1", "st1"), ("s1", "p1", "st1")]
    assert [r["extra"] for r in rows(tables, "responses")] == [None, None, None]
    [answer] = rows(tables, "answers")
    assert (answer["submission_id"], answer["participant_id"]) == ("s1", "p1")
    collection = {
        "submission_id": "s1",
        "participant_id": "p1",
        "study_id": "st1",
        "collection_id": "c1",
        "responses": [{"id": "r1", **nulls, "answer": []}],
    }
    tables = read(tmp_path, monkeypatch, [collection], member=COLLECTION)
    [response] = rows(tables, "responses")
    assert (response["submission_id"], response["participant_id"], response["study_id"]) == (
        "s1",
        "p1",
        "st1",
    )
