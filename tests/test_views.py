"""Notebook conveniences: Export.wide() and option labels joined to answer values."""

from __future__ import annotations

import json
import zipfile

import pandas as pd

from prolific_ingest import read_export
from prolific_ingest.tables._views import option_labels, with_labels
from prolific_ingest.testing import ExportSpec, make_batch_export


def _export(tmp_path, **kw):
    path = tmp_path / "e.zip"
    truth = make_batch_export(path, ExportSpec(n_submissions=9, seed=3, **kw))
    return read_export(str(path)), truth


def test_option_labels_map_values_to_labels(tmp_path):
    exp, _ = _export(tmp_path)
    labels = option_labels(exp.instructions)
    with_options = exp.instructions.dropna(subset=["options"])
    assert len(with_options) > 0
    for instruction_id, options in zip(
        with_options["instruction_id"], with_options["options"], strict=True
    ):
        for option in json.loads(options):
            value = (
                option["value"] if isinstance(option["value"], str) else json.dumps(option["value"])
            )
            assert labels[(instruction_id, value)] == option["label"]


def test_answers_get_value_label_where_options_exist(tmp_path):
    exp, _ = _export(tmp_path)
    plain = exp.arrow.to_pandas()["answers"]
    labelled = with_labels(plain, exp.instructions)
    assert list(labelled.columns) == [*plain.columns, "value_label"]
    labels = option_labels(exp.instructions)
    mc = labelled[labelled["type"] == "multiple_choice"]
    assert len(mc) > 0
    for instruction_id, value, label in zip(
        mc["instruction_id"], mc["value"], mc["value_label"], strict=True
    ):
        assert label == labels.get((instruction_id, value))
    free = labelled[labelled["type"] == "free_text"]
    assert free["value_label"].isna().all()
    assert isinstance(labelled["value_label"].dtype, pd.ArrowDtype)


def test_wide_has_one_row_per_submission_task_and_a_column_per_instruction(tmp_path):
    exp, truth = _export(tmp_path)
    wide = exp.wide()
    pairs = {(r["submission_id"], r["task_id"]) for r in truth.responses}
    assert len(wide) == len(pairs)
    assert list(wide.columns[:3]) == ["submission_id", "participant_id", "task_id"]
    described = dict(
        zip(exp.instructions["instruction_id"], exp.instructions["description"], strict=True)
    )
    used = {r["instruction_id"] for r in truth.responses}
    assert len(wide.columns) == 3 + len(used)
    for instruction_id in used:
        assert described[instruction_id] in wide.columns or any(
            c.startswith(described[instruction_id]) for c in wide.columns
        )
    assert not wide.duplicated(subset=["submission_id", "task_id"]).any()


def test_wide_joins_multi_item_answers_in_order_and_uses_labels(tmp_path):
    exp, _ = _export(tmp_path)
    answers = with_labels(exp.answers, exp.instructions).dropna(subset=["value"])
    counts = answers.groupby(["submission_id", "task_id", "instruction_id"]).size()
    key = counts[counts > 1].index[0]
    submission_id, task_id, instruction_id = key
    items = answers[
        (answers["submission_id"] == submission_id)
        & (answers["task_id"] == task_id)
        & (answers["instruction_id"] == instruction_id)
    ].sort_values("answer_index")
    shown = items["value_label"].fillna(items["value"])
    expected = "; ".join(str(v) for v in shown if v is not pd.NA and v is not None)
    wide = exp.wide()
    row = wide[(wide["submission_id"] == submission_id) & (wide["task_id"] == task_id)]
    description = exp.instructions.set_index("instruction_id").loc[instruction_id, "description"]
    assert row[description].iloc[0] == expected
    raw = exp.wide(labels=False)
    raw_row = raw[(raw["submission_id"] == submission_id) & (raw["task_id"] == task_id)]
    assert raw_row[description].iloc[0] == "; ".join(
        str(v) for v in items["value"] if v is not pd.NA
    )


def test_wide_shows_file_names_for_uploads(tmp_path):
    exp, _ = _export(tmp_path)
    uploads = exp.answers[exp.answers["type"] == "file_upload"].dropna(subset=["file_name"])
    assert len(uploads) > 0
    first = uploads.iloc[0]
    wide = exp.wide()
    row = wide[
        (wide["submission_id"] == first["submission_id"]) & (wide["task_id"] == first["task_id"])
    ]
    description = exp.instructions.set_index("instruction_id").loc[
        first["instruction_id"], "description"
    ]
    assert first["file_name"] in row[description].iloc[0]


def test_wide_of_an_empty_export_has_the_key_columns(tmp_path):
    exp, _ = _export(tmp_path, empty=True)
    wide = exp.wide()
    assert len(wide) == 0
    assert list(wide.columns[:3]) == ["submission_id", "participant_id", "task_id"]


def test_export_answers_carry_value_label(tmp_path):
    exp, _ = _export(tmp_path)
    assert "value_label" in exp.answers.columns
    assert "value_label" not in exp.arrow.tables["answers"].column_names
    mc = exp.answers[(exp.answers["type"] == "multiple_choice") & exp.answers["value"].notna()]
    assert mc["value_label"].notna().any()


def test_options_with_object_array_and_non_ascii_values_get_labels(tmp_path):
    # answers.value holds compact JSON text for objects/arrays: the labels must match it.
    options = [
        {"label": "Object", "value": {"k": 1, "j": [2, "é"]}},
        {"label": "Array", "value": [1, 2.5]},
        {"label": "Number", "value": 3},
        {"label": "Text", "value": "naïve"},
    ]
    values = [{"k": 1, "j": [2, "é"]}, [1, 2.5], 3, "naïve", {"k": 2}]
    record = {
        "submission_id": "s1",
        "participant_id": "p1",
        "batch_id": "b1",
        "tasks": [
            {
                "task_id": "t1",
                "responses": [
                    {
                        "id": "r1",
                        "instruction_id": "i1",
                        "type": "multiple_choice",
                        "answer": [{"value": v} for v in values],
                    }
                ],
            }
        ],
    }
    metadata = {
        "id": "b1",
        "instructions": [
            {"id": "i1", "type": "multiple_choice", "description": "Pick", "options": options}
        ],
    }
    path = tmp_path / "e.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("responses-by-submission.jsonl", json.dumps(record))
        zf.writestr("batch.json", json.dumps(metadata))
    exp = read_export(str(path))
    assert exp.answers["value"].tolist() == [
        '{"k":1,"j":[2,"é"]}',
        "[1,2.5]",
        "3",
        "naïve",
        '{"k":2}',
    ]
    labels = [None if pd.isna(v) else v for v in exp.answers["value_label"]]
    assert labels == ["Object", "Array", "Number", "Text", None]
    assert exp.wide()["Pick"].tolist() == ['Object; Array; Number; Text; {"k":2}']
