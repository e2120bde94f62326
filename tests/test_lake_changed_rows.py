"""Rows whose values changed: rewritten in the load's one commit per table, latest export wins.

A load into an occupied owner partition appends its new rows; when rows it holds already
carry changed values, one overwrite (its predicate naming the partition and the first
key values of the new and changed rows) replaces those rows and adds the new ones. Every
engine then reads the same rows, each key once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

from prolific_ingest import read_dataset
from prolific_ingest.lake import _writer, write_export
from prolific_ingest.lake._layout import MERGE_KEYS
from prolific_ingest.lake._loads import COMMIT_EXPORT
from tests.test_lake_readers import _rows, engines_read_the_same_rows

B1: Any = [("batch_id", "=", "b1")]
TABLES = ("submissions", "tasks", "responses", "answers", "files", "instructions")


def _combined(*exports: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """One export made of the responses (answers, submissions) of several ``make_export``s."""
    out = dict(exports[0])
    for name in ("responses", "answers", "submissions"):
        out[name] = pa.concat_tables([e[name] for e in exports])
    return out


def _versions(lake: str) -> dict[str, int]:
    return {t: DeltaTable(f"{lake}/{t}").version() for t in TABLES}


def _assert_keys_once(lake: str) -> None:
    for table in TABLES:
        keys = list(
            dict.fromkeys(["batch_id", *MERGE_KEYS[table]])
        )  # a key is held once per owner partition
        rows = DeltaTable(f"{lake}/{table}").to_pyarrow_table(columns=keys)
        distinct = set(zip(*(rows.column(k).to_pylist() for k in keys), strict=True))
        assert len(distinct) == rows.num_rows, table


def _values(lake: str, table: str, key: str, column: str) -> dict[Any, Any]:
    rows = DeltaTable(f"{lake}/{table}").to_pyarrow_table(columns=[key, column], filters=B1)
    return dict(zip(rows.column(key).to_pylist(), rows.column(column).to_pylist(), strict=True))


def _answers(lake: str) -> dict[tuple[Any, Any], tuple[Any, Any]]:
    rows = DeltaTable(f"{lake}/answers").to_pyarrow_table(filters=B1).to_pylist()
    return {(r["response_id"], r["answer_index"]): (r["value"], r["export_id"]) for r in rows}


def test_a_reload_with_changed_values_keeps_every_row_once_with_the_latest_values(
    tmp_path: Path, make_export: Any
) -> None:
    lake = str(tmp_path / "lake")
    write_export(make_export("b1", 8, tag="old"), lake, kind="batch", owner_id="b1", export_id="e1")
    write_export(make_export("b2", 3, tag="old"), lake, kind="batch", owner_id="b2", export_id="f1")
    before = _versions(lake)
    # r00002-r00003 unchanged, r00004-r00007 changed, r00008-r00009 new.
    second = _combined(
        make_export("b1", 2, start=2, tag="old"), make_export("b1", 6, start=4, tag="new")
    )
    result = write_export(second, lake, kind="batch", owner_id="b1", export_id="e2")

    assert result.modes["answers"] == result.modes["responses"] == "merge"
    # One commit per table for the load: the new and the changed rows together.
    assert result.versions == {t: v + 1 for t, v in before.items()}
    _assert_keys_once(lake)
    answers = _answers(lake)
    assert len(answers) == 2 * 10
    for i in range(10):
        for j in range(2):
            # Unchanged rows are not rewritten: they keep the export that wrote them.
            want = ("old", "e1") if i < 4 else ("new", "e2")
            assert answers[(f"r{i:05d}", j)] == want, (i, j)
    extra = _values(lake, "responses", "response_id", "extra")
    assert extra["r00003"] == '{"tag":"old"}' and extra["r00004"] == '{"tag":"new"}'
    for table in TABLES:
        uri = f"{lake}/{table}"
        want = _rows(DeltaTable(uri).to_pyarrow_table())
        assert _rows(read_dataset(lake, table, as_arrow=True)) == want
        engines = engines_read_the_same_rows(uri, want)
        assert {"polars.read_delta", "duckdb", "daft"} <= set(engines)
    # The load's commit carries the export id, like every other commit of the lake.
    (entry,) = DeltaTable(f"{lake}/answers").history(1)
    assert entry[COMMIT_EXPORT] == "e2"
    assert entry["operationParameters"]["mode"] == "Overwrite"


def test_changed_rows_rewrite_only_the_files_that_hold_them(
    tmp_path: Path, make_export: Any
) -> None:
    lake = str(tmp_path / "lake")
    write_export(make_export("b1", 4, tag="old"), lake, kind="batch", owner_id="b1", export_id="e1")
    write_export(
        make_export("b1", 4, start=4, tag="old"), lake, kind="batch", owner_id="b1", export_id="e2"
    )
    write_export(make_export("b2", 3, tag="old"), lake, kind="batch", owner_id="b2", export_id="f1")
    files = set(DeltaTable(f"{lake}/responses").file_uris())
    write_export(
        make_export("b1", 1, start=5, tag="new"), lake, kind="batch", owner_id="b1", export_id="e3"
    )
    after = set(DeltaTable(f"{lake}/responses").file_uris())
    gone = files - after
    assert len(gone) == 1 and len(after - files) == 1  # the file holding r00005, rewritten
    (rewritten,) = gone
    assert "batch_id=b1" in rewritten
    assert _values(lake, "responses", "response_id", "extra")["r00005"] == '{"tag":"new"}'
    assert _values(lake, "responses", "response_id", "export_id")["r00001"] == "e1"
    _assert_keys_once(lake)


def test_a_quoted_key_and_null_key_components_are_rewritten_exactly(
    tmp_path: Path, make_export: Any
) -> None:
    lake = str(tmp_path / "lake")

    def export(tag: str) -> dict[str, pa.Table]:
        tables = make_export("b1", 3, tag=tag)
        ids = pa.array(["it's", "o''k", "plain"])
        responses = tables["responses"]
        tables["responses"] = responses.set_column(
            responses.schema.get_field_index("response_id"), "response_id", ids
        )
        answers = tables["answers"]
        rid = pa.array(["it's", "it's", "o''k", "o''k", None, None])
        index = pa.array([0, None, 0, 1, 0, None], pa.int64())
        answers = answers.set_column(
            answers.schema.get_field_index("response_id"), "response_id", rid
        )
        tables["answers"] = answers.set_column(
            answers.schema.get_field_index("answer_index"), "answer_index", index
        )
        return tables

    write_export(export("old"), lake, kind="batch", owner_id="b1", export_id="e1")
    before = _versions(lake)
    write_export(export("new"), lake, kind="batch", owner_id="b1", export_id="e2")
    assert _versions(lake) == {t: v + 1 for t, v in before.items()}
    answers = _answers(lake)
    assert answers == dict.fromkeys(
        (("it's", 0), ("it's", None), ("o''k", 0), ("o''k", 1), (None, 0), (None, None)),
        ("new", "e2"),
    )
    extra = _values(lake, "responses", "response_id", "extra")
    assert extra == dict.fromkeys(["it's", "o''k", "plain"], '{"tag":"new"}')
    want = _rows(DeltaTable(f"{lake}/answers").to_pyarrow_table())
    engines_read_the_same_rows(f"{lake}/answers", want)


def test_rows_the_export_no_longer_carries_are_kept_beside_rewritten_ones(
    tmp_path: Path, make_export: Any
) -> None:
    lake = str(tmp_path / "lake")
    write_export(make_export("b1", 2, tag="old"), lake, kind="batch", owner_id="b1", export_id="e1")
    later = make_export("b1", 1, tag="new")
    answers = later["answers"]  # r00000: answer 0 changed, answer 1 absent, answer 2 new
    later["answers"] = answers.set_column(
        answers.schema.get_field_index("answer_index"), "answer_index", pa.array([0, 2], pa.int64())
    )
    write_export(later, lake, kind="batch", owner_id="b1", export_id="e2")
    assert _answers(lake) == {
        ("r00000", 0): ("new", "e2"),
        ("r00000", 1): ("old", "e1"),
        ("r00000", 2): ("new", "e2"),
        ("r00001", 0): ("old", "e1"),
        ("r00001", 1): ("old", "e1"),
    }


def test_more_keys_than_one_predicate_holds_split_the_rewrite_into_bounded_commits(
    tmp_path: Path, make_export: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_writer, "REWRITE_KEYS", 2)
    lake = str(tmp_path / "lake")
    write_export(make_export("b1", 6, tag="old"), lake, kind="batch", owner_id="b1", export_id="e1")
    before = _versions(lake)
    # Responses: 4 changed + 2 new first keys (> 2): one append, then 4 / 2 rewrites.
    second = _combined(make_export("b1", 2, tag="old"), make_export("b1", 6, start=2, tag="new"))
    # ... and a changed response gains an answer: appended first, then rewritten with it.
    extra_answer = second["answers"].slice(4, 1)  # (r00002, 0)
    extra_answer = extra_answer.set_column(
        extra_answer.schema.get_field_index("answer_index"), "answer_index", pa.array([2])
    )
    second["answers"] = pa.concat_tables([second["answers"], extra_answer])
    result = write_export(second, lake, kind="batch", owner_id="b1", export_id="e2")
    assert _answers(lake)[("r00002", 2)] == ("new", "e2")
    assert result.versions["responses"] == before["responses"] + 1 + 2
    assert result.versions["answers"] == before["answers"] + 1 + 2
    # Submissions: 2 changed + 1 new: one append, one rewrite.
    assert result.versions["submissions"] == before["submissions"] + 2
    history = DeltaTable(f"{lake}/responses").history(3)
    assert [h["operationParameters"]["mode"] for h in history] == ["Overwrite"] * 2 + ["Append"]
    assert all(h[COMMIT_EXPORT] == "e2" for h in history)
    _assert_keys_once(lake)
    values = _values(lake, "responses", "response_id", "extra")
    assert values["r00001"] == '{"tag":"old"}'
    assert {values[f"r{i:05d}"] for i in range(2, 8)} == {'{"tag":"new"}'}
    new = pc.equal(DeltaTable(f"{lake}/answers").to_pyarrow_table()["value"], "new")
    assert pc.sum(new).as_py() == 13


def test_a_rewrite_keeps_the_values_of_columns_only_the_table_has(
    tmp_path: Path, make_export: Any
) -> None:
    from deltalake import write_deltalake

    lake = str(tmp_path / "lake")
    write_export(make_export("b1", 3, tag="old"), lake, kind="batch", owner_id="b1", export_id="e1")
    # A newer library version evolved the table with a column this one does not write.
    uri = f"{lake}/responses"
    rows = DeltaTable(uri).to_pyarrow_table()
    checksums = pa.array([f"c-{r}" for r in rows.column("response_id").to_pylist()])
    write_deltalake(
        uri,
        rows.append_column("checksum", checksums),
        mode="overwrite",
        schema_mode="merge",
        partition_by=["batch_id"],
    )
    write_export(make_export("b1", 2, tag="new"), lake, kind="batch", owner_id="b1", export_id="e2")
    assert _values(lake, "responses", "response_id", "extra") == {
        "r00000": '{"tag":"new"}',
        "r00001": '{"tag":"new"}',
        "r00002": '{"tag":"old"}',
    }
    assert _values(lake, "responses", "response_id", "checksum") == {
        r: f"c-{r}" for r in ("r00000", "r00001", "r00002")
    }
