"""Parser edge cases: odd ids, odd JSON, repeated tasks, lossless rejected lines.

Every archive is read through both parse paths (``tests._helpers.read_both_ways``: the
block fast path and the per-line builder only), and the two must give identical tables.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from prolific_ingest.errors import BadRecordError
from prolific_ingest.tables import ExportTables
from tests._helpers import bad_record_both_ways, read_both_ways

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


def read(
    tmp_path: Path,
    records: list[Any],
    *,
    member: str = BY_SUBMISSION,
    policy: str = "raise",
    metadata: Any = None,
) -> ExportTables:
    """The tables of an archive of ``records``, identical through both parse paths."""
    kind = "collection" if member == COLLECTION else "batch"
    path = _zip(tmp_path, records, member, metadata)
    return read_both_ways(path, kind=kind, on_bad_records=policy)


def read_error(
    tmp_path: Path, records: list[Any], *, member: str = BY_SUBMISSION
) -> list[BadRecordError]:
    """The ``BadRecordError`` of both paths (they must agree on member and line)."""
    kind = "collection" if member == COLLECTION else "batch"
    return bad_record_both_ways(_zip(tmp_path, records, member, None), kind=kind)


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


def test_rejected_raw_escapes_undecodable_bytes_instead_of_replacing_them(tmp_path: Path) -> None:
    bad = b'{"submission_id": "caf\xe9 \xff\xfe"}'
    tables = read(tmp_path, [GOOD, bad, GOOD], policy="quarantine")
    [rejected] = rows(tables, "rejected")
    assert rejected["line_number"] == 2
    assert rejected["raw"] == '{"submission_id": "caf\\xe9 \\xff\\xfe"}'
    assert rejected["raw"].encode("ascii").decode("unicode_escape").encode("latin-1") == bad


# -- instructions: wrong-typed known keys are not coerced --------------------------------


def test_wrong_typed_instruction_keys_are_null_and_kept_in_extra(tmp_path: Path) -> None:
    metadata = {
        "id": "b1",
        "instructions": [
            {"id": 5, "type": "free_text", "description": "Say", "answer_limit": 1},
            {"id": "i2", "type": ["multiple_choice"], "description": {"en": "Pick"}},
            {"id": "i3", "type": "free_text", "description": None, "options": "odd"},
            "not an object",
        ],
    }
    tables = read(tmp_path, [GOOD], metadata=metadata)
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


def test_a_null_id_on_a_response_inherits_the_submissions(tmp_path: Path) -> None:
    nulls = {"submission_id": None, "participant_id": None, "study_id": None}
    responses = [
        {"id": "r1", **nulls, "answer": [{"value": "a"}]},
        {"id": "r2", "submission_id": "other", "participant_id": None, "answer": []},
        {"id": "r3", "study_id": None, "answer": []},
    ]
    tables = read(tmp_path, [submission(tasks=[task(responses=responses)])])
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
    tables = read(tmp_path, [collection], member=COLLECTION)
    [response] = rows(tables, "responses")
    assert (response["submission_id"], response["participant_id"], response["study_id"]) == (
        "s1",
        "p1",
        "st1",
    )


# -- both parsers refuse the same lines --------------------------------------------------

LONG = b'"n":12345678901234567890,'  # sends the line to the stdlib parser (exact integers)


def _with_value(value: bytes, long: bool, task_id: bytes = b"t") -> bytes:
    return (
        b'{"submission_id":"s","participant_id":"p","batch_id":"b",'
        + (LONG if long else b"")
        + b'"tasks":[{"task_id":"'
        + task_id
        + b'","metadata":{"v":'
        + value
        + b'},"responses":[{"id":"r","answer":[{"value":'
        + value
        + b"}]}]}]}"
    )


REFUSED = [
    (b'"trunc \\ud83d"', "surrogate"),  # a high surrogate with no low one
    (b'"\\udc00 low"', "surrogate"),
    (b'"\\ude00\\ud83d"', "surrogate"),  # the pair in the wrong order
    (b"1e400", "range"),
    (b"-1e400", "range"),
    (b"NaN", "NaN"),
    (b"-Infinity", "Infinity"),
]


@pytest.mark.parametrize("long", [False, True], ids=["orjson", "stdlib"])
@pytest.mark.parametrize(("value", "why"), REFUSED)
def test_non_unicode_strings_and_non_finite_numbers_are_bad_records_on_both_parsers(
    tmp_path: Path, value: bytes, why: str, long: bool
) -> None:
    bad = _with_value(value, long)
    for error in read_error(tmp_path, [GOOD, bad, GOOD]):
        assert (error.member, error.line) == (BY_SUBMISSION, 2)
        assert "invalid JSON" in str(error)
        if long:
            assert why in str(error)
    tables = read(tmp_path, [GOOD, bad, GOOD], policy="quarantine")
    assert [(r["line_number"], r["raw"]) for r in rows(tables, "rejected")] == [(2, bad.decode())]
    assert tables.row_counts["responses"] == 2
    tables = read(tmp_path, [GOOD, bad, GOOD], policy="skip")
    assert tables.row_counts["rejected"] == 0
    assert [r["submission_id"] for r in rows(tables, "submissions")] == ["ok", "ok"]


@pytest.mark.parametrize("long", [False, True], ids=["orjson", "stdlib"])
def test_surrogate_pairs_and_escaped_backslashes_are_still_read(tmp_path: Path, long: bool) -> None:
    lines = [
        _with_value(b'"smile \\ud83d\\ude00"', long, b"t1"),
        _with_value(b'"not an escape: \\\\ud83d"', long, b"t2"),
        _with_value(b"1e308", long, b"t3"),
    ]
    tables = read(tmp_path, lines)
    values = [a["value"] for a in rows(tables, "answers")]
    assert values == ["smile \U0001f600", "not an escape: \\ud83d", "1e+308"]
    assert [t["metadata"] for t in rows(tables, "tasks")] == [
        '{"v":"smile \U0001f600"}',
        '{"v":"not an escape: \\\\ud83d"}',
        '{"v":1e+308}',
    ]


def test_a_line_nested_too_deeply_for_the_stdlib_parser_is_a_bad_record(tmp_path: Path) -> None:
    deep = b"[" * 5000 + b"]" * 5000
    bad = _with_value(deep, True)
    [error, _] = read_error(tmp_path, [GOOD, bad])
    assert error.line == 2
    tables = read(tmp_path, [GOOD, bad], policy="quarantine")
    assert [r["line_number"] for r in rows(tables, "rejected")] == [2]


# -- ids that are lists or objects -------------------------------------------------------


def flat(rid: str, **keys: Any) -> dict[str, Any]:
    record = {
        "id": rid,
        "batch_id": "b1",
        "participant_id": "p1",
        "submission_id": "s1",
        "task_id": "t1",
        "response": {"instruction_id": "i1", "type": "free_text", "answer": [{"value": rid}]},
    }
    return {**record, **keys}


@pytest.mark.parametrize("policy", ["raise", "quarantine", "skip"])
@pytest.mark.parametrize("task_id", [["t1"], {"id": "t1"}])
def test_a_task_id_that_is_a_list_or_object_is_a_wrong_typed_key(
    tmp_path: Path, task_id: Any, policy: str
) -> None:
    record = submission(tasks=[task(task_id, datapoint={"d": 1})])
    tables = read(tmp_path, [GOOD, record], policy=policy)
    assert tables.row_counts["rejected"] == 0
    odd = [t for t in rows(tables, "tasks") if t["task_id"] is None]
    assert [(t["datapoint"], extra(t)) for t in odd] == [('{"d":1}', {"task_id": task_id})]
    response = rows(tables, "responses")[1]
    assert (response["task_id"], extra(response)) == (None, {"task_id": task_id})
    answer = rows(tables, "answers")[1]
    assert (answer["task_id"], extra(answer)) == (None, {"task_id": task_id})


def test_list_and_object_ids_in_flat_records_are_aggregated_without_coercion(
    tmp_path: Path,
) -> None:
    records = [
        flat("r1", submission_id=["s1"]),
        flat("r2", submission_id=["s1"]),
        flat("r3", submission_id="s1"),
        flat("r4", submission_id=None, participant_id={"p": 1}),
        flat("r5", submission_id=None, participant_id={"p": 1}, task_id=["t1"]),
        flat("r6", submission_id=1),
        flat("r7", submission_id=True),  # not merged with 1
    ]
    tables = read(tmp_path, records, policy="skip")
    subs = [
        (s["submission_id"], s["participant_id"], s["n_responses"], extra(s))
        for s in rows(tables, "submissions")
    ]
    assert subs == [
        (None, "p1", 2, {"submission_id": ["s1"]}),
        ("s1", "p1", 1, None),
        (None, None, 2, {"participant_id": {"p": 1}}),
        (None, "p1", 1, {"submission_id": 1}),
        (None, "p1", 1, {"submission_id": True}),
    ]
    responses = rows(tables, "responses")
    assert [extra(r) for r in responses] == [
        {"submission_id": ["s1"]},
        {"submission_id": ["s1"]},
        None,
        {"participant_id": {"p": 1}},
        {"participant_id": {"p": 1}, "task_id": ["t1"]},
        {"submission_id": 1},
        {"submission_id": True},
    ]


def test_list_ids_on_responses_grouped_by_task_are_aggregated_without_coercion(
    tmp_path: Path,
) -> None:
    record = {
        "task_id": "t1",
        "batch_id": "b1",
        "responses": [
            {"id": "r1", "submission_id": ["s1"], "participant_id": "p1"},
            {"id": "r2", "submission_id": ["s1"], "participant_id": "p1"},
            {"id": "r3", "participant_id": ["p2"]},
        ],
    }
    tables = read(tmp_path, [record], member=BY_TASK, policy="quarantine")
    subs = [
        (s["submission_id"], s["participant_id"], s["n_responses"], extra(s))
        for s in rows(tables, "submissions")
    ]
    assert subs == [
        (None, "p1", 2, {"submission_id": ["s1"]}),
        (None, None, 1, {"participant_id": ["p2"]}),
    ]


# -- tasks: one row per distinct task content --------------------------------------------


def _task_rows(tables: ExportTables) -> list[tuple[Any, ...]]:
    return [
        (t["task_id"], t["batch_id"], t["task_group_id"], t["datapoint"], t["metadata"], extra(t))
        for t in rows(tables, "tasks")
    ]


BIG = 2**70


def test_task_rows_are_deduplicated_by_their_whole_content(tmp_path: Path) -> None:
    def seen(sub: str, *tasks: dict[str, Any]) -> dict[str, Any]:
        return submission(sub, [{**t, "responses": [{"id": f"r-{sub}"}]} for t in tasks])

    t1 = {
        "task_id": "t1",
        "task_group_id": "g1",
        "datapoint": {"d": 1, "e": 2},
        "metadata": {"m": 1},
    }
    no_id = {"datapoint": {"d": 9}}
    records = [
        seen("s1", t1, {"task_id": "t2"}),
        seen("s2", t1, {"task_id": "t2"}, {}, {"task_id": None}),  # repeats; nothing to keep
        seen("s3", {**t1, "metadata": {"m": 2}}),
        seen("s4", {**t1, "x_unknown": True}),
        seen("s5", {**t1, "task_group_id": "g2"}),
        seen("s6", {**t1, "batch_id": "b9"}),
        seen("s7", {**t1, "batch_id": None}),  # null: the line's batch_id, so a repeat of t1
        seen("s8", {**t1, "datapoint": {"d": 1.0, "e": 2}}),  # 1.0 is not 1 in the table
        seen("s9", {**t1, "datapoint": {"e": 2, "d": 1}}),  # key order is kept in the text
        seen("s10", no_id, no_id, {"task_id": "t3", "datapoint": {"big": BIG}}),
        seen("s11", {"task_id": "t3", "datapoint": {"big": BIG}}, t1),
    ]
    tables = read(tmp_path, records)
    dp = '{"d":1,"e":2}'
    assert _task_rows(tables) == [
        ("t1", "b1", "g1", dp, '{"m":1}', None),
        ("t2", "b1", None, None, None, None),
        ("t1", "b1", "g1", dp, '{"m":2}', None),
        ("t1", "b1", "g1", dp, '{"m":1}', {"x_unknown": True}),
        ("t1", "b1", "g2", dp, '{"m":1}', None),
        ("t1", "b9", "g1", dp, '{"m":1}', None),
        ("t1", "b1", "g1", '{"d":1.0,"e":2}', '{"m":1}', None),
        ("t1", "b1", "g1", '{"e":2,"d":1}', '{"m":1}', None),
        (None, "b1", None, '{"d":9}', None, None),
        ("t3", "b1", None, f'{{"big":{BIG}}}', None, None),
    ]
    # every response still points at its task by task_id
    assert [r["task_id"] for r in rows(tables, "responses")][:3] == ["t1", "t2", "t1"]


def test_the_fast_path_itself_deduplicates_task_rows_by_content() -> None:
    from prolific_ingest.tables._builder import RecordBuilder
    from prolific_ingest.tables._fast import build_block

    t1 = {"task_id": "t1", "datapoint": {"d": 1}, "responses": []}
    lines = [
        submission("s1", [t1]),
        submission("s2", [t1, {"datapoint": {"d": 2}, "responses": []}]),
        submission("s3", [{**t1, "metadata": {"m": 1}}, {"responses": []}]),
    ]
    builder = RecordBuilder("batch", files_prefix="files/", existing_files=[], batch_rows=100)
    out = dict(build_block(b"\n".join(map(_line, lines)), builder))  # no Fallback
    assert out["tasks"].select(["task_id", "datapoint", "metadata"]).to_pylist() == [
        {"task_id": "t1", "datapoint": '{"d":1}', "metadata": None},
        {"task_id": None, "datapoint": '{"d":2}', "metadata": None},
        {"task_id": "t1", "datapoint": '{"d":1}', "metadata": '{"m":1}'},
    ]
    assert builder.tasks == []  # the fast path's rows are all in its batch


def test_a_block_hands_back_each_task_content_once() -> None:
    """Repeats inside a block are dropped where the block is parsed (a worker, say), so
    only one row per content crosses to the process that keeps the export-wide set."""
    from prolific_ingest.tables._builder import RecordBuilder
    from prolific_ingest.tables._fast import commit_block, parse_block

    t1 = {"task_id": "t1", "datapoint": {"d": 1}, "responses": []}
    t2 = {"task_id": "t2", "responses": [], "x": None}
    lines = [submission(f"s{i}", [t1, t2] if i % 2 else [t2]) for i in range(6)]
    builder = RecordBuilder("batch", files_prefix="files/", existing_files=[], batch_rows=100)
    result = parse_block(b"\n".join(map(_line, lines)), builder)
    (tasks,) = [batch for name, batch in result.tables if name == "tasks"]
    assert tasks.column("task_id").to_pylist() == ["t2", "t1"]
    assert len(result.task_keys) == len(set(result.task_keys)) == 2
    assert len(builder.seen_tasks) == 0  # parsing a block claims nothing
    committed = dict(commit_block(result, builder))
    assert committed["tasks"].num_rows == 2
    again = parse_block(b"\n".join(map(_line, lines)), builder)
    assert "tasks" not in dict(commit_block(again, builder))  # seen in the first block


def test_flat_records_keep_each_distinct_task_metadata(tmp_path: Path) -> None:
    records = [
        flat("r1", metadata={"row": 1}),
        flat("r2", metadata={"row": 1}),
        flat("r3", metadata={"row": 2}),
        flat("r4", task_group_id="g"),
        flat("r5", task_id=None, metadata={"row": 3}),
        flat("r6", task_id=None),  # neither a task_id nor task content: no row
    ]
    tables = read(tmp_path, records)
    assert _task_rows(tables) == [
        ("t1", "b1", None, None, '{"row":1}', None),
        ("t1", "b1", None, None, '{"row":2}', None),
        ("t1", "b1", "g", None, None, None),
        (None, "b1", None, None, '{"row":3}', None),
    ]


def test_grouped_by_task_records_keep_each_distinct_task_content(tmp_path: Path) -> None:
    def line(task_id: Any, **keys: Any) -> dict[str, Any]:
        return {"task_id": task_id, "batch_id": "b1", **keys, "responses": [{"id": "r"}]}

    records = [
        line("t1", datapoint={"q": 1}),
        line("t1", datapoint={"q": 1}),
        line("t1", datapoint={"q": 1}, foo=[1]),
        line(None, datapoint={"q": 2}),
        line(None),
    ]
    tables = read(tmp_path, records, member=BY_TASK)
    assert _task_rows(tables) == [
        ("t1", "b1", None, '{"q":1}', None, None),
        ("t1", "b1", None, '{"q":1}', None, {"foo": [1]}),
        (None, "b1", None, '{"q":2}', None, None),
    ]


# -- collections: grouped-by-task lines keep their task-level keys -----------------------


def test_collection_lines_grouped_by_task_keep_their_task_keys_in_each_response(
    tmp_path: Path,
) -> None:
    record = {
        "task_id": "t1",
        "collection_id": "c1",
        "datapoint": {"d": 1},
        "metadata": {"m": 1},
        "task_group_id": "g1",
        "foo": 1,
        "responses": [
            {"id": "r1", "submission_id": "s1", "participant_id": "p1", "answer": []},
            {"id": "r2", "submission_id": "s2", "participant_id": "p2", "zzz": 2},
            {"id": "r3", "submission_id": "s3", "participant_id": "p3", "task": "own key"},
        ],
    }
    plain = {
        "task_id": "t2",
        "collection_id": "c1",
        "responses": [{"id": "r4", "submission_id": "s1", "participant_id": "p1"}],
    }
    tables = read(tmp_path, [record, plain], member=COLLECTION)
    task = {"datapoint": {"d": 1}, "metadata": {"m": 1}, "task_group_id": "g1", "foo": 1}
    responses = rows(tables, "responses")
    assert [(r["response_id"], r["task_id"], extra(r)) for r in responses] == [
        ("r1", "t1", {"task": task}),
        ("r2", "t1", {"zzz": 2, "task": task}),
        ("r3", "t1", {"task": "own key", "_task": task}),  # the response's own key stays
        ("r4", "t2", None),
    ]
    subs = {
        s["submission_id"]: (s["collection_id"], s["n_responses"])
        for s in rows(tables, "submissions")
    }
    assert subs == {"s1": ("c1", 2), "s2": ("c1", 1), "s3": ("c1", 1)}


# -- values nested deeper than Python's recursion limit ----------------------------------


def test_values_nested_as_deep_as_orjson_reads_are_written_as_json_text(tmp_path: Path) -> None:
    text = "[" * 1010 + "]" * 1010  # orjson reads 1024 levels; json.dumps stops near 1000
    record = (
        '{"submission_id":"s1","participant_id":"p1","batch_id":"b1","x_deep":DEEP,'
        '"tasks":[{"task_id":"t1","datapoint":{"d":DEEP},'
        '"responses":[{"id":"r","answer":[{"value":DEEP}]}]}]}'
    ).replace("DEEP", text)
    tables = read(tmp_path, [record.encode()])
    assert rows(tables, "tasks")[0]["datapoint"] == '{"d":' + text + "}"
    assert rows(tables, "answers")[0]["value"] == text
    assert rows(tables, "submissions")[0]["extra"] == '{"x_deep":' + text + "}"


def test_deep_values_are_written_without_touching_the_recursion_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recursion limit is interpreter-wide: raising it for one encode races with
    other threads' parses (RecursionError escaped under load_batch_exports). Deep values
    are written with an explicit stack instead, exactly as the stdlib would write them."""
    import json
    import sys

    from prolific_ingest.tables._arrow import dumps

    deep: object = {"k": "\u00e9\x01", "n": [1.5, None, True, 10**30, 1e-07]}
    for i in range(1015):
        deep = {f"l{i}": [deep, i, {}]} if i % 2 else [deep, {"x": -0.0}, []]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + 4000)
    try:
        expected = json.dumps(deep, ensure_ascii=False, separators=(",", ":"))
    finally:
        sys.setrecursionlimit(limit)

    def refuse(new_limit: int) -> None:
        raise AssertionError(f"setrecursionlimit({new_limit}) called")

    monkeypatch.setattr(sys, "setrecursionlimit", refuse)
    assert dumps(deep) == expected


# -- extra is the exact compact JSON text of the unknown keys ----------------------------


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


_AWKWARD_EXTRAS: list[dict[str, Any]] = [
    {"z": 1, "a": None, "m": [None, True, {"y": 1, "b": 2}]},  # key order, null kept
    {"text": 'line\nbreak ,\n, and \u2028 é \x00 \\ "'},  # what a separator could look like
    {"\x01{\x02": "\x02,\x03,\x01}\x04", "k\x04": [",\x01", "\x02,"]},  # ... or a marker
    {"small": 1e-05, "large": 1e16, "plain": 0.5, "one": 1.0, "int": 1},  # number forms
    {"deep": {"a": {"b": {"c": []}}}, "empty": {}},
]


@pytest.mark.parametrize("scatter", [False, True], ids=["every-row", "some-rows"])
@pytest.mark.parametrize("numbers", [True, False], ids=["number-forms", "by-shape"])
def test_extra_is_the_exact_compact_text_of_the_unknown_keys_at_every_level(
    tmp_path: Path, scatter: bool, numbers: bool
) -> None:
    """Key order, null values, newlines and number forms survive the block encoder.

    Without the number forms orjson writes differently (``1e-05``), the block path builds
    ``extra`` by shape; with them, from one dict per object."""
    awkward = _AWKWARD_EXTRAS if numbers else [e for e in _AWKWARD_EXTRAS if "small" not in e]
    records = []
    for i, unknown in enumerate(awkward * 3):
        if scatter and i % 2:
            unknown = {}
        answer = {"value": "v", **unknown}
        response = {"id": f"r{i}", "answer": [answer], **unknown}
        records.append(
            submission(f"s{i}", [task(f"t{i}", responses=[response], **unknown)], **unknown)
        )
    tables = read(tmp_path, records)
    for name in ("submissions", "tasks", "responses", "answers"):
        texts = [row["extra"] for row in rows(tables, name)]
        expected = [
            None if scatter and i % 2 else _compact(unknown)
            for i, unknown in enumerate(awkward * 3)
        ]
        assert texts == expected, name


def test_extra_keeps_integers_beyond_64_bits_exactly(tmp_path: Path) -> None:
    big = 2**70 + 1
    records = [submission("s1", huge=big, small=-(2**64)), submission("s2", x="y")]
    tables = read(tmp_path, records)
    assert [row["extra"] for row in rows(tables, "submissions")] == [
        f'{{"huge":{big},"small":{-(2**64)}}}',
        '{"x":"y"}',
    ]


def test_extra_built_by_shape_is_the_text_of_the_unknown_keys_dict() -> None:
    """The block path's ``extra`` (grouped by key tuple, no dict per item) against the
    per-item definition, over random objects: key order, nulls, nesting, odd keys."""
    import random

    from prolific_ingest.tables._arrow import extra_column, json_column
    from prolific_ingest.tables._records import _extra

    known = frozenset(["value", "unit"])
    values: list[Any] = [None, True, 0, -5, 2.5, 0.1, "x", 'é\n,\x01\x04"', [], {}]
    values += [[1, {"a": None}], {"z": [1.5]}, 2**63 - 1]
    keys = ["value", "unit", "a", "b", "confidence", "é", 'x"y', "\n", "\x02"]
    rnd = random.Random(7)
    grouped = 0
    for _ in range(400):
        shapes = [rnd.sample(keys, rnd.randint(0, 5)) for _ in range(rnd.randint(1, 6))]
        items = [
            {k: rnd.choice(values) for k in rnd.choice(shapes)} for _ in range(rnd.randint(0, 40))
        ]
        expected = json_column([_extra(item, known) for item in items])
        result = extra_column(items, known)
        if result is None:
            continue
        column, unknown = result
        column.validate(full=True)
        assert column.equals(expected), items
        assert unknown == {k for item in items for k in item if k not in known}
        grouped += 1
    assert grouped > 300
    # what the grouping hands back to the dict way: many shapes, numbers orjson writes
    # differently (1e-05), integers beyond 64 bits
    many = [{f"k{i}": i} for i in range(100)]
    assert extra_column(many, known) is None
    assert extra_column([{"a": 1e-05}], known) is None
    assert extra_column([{"a": 2**70}], known) is None
