"""tables.py: every record shape and variation, bad records, schemas, pandas conversion.

Every test that reads records runs twice, with the block fast path and with the per-line
builder only, through the autouse ``path`` fixture.
"""

from __future__ import annotations

import json
import logging
import math
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from prolific_ingest import tables as tables_mod
from prolific_ingest.archive import open_archive
from prolific_ingest.errors import BadRecordError
from prolific_ingest.tables import (
    TABLE_NAMES,
    ExportTables,
    build_tables,
    iter_record_batches,
    schema_for,
    table_names,
)
from prolific_ingest.tables._arrow import dumps

BATCH_MEMBER = "responses-by-submission.jsonl"


#: The parser the helpers below ask for (``build_tables(..., fast_path=FAST)``).
FAST = True


@pytest.fixture(autouse=True, params=["fast", "per-line"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(globals(), "FAST", request.param == "fast")
    return str(request.param)


def _line(record: Any) -> bytes:
    return record if isinstance(record, bytes) else json.dumps(record).encode()


def read(
    tmp_path: Path,
    records: list[Any],
    *,
    member: str = BATCH_MEMBER,
    metadata: dict[str, Any] | None = None,
    files: dict[str, bytes] | None = None,
    on_bad_records: str = "raise",
    raw: bytes | None = None,
    fast_path: bool | None = None,
) -> ExportTables:
    path = tmp_path / "export.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        if raw is not None or records:
            zf.writestr(member, raw if raw is not None else b"\n".join(map(_line, records)))
        if metadata is not None:
            name = "collection.json" if member == "responses.jsonl" else "batch.json"
            zf.writestr(name, json.dumps(metadata))
        for name, data in (files or {}).items():
            zf.writestr(name, data)
    kind = "collection" if member == "responses.jsonl" else "batch"
    with open_archive(path, kind=kind) as archive:
        fast = FAST if fast_path is None else fast_path
        return build_tables(archive, on_bad_records=on_bad_records, fast_path=fast)  # type: ignore[arg-type]


def rows(tables: ExportTables, name: str) -> list[dict[str, Any]]:
    return tables[name].to_pylist()


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


SUBMISSION = {
    "submission_id": "s1",
    "participant_id": "p1",
    "study_id": "st1",
    "batch_id": "b1",
    "tasks": [
        {
            "task_id": "t1",
            "task_group_id": "g1",
            "datapoint": {"text": "héllo", "n": 2},
            "metadata": {"row": 1},
            "responses": [
                {
                    "id": "r1",
                    "created_at": "2026-11-01T10:00:00.123456Z",
                    "instruction_id": "i1",
                    "type": "multiple_choice",
                    "answer": [{"value": "positive"}, {"value": 2.5}],
                },
                {
                    "id": "r2",
                    "created_at": "2026-11-01T12:00:00+02:00",
                    "instruction_id": "i2",
                    "type": "file_upload",
                    "answer": [
                        {
                            "file_key": "k1",
                            "file_name": "a b.png",
                            "file_size_mb": 0.5,
                            "content_type": "image/png",
                        },
                        {
                            "file_key": "k2",
                            "file_name": "gone.png",
                            "file_size_mb": 1,
                            "content_type": "image/png",
                        },
                    ],
                },
            ],
        }
    ],
}


def test_grouped_by_submission_every_column(tmp_path: Path) -> None:
    tables = read(tmp_path, [SUBMISSION], files={"files/s1/k1/a b.png": b"PNG"})
    assert rows(tables, "submissions") == [
        {
            "submission_id": "s1",
            "participant_id": "p1",
            "study_id": "st1",
            "batch_id": "b1",
            "n_responses": 2,
            "extra": None,
        }
    ]
    assert rows(tables, "tasks") == [
        {
            "task_id": "t1",
            "batch_id": "b1",
            "task_group_id": "g1",
            "datapoint": '{"text":"héllo","n":2}',
            "metadata": '{"row":1}',
            "extra": None,
        }
    ]
    responses = rows(tables, "responses")
    assert [r["response_id"] for r in responses] == ["r1", "r2"]
    assert responses[0]["created_at"] == ts("2026-11-01T10:00:00.123456+00:00")
    assert responses[1]["created_at"] == ts("2026-11-01T10:00:00+00:00")
    assert responses[1] | {"created_at": None} == {
        "response_id": "r2",
        "created_at": None,
        "submission_id": "s1",
        "participant_id": "p1",
        "study_id": "st1",
        "task_id": "t1",
        "instruction_id": "i2",
        "type": "file_upload",
        "n_answers": 2,
        "extra": None,
    }
    answers = rows(tables, "answers")
    assert [(a["response_id"], a["answer_index"]) for a in answers] == [
        ("r1", 0),
        ("r1", 1),
        ("r2", 0),
        ("r2", 1),
    ]
    assert [(a["value"], a["value_type"]) for a in answers] == [
        ("positive", "string"),
        ("2.5", "number"),
        (None, "null"),
        (None, "null"),
    ]
    upload = answers[2]
    assert upload["file_key"] == "k1"
    assert upload["file_name"] == "a b.png"
    assert upload["file_size_mb"] == 0.5
    assert upload["content_type"] == "image/png"
    assert upload["file_path"] == "files/s1/k1/a b.png"
    assert answers[3]["file_path"] is None  # no such member
    assert answers[3]["file_size_mb"] == 1.0
    assert {a["submission_id"] for a in answers} == {"s1"}
    assert {a["task_id"] for a in answers} == {"t1"}
    assert rows(tables, "files") == [
        {
            "path": "files/s1/k1/a b.png",
            "size_bytes": 3,
            "submission_id": "s1",
            "file_key": "k1",
            "file_name": "a b.png",
        }
    ]


def test_mixed_value_types(tmp_path: Path) -> None:
    answers = [
        {"value": "text"},
        {"value": 3},
        {"value": 2.50},
        {"value": 1e-05},
        {"value": True},
        {"value": False},
        {"value": None},
        {},
        {"value": {"a": [1, "é"]}},
        {"value": [1, 2]},
        {"value": ""},
    ]
    record = {
        "submission_id": "s1",
        "batch_id": "b",
        "tasks": [
            {
                "task_id": "t",
                "responses": [{"id": "r", "created_at": None, "type": "x", "answer": answers}],
            }
        ],
    }
    big = (
        b'{"submission_id": "s2", "tasks": [{"task_id": "t", "responses": [{"id": "r2", '
        b'"answer": [{"value": 123456789012345678901234567890}]}]}]}'
    )
    tables = read(tmp_path, [record, big])
    got = [(a["value"], a["value_type"]) for a in rows(tables, "answers")]
    assert got == [
        ("text", "string"),
        ("3", "number"),
        ("2.5", "number"),
        ("1e-05", "number"),
        ("true", "boolean"),
        ("false", "boolean"),
        (None, "null"),
        (None, "null"),
        ('{"a":[1,"é"]}', "object"),
        ("[1,2]", "array"),
        ("", "string"),
        ("123456789012345678901234567890", "number"),
    ]


def test_unknown_keys_at_every_level_go_to_extra(tmp_path: Path) -> None:
    record = {
        "submission_id": "s1",
        "batch_id": "b",
        "x_device": {"os": "linux", "mobile": False},
        "tasks": [
            {
                "task_id": "t",
                "x_state": {"gold": True},
                "responses": [
                    {
                        "id": "r",
                        "created_at": "2026-11-01T00:00:00Z",
                        "instruction_id": "i",
                        "type": "likert_slider_v9",
                        "time_spent_ms": 1200,
                        "answer": [{"score": 0.5, "anchors": {"low": "never"}, "value": None}],
                    }
                ],
            }
        ],
    }
    tables = read(tmp_path, [record])
    assert json.loads(rows(tables, "submissions")[0]["extra"]) == {
        "x_device": {"os": "linux", "mobile": False}
    }
    assert json.loads(rows(tables, "tasks")[0]["extra"]) == {"x_state": {"gold": True}}
    assert json.loads(rows(tables, "responses")[0]["extra"]) == {"time_spent_ms": 1200}
    answer = rows(tables, "answers")[0]
    assert json.loads(answer["extra"]) == {"score": 0.5, "anchors": {"low": "never"}}
    assert answer["type"] == "likert_slider_v9"


def test_optional_keys_missing(tmp_path: Path) -> None:
    record = {"submission_id": "s", "participant_id": "p", "tasks": [{"task_id": "t"}]}
    tables = read(tmp_path, [record, {"submission_id": "s2"}])
    assert rows(tables, "submissions")[0] == {
        "submission_id": "s",
        "participant_id": "p",
        "study_id": None,
        "batch_id": None,
        "n_responses": 0,
        "extra": None,
    }
    assert rows(tables, "tasks") == [
        {
            "task_id": "t",
            "batch_id": None,
            "task_group_id": None,
            "datapoint": None,
            "metadata": None,
            "extra": None,
        }
    ]
    assert tables.row_counts["responses"] == 0
    assert tables.row_counts["submissions"] == 2


def test_grouped_by_task_shape(tmp_path: Path) -> None:
    record = {
        "task_id": "t1",
        "batch_id": "b",
        "datapoint": {"q": 1},
        "responses": [
            {
                "id": "r1",
                "created_at": "2026-11-01T00:00:00Z",
                "participant_id": "p1",
                "submission_id": "s1",
                "study_id": "st",
                "instruction_id": "i",
                "type": "free_text",
                "answer": [{"value": "a"}],
            },
            {"id": "r2", "participant_id": "p2", "submission_id": "s2", "answer": []},
            {"id": "r3", "participant_id": "p3", "answer": [{"value": 1}]},
        ],
    }
    again = dict(record, datapoint={"q": 2}, responses=[{"id": "r4", "submission_id": "s1"}])
    tables = read(tmp_path, [record, again], member="responses-by-task.jsonl")
    # one row per distinct task content: the changed datapoint is a second row
    assert [t["datapoint"] for t in rows(tables, "tasks")] == ['{"q":1}', '{"q":2}']
    subs = {(r["submission_id"], r["participant_id"]): r for r in rows(tables, "submissions")}
    assert subs[("s1", "p1")]["n_responses"] == 2
    assert subs[("s1", "p1")]["study_id"] == "st"
    assert subs[("s1", "p1")]["batch_id"] == "b"
    assert subs[("s2", "p2")]["n_responses"] == 1
    assert subs[(None, "p3")]["n_responses"] == 1  # no submission_id: one row per participant
    assert [r["task_id"] for r in rows(tables, "responses")] == ["t1"] * 4


def test_flat_task_builder_task_response_shape(tmp_path: Path) -> None:
    records = [
        {
            "id": "r1",
            "created_at": "2026-11-01T00:00:00Z",
            "batch_id": "b",
            "participant_id": "p",
            "submission_id": "s",
            "task_id": "t",
            "metadata": {"row": 3},
            "schema_version": 1,
            "response": {
                "instruction_id": "i",
                "type": "free_text_with_unit",
                "answer": [{"value": "12", "unit": "kg"}],
                "x_inner": 1,
            },
        },
        {
            "id": "r2",
            "created_at": "2026-11-01T00:00:01Z",
            "batch_id": "b",
            "participant_id": "p",
            "submission_id": "s",
            "task_id": "t",
            "response": {"instruction_id": "i2", "type": "free_text", "answer": [{"value": 7}]},
        },
    ]
    tables = read(tmp_path, records)
    assert rows(tables, "submissions") == [
        {
            "submission_id": "s",
            "participant_id": "p",
            "study_id": None,
            "batch_id": "b",
            "n_responses": 2,
            "extra": None,
        }
    ]
    assert rows(tables, "tasks")[0]["metadata"] == '{"row":3}'
    first = rows(tables, "responses")[0]
    assert first["instruction_id"] == "i"
    assert json.loads(first["extra"]) == {"schema_version": 1, "response": {"x_inner": 1}}
    answers = rows(tables, "answers")
    assert [(a["value"], a["unit"], a["value_type"]) for a in answers] == [
        ("12", "kg", "string"),
        ("7", None, "number"),
    ]


def test_collection_shapes_and_no_tasks_table(tmp_path: Path) -> None:
    grouped = {
        "submission_id": "s",
        "participant_id": "p",
        "collection_id": "c",
        "responses": [{"id": "r", "instruction_id": "i", "type": "free_text", "answer": []}],
    }
    flat = {
        "id": "r9",
        "collection_id": "c",
        "participant_id": "p9",
        "submission_id": "s9",
        "metadata": {"m": 1},
        "response": {"instruction_id": "i", "type": "free_text", "answer": [{"value": "v"}]},
    }
    tables = read(tmp_path, [grouped, flat], member="responses.jsonl")
    assert tables.kind == "collection"
    assert set(tables.tables) == set(table_names("collection"))
    assert "tasks" not in tables.tables
    assert "collection_id" in tables["submissions"].column_names
    assert {r["submission_id"]: r["n_responses"] for r in rows(tables, "submissions")} == {
        "s": 1,
        "s9": 1,
    }
    flat_row = rows(tables, "responses")[1]
    assert flat_row["task_id"] is None
    assert json.loads(flat_row["extra"]) == {"metadata": {"m": 1}}  # no tasks table to hold it


def test_created_at_parsing(tmp_path: Path) -> None:
    stamps = [
        "2026-11-01T10:00:00Z",
        "2026-11-01T10:00:00.5+01:00",
        "2026-11-01T10:00:00",
        "2026-11-01 10:00:00.123456789Z",
        "yesterday",
        12345,
    ]
    responses = [{"id": f"r{i}", "created_at": s, "answer": []} for i, s in enumerate(stamps)]
    record = {"submission_id": "s", "tasks": [{"task_id": "t", "responses": responses}]}
    tables = read(tmp_path, [record])
    assert tables["responses"].schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    got = rows(tables, "responses")
    assert [r["created_at"] for r in got[:4]] == [
        ts("2026-11-01T10:00:00+00:00"),
        ts("2026-11-01T09:00:00.5+00:00"),
        ts("2026-11-01T10:00:00+00:00"),
        ts("2026-11-01T10:00:00.123456+00:00"),
    ]
    assert got[4]["created_at"] is None
    assert json.loads(got[4]["extra"]) == {"created_at": "yesterday"}
    assert got[5]["created_at"] is None
    assert json.loads(got[5]["extra"]) == {"created_at": 12345}


def test_wrong_typed_known_values_are_kept_in_extra(tmp_path: Path) -> None:
    record = {
        "submission_id": "s",
        "participant_id": 42,
        "tasks": [
            {
                "task_id": "t",
                "responses": [
                    {
                        "id": "r",
                        "type": "x",
                        "answer": [{"value": "v", "unit": 3, "file_size_mb": True}],
                    }
                ],
            }
        ],
    }
    tables = read(tmp_path, [record])
    sub = rows(tables, "submissions")[0]
    assert sub["participant_id"] is None
    assert json.loads(sub["extra"]) == {"participant_id": 42}
    answer = rows(tables, "answers")[0]
    assert answer["unit"] is None
    assert answer["file_size_mb"] is None
    assert json.loads(answer["extra"])["unit"] == 3
    assert json.loads(answer["extra"])["file_size_mb"] is True


def test_unicode_and_escapes_round_trip(tmp_path: Path) -> None:
    text = 'Emoji 😀👍🏽, "quotes" \\ \n\r\t \u2028 \x00 中文 e\u0301'
    record = {
        "submission_id": "s",
        "tasks": [
            {
                "task_id": "t",
                "datapoint": {"text": text},
                "responses": [{"id": "r", "answer": [{"value": text}]}],
            }
        ],
    }
    tables = read(tmp_path, [record])
    assert rows(tables, "answers")[0]["value"] == text
    assert json.loads(rows(tables, "tasks")[0]["datapoint"]) == {"text": text}
    assert rows(tables, "tasks")[0]["datapoint"] == json.dumps(
        {"text": text}, ensure_ascii=False, separators=(",", ":")
    )


@pytest.mark.parametrize("how", ["absent", "empty", "blank"])
def test_empty_exports_have_full_schemas(tmp_path: Path, how: str) -> None:
    raw = {"absent": None, "empty": b"", "blank": b"\r\n\n  \n"}[how]
    tables = read(tmp_path, [], raw=raw, metadata={"id": "b"})
    assert set(tables.tables) == set(TABLE_NAMES)
    for name, table in tables.tables.items():
        assert table.num_rows == 0
        assert table.schema == schema_for(name, "batch")
    frames = tables.to_pandas()
    assert list(frames["answers"].columns) == schema_for("answers", "batch").names


def test_instructions_table(tmp_path: Path) -> None:
    metadata = {
        "id": "b",
        "instructions": [
            {
                "id": "i1",
                "type": "multiple_choice",
                "description": "Pick",
                "options": [{"label": "A", "value": 1}],
                "answer_limit": 2,
            },
            {"id": "i2", "type": "free_text", "description": "Say"},
        ],
    }
    tables = read(tmp_path, [], metadata=metadata)
    assert rows(tables, "instructions") == [
        {
            "instruction_id": "i1",
            "type": "multiple_choice",
            "description": "Pick",
            "options": '[{"label":"A","value":1}]',
            "extra": '{"answer_limit":2}',
        },
        {
            "instruction_id": "i2",
            "type": "free_text",
            "description": "Say",
            "options": None,
            "extra": None,
        },
    ]


# -- bad records -----------------------------------------------------------------------

GOOD = {"submission_id": "ok", "tasks": [{"task_id": "t", "responses": [{"id": "r"}]}]}
BAD_LINES = [
    (b"{not json", "invalid JSON"),
    (b"[1, 2, 3]", "not an object"),
    (b'"just a string"', "not an object"),
    (b'{"submission_id": "caf\xe9"}', "invalid JSON"),
    (b'{"submission_id": "s", "tasks": {"task_id": "t"}}', "not a list"),
    (b'{"submission_id": "s", "tasks": [{"responses": ["x"]}]}', "not an object"),
]


@pytest.mark.parametrize(("line", "why"), BAD_LINES)
def test_bad_record_raises_with_member_and_line(tmp_path: Path, line: bytes, why: str) -> None:
    raw = b"\n".join([_line(GOOD), b"", line, _line(GOOD)])
    with pytest.raises(BadRecordError) as info:
        read(tmp_path, [], raw=raw)
    assert info.value.member == BATCH_MEMBER
    assert info.value.line == 3
    assert "line 3" in str(info.value)
    assert BATCH_MEMBER in str(info.value)
    assert why in str(info.value)


def test_quarantine_keeps_every_bad_line_whole(tmp_path: Path) -> None:
    bad = [line for line, _ in BAD_LINES]
    raw = b"\r\n".join([_line(GOOD), *bad, _line(dict(GOOD, submission_id="ok2"))])
    tables = read(tmp_path, [], raw=raw, on_bad_records="quarantine")
    assert [r["submission_id"] for r in rows(tables, "submissions")] == ["ok", "ok2"]
    assert tables.row_counts["responses"] == 2  # nothing of a bad line is kept
    assert tables.row_counts["tasks"] == 1
    rejected = rows(tables, "rejected")
    assert [r["line_number"] for r in rejected] == list(range(2, 2 + len(bad)))
    assert [r["raw"] for r in rejected] == [b.decode("utf-8", "backslashreplace") for b in bad]
    assert {r["member"] for r in rejected} == {BATCH_MEMBER}
    assert all(r["error"] for r in rejected)


def test_skip_logs_one_warning_with_the_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = b"\n".join([_line(GOOD), b"{bad", b"[]", _line(GOOD)])
    with caplog.at_level(logging.WARNING, logger="prolific_ingest"):
        tables = read(tmp_path, [], raw=raw, on_bad_records="skip")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "skipped 2 bad records" in warnings[0].getMessage()
    assert tables.row_counts["submissions"] == 2
    assert tables.row_counts["rejected"] == 0


def test_invalid_policy(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="on_bad_records"):
        read(tmp_path, [GOOD], on_bad_records="ignore")


# -- streaming, schemas, pandas --------------------------------------------------------


def test_record_batches_have_fixed_schemas(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as zf:
        lines = [dict(SUBMISSION, submission_id=f"s{i}") for i in range(30)]
        zf.writestr(BATCH_MEMBER, b"\n".join(map(_line, lines)))
    with open_archive(path) as archive:
        batches = list(iter_record_batches(archive, batch_rows=8, fast_path=FAST))
    assert {name for name, _ in batches} == {"submissions", "tasks", "responses", "answers"}
    for name, batch in batches:
        assert batch.schema == schema_for(name, "batch")
        assert batch.num_rows <= 8
    assert sum(b.num_rows for n, b in batches if n == "answers") == 120


def test_schema_for_and_table_names() -> None:
    assert table_names("batch") == TABLE_NAMES
    assert "tasks" not in table_names("collection")
    assert schema_for("submissions", "collection").names[3] == "collection_id"
    assert schema_for("responses", "batch").field("created_at").type == pa.timestamp("us", tz="UTC")
    with pytest.raises(ValueError, match="kind"):
        schema_for("answers", "study")
    with pytest.raises(KeyError):
        schema_for("nope", "batch")


def test_to_pandas_arrow_dtypes_and_expansion(tmp_path: Path) -> None:
    record = dict(SUBMISSION, x_device={"os": "linux", "mobile": False}, code="C1")
    record["tasks"] = [dict(SUBMISSION["tasks"][0], x_state="gold")]  # type: ignore[index]
    tables = read(tmp_path, [record])
    frames = tables.to_pandas()
    assert set(frames) == set(TABLE_NAMES)
    for frame in frames.values():
        assert all(isinstance(dtype, pd.ArrowDtype) for dtype in frame.dtypes)
    responses = frames["responses"]
    assert responses["created_at"].dtype == pd.ArrowDtype(pa.timestamp("us", tz="UTC"))
    subs = frames["submissions"]
    assert subs.loc[0, "x_device.os"] == "linux"
    assert not subs.loc[0, "x_device.mobile"]
    assert subs.loc[0, "code"] == "C1"
    assert "extra" in subs.columns  # the JSON text stays
    tasks = frames["tasks"]
    assert tasks.loc[0, "datapoint.text"] == "héllo"
    assert tasks.loc[0, "datapoint.n"] == 2
    assert tasks.loc[0, "metadata.row"] == 1
    assert tasks.loc[0, "x_state"] == "gold"
    assert tables.row_counts["answers"] == 4


def test_dumps_matches_stdlib_json() -> None:
    values = [1e-05, 1e16, 0.1, 2.5, 1.0, -0.0, 10**30, {"é": [None, True]}, "\u2028\x00"]
    for value in values:
        assert dumps(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def test_fast_path_handles_grouped_blocks_and_refuses_others() -> None:
    from prolific_ingest.tables._builder import RecordBuilder
    from prolific_ingest.tables._fast import Fallback, build_block

    builder = RecordBuilder("batch", files_prefix="files/", existing_files=[], batch_rows=100)
    out = dict(build_block(b"\n".join([_line(SUBMISSION), _line(GOOD)]), builder))
    assert out["answers"].num_rows == 4
    assert out["submissions"].column("n_responses").to_pylist() == [2, 1]
    flat = {"id": "r", "response": {"answer": []}}
    for lines in ([_line(flat)], [_line(GOOD), b"{bad"], [_line(GOOD), b"[1]"]):
        with pytest.raises(Fallback):
            build_block(b"\n".join(lines), builder)
    assert len(builder.seen_tasks) == 2  # a refused block changes no state


@pytest.mark.parametrize("fast", [True, False], ids=["block-path", "line-path"])
def test_the_task_digest_set_keeps_a_bounded_python_set_and_16_bytes_a_task(
    monkeypatch: pytest.MonkeyPatch, fast: bool
) -> None:
    """Memory for task de-duplication: 16 bytes per distinct task row, a bounded set."""
    from prolific_ingest.tables._builder import RecordBuilder
    from prolific_ingest.tables._fast import build_block
    from prolific_ingest.tables._records import TaskDigests, parse_line

    monkeypatch.setattr(TaskDigests, "RECENT", 8)
    builder = RecordBuilder("batch", files_prefix="files/", existing_files=[], batch_rows=10**6)
    distinct, rows = 300, 0
    lines = [
        _line(
            {
                "submission_id": f"s{i}",
                "tasks": [
                    {
                        "task_id": f"t{i % distinct}",
                        "metadata": {"n": i % distinct},
                        "responses": [],
                    },
                    {"task_id": f"t{(i + 7) % distinct}", "metadata": {"n": (i + 7) % distinct}},
                ],
            }
        )
        for i in range(4 * distinct)
    ]
    digests = builder.seen_tasks
    largest_recent = 0
    for start in range(0, len(lines), 25):
        chunk = lines[start : start + 25]
        if fast:
            rows += sum(
                b.num_rows for name, b in build_block(b"\n".join(chunk), builder) if name == "tasks"
            )
        else:
            for line in chunk:
                builder.add(parse_line(line))
        largest_recent = max(largest_recent, len(digests.recent))
        assert len(digests.recent) < TaskDigests.RECENT  # the Python set stays bounded
    if not fast:
        rows = sum(b.num_rows for name, b in builder.flush(final=True) if name == "tasks")
    assert rows == distinct  # every task row once, however often repeated
    assert len(digests) == distinct
    in_levels = len(digests) - len(digests.recent)
    assert digests.nbytes == 16 * in_levels  # 16 bytes a digest, nothing else
    assert in_levels > 3 * largest_recent  # most digests are in the levels
    assert len(digests.levels) <= 1 + math.log2(distinct / TaskDigests.RECENT)


def test_task_digests_sharing_their_first_half_stay_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    from prolific_ingest.tables._records import TaskDigests

    monkeypatch.setattr(TaskDigests, "RECENT", 4)
    digests = TaskDigests()
    same_first = [b"A" * 8 + bytes([i]) * 8 for i in range(40)]
    assert digests.claim(same_first[:30:2]) == [True] * 15
    assert digests.claim(same_first[:30]) == [i % 2 == 1 for i in range(30)]
    assert digests.claim(same_first) == [False] * 30 + [True] * 10
    assert digests.claim(same_first[::-1]) == [False] * 40
    assert all(key in digests for key in same_first) and b"A" * 16 not in digests


# -- the block fast path: every refusal gives the per-line result ----------------------


def test_long_number_scan_flags_exactly_the_lines_the_regex_flags() -> None:
    from prolific_ingest.tables._fast import long_number_lines
    from prolific_ingest.tables._records import maybe_big_int

    lines = [
        b'{"a": 1234567890123456789}',
        b'{"a": -1234567890123456789012}',
        b'{"a":[1,\t 99999999999999999999]}',
        b'{"id": "1234567890123456789012"}',  # digits inside a string
        b'{"a": 123456789012345678}',  # 18 digits
        b'{"a": 1.5, "b": "x: 12345678901234567890"}',  # looks like a number: flagged
        b'{"a": --1234567890123456789}',
        b"1234567890123456789",  # no opener on its line
        b"{},",
        b"12345678901234567890123",  # the opener is on the previous line
        b'{"a": 0}',
    ]
    block = b"\n".join(lines)
    assert long_number_lines(block) == {i for i, line in enumerate(lines) if maybe_big_int(line)}
    assert long_number_lines(block) == {0, 1, 2, 5}


def test_big_integers_stay_exact_next_to_ordinary_lines(tmp_path: Path) -> None:
    big = dict(GOOD, submission_id="big")
    big["tasks"] = [
        {"task_id": "t9", "responses": [{"id": "r9", "answer": [{"value": 2**70, "x": -(2**65)}]}]}
    ]
    tables = read(tmp_path, [GOOD, big, dict(GOOD, submission_id="after")])
    answer = rows(tables, "answers")[0]
    assert (answer["value"], answer["value_type"]) == (str(2**70), "number")
    assert answer["extra"] == f'{{"x":{-(2**65)}}}'
    assert [r["submission_id"] for r in rows(tables, "submissions")] == ["ok", "big", "after"]


@pytest.mark.parametrize("size", [True, False, 1, 0, 1.0, 0.0])
def test_boolean_file_sizes_are_not_read_as_numbers(tmp_path: Path, size: Any) -> None:
    answer = {"file_key": "k", "file_size_mb": size}
    record = {
        "submission_id": "s",
        "tasks": [{"task_id": "t", "responses": [{"answer": [answer]}]}],
    }
    got = rows(read(tmp_path, [record]), "answers")[0]
    if type(size) is bool:
        assert got["file_size_mb"] is None
        assert json.loads(got["extra"]) == {"file_size_mb": size}
    else:
        assert got["file_size_mb"] == float(size)
        assert got["extra"] is None


@pytest.mark.parametrize("where", ["tasks", "responses"])
def test_a_string_where_a_list_belongs_is_a_bad_record(tmp_path: Path, where: str) -> None:
    for text in ("", "abc"):
        record: dict[str, Any] = {"submission_id": "s", "tasks": [{"task_id": "t"}]}
        if where == "tasks":
            record["tasks"] = text
        else:
            record["tasks"][0]["responses"] = text
        tables = read(tmp_path, [GOOD, record], on_bad_records="quarantine")
        assert [r["line_number"] for r in rows(tables, "rejected")] == [2]
        assert "not a list" in rows(tables, "rejected")[0]["error"]
        assert tables.row_counts["submissions"] == 1


def test_extra_floats_and_big_integers_use_stdlib_json_text(tmp_path: Path) -> None:
    odd = [1e-05, 0.00001234, 1e16, 1.5e300, 3.14159, 10**25, "0e5 1E3", 2.0]
    answers = [{"value": "v", "x": v} for v in odd]
    record = {"submission_id": "s", "tasks": [{"task_id": "t", "responses": [{"answer": answers}]}]}
    got = [a["extra"] for a in rows(read(tmp_path, [record]), "answers")]
    assert got == [json.dumps({"x": v}, ensure_ascii=False, separators=(",", ":")) for v in odd]


def test_generated_blocks_take_the_fast_path(
    tmp_path: Path, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prolific_ingest.testing import ExportSpec, make_batch_export, make_collection_export

    calls: list[str] = []
    real = tables_mod.build_block

    def counting(block: bytes, builder: Any) -> Any:
        try:
            out = real(block, builder)
        except tables_mod.Fallback:
            calls.append("fallback")
            raise
        calls.append("fast")
        return out

    monkeypatch.setattr(tables_mod, "build_block", counting)
    for make in (make_batch_export, make_collection_export):
        archive_path = tmp_path / f"{make.__name__}.zip"
        make(archive_path, ExportSpec(n_submissions=12, crlf=True, blank_lines=True, bom=True))
        with open_archive(archive_path) as archive:
            build_tables(archive, fast_path=FAST)
    assert calls == (["fast", "fast"] if path == "fast" else [])


# -- tolerant answer shapes: anything that is not a list of objects is kept ---------------


def _answer_record(*answers: Any, sub: str = "s") -> dict[str, Any]:
    responses = [
        {"id": f"{sub}-r{i}", "instruction_id": "i", "type": "video_narration", "answer": a}
        for i, a in enumerate(answers)
    ]
    return {"submission_id": sub, "tasks": [{"task_id": "t", "responses": responses}]}


def _answer_cells(tables: ExportTables) -> list[tuple[Any, ...]]:
    return [
        (a["response_id"], a["answer_index"], a["value"], a["value_type"], a["extra"])
        for a in rows(tables, "answers")
    ]


def _coerced_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "were not objects in a list" in r.getMessage()
    ]


def test_a_single_object_answer_is_a_one_item_list(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    record = _answer_record({"value": "v", "file_key": "k", "x_new": 1})
    with caplog.at_level(logging.WARNING, logger="prolific_ingest"):
        tables = read(tmp_path, [record])
    assert _answer_cells(tables) == [("s-r0", 0, "v", "string", '{"x_new":1}')]
    assert rows(tables, "answers")[0]["file_key"] == "k"
    assert rows(tables, "responses")[0]["n_answers"] == 1
    assert len(_coerced_warnings(caplog)) == 1
    assert "1 answer items" in _coerced_warnings(caplog)[0]


@pytest.mark.parametrize(
    ("answer", "value", "value_type"),
    [
        ("a video.mp4", "a video.mp4", "string"),
        ("", "", "string"),
        (3, "3", "number"),
        (2.5, "2.5", "number"),
        (True, "true", "boolean"),
    ],
)
def test_a_bare_scalar_answer_is_one_item_with_that_value(
    tmp_path: Path, answer: Any, value: str, value_type: str
) -> None:
    tables = read(tmp_path, [_answer_record(answer)])
    assert _answer_cells(tables) == [("s-r0", 0, value, value_type, None)]
    assert rows(tables, "responses")[0]["n_answers"] == 1
    assert tables.row_counts["rejected"] == 0


def test_non_object_list_items_become_items_with_that_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    answer = ["a", 3, {"value": "v", "unit": "kg"}, [1, "x"], None, False, 1.5e-7]
    with caplog.at_level(logging.WARNING, logger="prolific_ingest"):
        tables = read(tmp_path, [_answer_record(answer)])
    assert _answer_cells(tables) == [
        ("s-r0", 0, "a", "string", None),
        ("s-r0", 1, "3", "number", None),
        ("s-r0", 2, "v", "string", None),
        ("s-r0", 3, '[1,"x"]', "array", None),
        ("s-r0", 4, None, "null", None),
        ("s-r0", 5, "false", "boolean", None),
        ("s-r0", 6, "1.5e-07", "number", None),
    ]
    assert rows(tables, "answers")[2]["unit"] == "kg"
    assert rows(tables, "responses")[0]["n_answers"] == 7
    assert len(_coerced_warnings(caplog)) == 1
    assert "6 answer items" in _coerced_warnings(caplog)[0]


@pytest.mark.parametrize("answer", [None, "missing", []])
def test_a_null_or_missing_answer_is_zero_items(
    tmp_path: Path, answer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    record = _answer_record(answer)
    if answer == "missing":
        del record["tasks"][0]["responses"][0]["answer"]
    with caplog.at_level(logging.WARNING, logger="prolific_ingest"):
        tables = read(tmp_path, [record])
    assert tables.row_counts["answers"] == 0
    assert rows(tables, "responses")[0]["n_answers"] == 0
    assert _coerced_warnings(caplog) == []


def test_every_shape_in_one_member_one_warning_with_the_total(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records = [
        _answer_record({"value": 1}, "text", sub="a"),
        GOOD,
        _answer_record([{"value": "ok"}], ["x", {"value": "y"}, 7], None, sub="b"),
    ]
    with caplog.at_level(logging.WARNING, logger="prolific_ingest"):
        tables = read(tmp_path, records)
    assert [r["n_answers"] for r in rows(tables, "responses")] == [1, 1, 0, 1, 3, 0]
    warnings = _coerced_warnings(caplog)
    assert len(warnings) == 1
    assert "4 answer items" in warnings[0]
    assert BATCH_MEMBER in warnings[0]


def test_collection_and_flat_shapes_coerce_answers_too(tmp_path: Path) -> None:
    collection = {"submission_id": "s", "responses": [{"id": "r", "answer": "said"}]}
    tables = read(tmp_path, [collection], member="responses.jsonl")
    assert _answer_cells(tables) == [("r", 0, "said", "string", None)]
    flat = {"id": "r", "submission_id": "s", "response": {"type": "x", "answer": {"value": 2}}}
    tables = read(tmp_path, [flat])
    assert _answer_cells(tables) == [("r", 0, "2", "number", None)]


def _both_paths(tmp_path: Path, records: list[Any], **kwargs: Any) -> tuple[Any, ...]:
    out = []
    for fast in (True, False):
        tables = read(tmp_path, records, fast_path=fast, **kwargs)
        out.append({name: rows(tables, name) for name in tables.tables})
    return tuple(out)


@pytest.mark.parametrize(
    "others",
    [
        [],  # the fast path coerces the block itself
        [dict(GOOD, participant_id=5)],  # ... then falls back (wrong type): state restored
        [{"submission_id": "o", "tasks": [{"responses": [{"answer": "kept?"}]}, 5]}],  # rejected
    ],
)
def test_fast_path_and_per_line_give_identical_tables_and_counts(
    tmp_path: Path,
    others: list[Any],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    records = [
        _answer_record({"value": "one"}, "bare", ["x", {"value": "y"}, [1]], None, sub="a"),
        GOOD,
        *others,
        _answer_record(7, sub="z"),
    ]
    with caplog.at_level(logging.WARNING, logger="prolific_ingest"):
        fast, slow = _both_paths(tmp_path, records, on_bad_records="quarantine")
    assert fast == slow
    assert [a["value"] for a in fast["answers"]][:6] == ["one", "bare", "x", "y", "[1]", "7"]
    warnings = _coerced_warnings(caplog)
    assert len(warnings) == 2
    assert all("5 answer items" in w for w in warnings)  # the rejected line counts nothing


def test_fast_path_handles_coerced_answers_without_falling_back() -> None:
    from prolific_ingest.tables._builder import RecordBuilder
    from prolific_ingest.tables._fast import build_block

    builder = RecordBuilder("batch", files_prefix="files/", existing_files=[], batch_rows=100)
    block = b"\n".join([_line(_answer_record({"value": 1}, ["a", {"value": "b"}])), _line(GOOD)])
    out = dict(build_block(block, builder))
    assert out["answers"].column("value").to_pylist() == ["1", "a", "b"]
    assert out["responses"].column("n_answers").to_pylist() == [1, 2, 0]
    assert builder.coerced == 2
