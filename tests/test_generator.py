"""The archive generator: member consistency, every variation, ground truth, memory."""

from __future__ import annotations

import dataclasses
import json
import tracemalloc
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from prolific_ingest.testing import (
    INSTRUCTION_TYPES,
    ExportSpec,
    make_batch_export,
    make_collection_export,
)

KNOWN_RESPONSE_KEYS = {"id", "created_at", "instruction_id", "type", "answer"}


def _lines(zf: zipfile.ZipFile, name: str) -> list[dict[str, Any]]:
    raw = zf.read(name).decode("utf-8-sig")
    return [json.loads(line) for line in raw.split("\n") if line.strip()]


def _members(zf: zipfile.ZipFile) -> set[str]:
    return {i.filename for i in zf.infolist() if not i.is_dir()}


def _table_value(v: Any) -> tuple[str | None, str]:
    if v is None:
        return None, "null"
    if isinstance(v, str):
        return v, "string"
    return json.dumps(v), "boolean" if isinstance(v, bool) else "number"


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    path = tmp_path_factory.mktemp("gen") / "batch.zip"
    return path, make_batch_export(path, ExportSpec(n_submissions=12, seed=3))


def test_batch_members_and_counts(batch: tuple[Path, Any]) -> None:
    path, gt = batch
    with zipfile.ZipFile(path) as zf:
        names = _members(zf)
        assert {"responses-by-submission.jsonl", "responses-by-task.jsonl", "batch.json"} <= names
        assert "README.md" in names
        subs = _lines(zf, "responses-by-submission.jsonl")
        by_task = _lines(zf, "responses-by-task.jsonl")
        meta = json.loads(zf.read("batch.json"))
        assert gt.jsonl_bytes == zf.getinfo("responses-by-submission.jsonl").file_size
    assert gt.kind == "batch"
    assert meta["id"] == gt.owner_id
    assert len(subs) == gt.counts["submissions"] == 12
    responses = [r for s in subs for t in s["tasks"] for r in t["responses"]]
    assert len(responses) == gt.counts["responses"] == len(gt.responses)
    assert sum(len(r["answer"]) for r in responses) == gt.counts["answers"]
    assert len({t["task_id"] for s in subs for t in s["tasks"]}) == gt.counts["tasks"]
    assert len(meta["instructions"]) == gt.counts["instructions"] == len(INSTRUCTION_TYPES)
    # by-task holds exactly the same responses, with the same content
    flat_by_task = {r["id"]: r for t in by_task for r in t["responses"]}
    assert set(flat_by_task) == {r["id"] for r in responses}
    for s in subs:
        for t in s["tasks"]:
            for r in t["responses"]:
                other = flat_by_task[r["id"]]
                assert other["submission_id"] == s["submission_id"]
                assert other["participant_id"] == s["participant_id"]
                assert other["study_id"] == s["study_id"]
                assert {k: other[k] for k in r} == r
    # tasks carry the same task-level fields in both members
    task_fields = {t["task_id"]: {k: v for k, v in t.items() if k != "responses"} for t in by_task}
    for s in subs:
        for t in s["tasks"]:
            expected = {k: v for k, v in t.items() if k != "responses"}
            assert task_fields[t["task_id"]] == {**expected, "batch_id": gt.owner_id}


def test_instruction_types_and_definitions(batch: tuple[Path, Any]) -> None:
    path, gt = batch
    with zipfile.ZipFile(path) as zf:
        meta = json.loads(zf.read("batch.json"))
    types = {i["type"] for i in meta["instructions"]}
    assert types == set(INSTRUCTION_TYPES)
    assert "likert_slider_v9" in types
    assert "video_narration" in types
    assert {r["type"] for r in gt.responses} == set(INSTRUCTION_TYPES)
    ids = {i["id"] for i in meta["instructions"]}
    assert {r["instruction_id"] for r in gt.responses} == ids
    assert [i["instruction_id"] for i in gt.instructions] == [i["id"] for i in meta["instructions"]]
    assert meta["total_instruction_count"] == len(ids)
    for key in ("name", "status", "workspace_id", "created_at", "created_by", "task_details"):
        assert key in meta


def test_ground_truth_answers_match_archive(batch: tuple[Path, Any]) -> None:
    path, gt = batch
    with zipfile.ZipFile(path) as zf:
        subs = _lines(zf, "responses-by-submission.jsonl")
    expected = {(a["response_id"], a["answer_index"]): a for a in gt.answers}
    seen = 0
    for s in subs:
        for t in s["tasks"]:
            for r in t["responses"]:
                for i, item in enumerate(r["answer"]):
                    row = expected[(r["id"], i)]
                    assert (row["value"], row["value_type"]) == _table_value(item.get("value"))
                    assert row["task_id"] == t["task_id"]
                    assert row["unit"] == item.get("unit")
                    assert row["explanation"] == item.get("explanation")
                    documented = {"value", "unit", "explanation", "file_key", "file_name"}
                    documented |= {"file_size_mb", "content_type"}
                    extra = {k: v for k, v in item.items() if k not in documented}
                    assert row["extra"] == (extra or None)
                    seen += 1
    assert seen == len(gt.answers)


def test_unknown_type_answers_go_to_extra(batch: tuple[Path, Any]) -> None:
    _, gt = batch
    rows = [a for a in gt.answers if a["type"] == "likert_slider_v9"]
    assert rows
    for row in rows:
        assert row["value"] is None
        assert row["value_type"] == "null"
        assert {"score", "rationale"} <= set(row["extra"])


def test_mixed_value_types_and_unicode(batch: tuple[Path, Any]) -> None:
    _, gt = batch
    kinds = {a["value_type"] for a in gt.answers}
    assert {"string", "number", "boolean"} <= kinds
    values = [a["value"] for a in gt.answers if a["value_type"] == "string"]
    text = "".join(values) + json.dumps([t["datapoint"] for t in gt.tasks], ensure_ascii=False)
    for needle in ("😀", "中", "ש", "\u0301", '"', "\\", "\n"):
        assert needle in text, needle
    numbers = [a["value"] for a in gt.answers if a["value_type"] == "number"]
    assert all(json.dumps(json.loads(n)) == n for n in numbers)


def test_files_match_answers(batch: tuple[Path, Any]) -> None:
    path, gt = batch
    with zipfile.ZipFile(path) as zf:
        file_members = {n for n in _members(zf) if n.startswith("files/")}
        assert file_members == {f["path"] for f in gt.files}
        for f in gt.files:
            assert zf.getinfo(f["path"]).file_size == f["size_bytes"]
            assert f["path"] == f"files/{f['submission_id']}/{f['file_key']}/{f['file_name']}"
    uploads = [a for a in gt.answers if a["file_key"] is not None]
    assert {a["file_path"] for a in uploads} == {f["path"] for f in gt.files}
    sizes = {f["path"]: f["size_bytes"] for f in gt.files}
    for a in uploads:
        assert a["file_size_mb"] == pytest.approx(sizes[a["file_path"]] / 1048576, abs=1e-6)


def test_deterministic_from_seed(tmp_path: Path) -> None:
    a = make_batch_export(tmp_path / "a.zip", ExportSpec(n_submissions=4, seed=7))
    b = make_batch_export(tmp_path / "b.zip", ExportSpec(n_submissions=4, seed=7))
    c = make_batch_export(tmp_path / "c.zip", ExportSpec(n_submissions=4, seed=8))
    assert a.answers == b.answers
    assert a.owner_id == b.owner_id
    with zipfile.ZipFile(tmp_path / "a.zip") as za, zipfile.ZipFile(tmp_path / "b.zip") as zb:
        name = "responses-by-submission.jsonl"
        assert za.read(name) == zb.read(name)
    assert c.answers != a.answers


def test_created_at_spread_and_ordered(batch: tuple[Path, Any]) -> None:
    _, gt = batch
    stamps = [datetime.fromisoformat(r["created_at"]) for r in gt.responses]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)
    assert stamps[0] >= datetime(2026, 11, 1, tzinfo=UTC)
    assert stamps[-1] - stamps[0] > timedelta(days=2)


def test_format_variations(tmp_path: Path) -> None:
    path = tmp_path / "v.zip"
    gt = make_batch_export(
        path,
        ExportSpec(
            n_submissions=6, root_folder="export-2026", crlf=True, bom=True, blank_lines=True
        ),
    )
    with zipfile.ZipFile(path) as zf:
        names = _members(zf)
        assert all(n.startswith("export-2026/") for n in names)
        raw = zf.read("export-2026/responses-by-submission.jsonl")
        assert raw.startswith(b"\xef\xbb\xbf")
        body = raw[3:]
        assert body.count(b"\n") == body.count(b"\r\n")
        assert b"\r\n\r\n" in body
        records = _lines(zf, "export-2026/responses-by-submission.jsonl")
    assert len(records) == gt.counts["submissions"] == 6
    assert all(f["path"].startswith("export-2026/files/") for f in gt.files)
    assert gt.jsonl_bytes == len(raw)


def test_some_lines_ascii_escaped(batch: tuple[Path, Any]) -> None:
    path, _ = batch
    with zipfile.ZipFile(path) as zf:
        lines = zf.read("responses-by-submission.jsonl").split(b"\n")
    assert any(line.isascii() and b"\\u" in line for line in lines if line)
    assert any(not line.isascii() for line in lines)


def test_huge_line(tmp_path: Path) -> None:
    path = tmp_path / "h.zip"
    make_batch_export(path, ExportSpec(n_submissions=2, huge_line_bytes=3_000_000))
    with zipfile.ZipFile(path) as zf:
        lines = zf.read("responses-by-submission.jsonl").split(b"\n")
    assert len(lines[0]) > 3_000_000
    assert len(lines[1]) < 100_000


def test_omit_optional_and_no_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "o.zip"
    gt = make_batch_export(
        path, ExportSpec(n_submissions=4, omit_optional=True, unknown_keys=False)
    )
    with zipfile.ZipFile(path) as zf:
        subs = _lines(zf, "responses-by-submission.jsonl")
    for s in subs:
        assert set(s) == {"submission_id", "participant_id", "batch_id", "tasks"}
        for t in s["tasks"]:
            assert set(t) == {"task_id", "responses"}
            for r in t["responses"]:
                assert set(r) == KNOWN_RESPONSE_KEYS
    assert all(s["study_id"] is None and s["extra"] is None for s in gt.submissions)
    assert all(r["extra"] is None for r in gt.responses)
    assert all(t["datapoint"] is None and t["task_group_id"] is None for t in gt.tasks)


def test_unknown_keys_at_every_level(batch: tuple[Path, Any]) -> None:
    _, gt = batch
    for table in ("submissions", "tasks", "responses", "answers"):
        assert any(row["extra"] for row in getattr(gt, table)), table


def test_no_uploads(tmp_path: Path) -> None:
    path = tmp_path / "n.zip"
    gt = make_batch_export(path, ExportSpec(n_submissions=3, uploads=False))
    with zipfile.ZipFile(path) as zf:
        assert not [n for n in zf.namelist() if n.startswith("files")]
    assert gt.counts["files"] == 0
    assert gt.files == []
    uploads = [a for a in gt.answers if a["type"] == "file_upload"]
    assert uploads
    assert all(a["file_path"] is None and a["file_key"] for a in uploads)


@pytest.mark.parametrize("mode", ["empty", "omit_jsonl"])
def test_no_responses(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "e.zip"
    gt = make_batch_export(path, ExportSpec(**{mode: True}))
    with zipfile.ZipFile(path) as zf:
        names = _members(zf)
        if mode == "empty":
            assert zf.read("responses-by-submission.jsonl") == b""
            assert zf.read("responses-by-task.jsonl") == b""
        else:
            assert not any(n.endswith(".jsonl") for n in names)
        assert "batch.json" in names
    assert gt.counts == {**dict.fromkeys(gt.counts, 0), "instructions": len(INSTRUCTION_TYPES)}


def test_flat_layout(tmp_path: Path) -> None:
    path = tmp_path / "f.zip"
    gt = make_batch_export(path, ExportSpec(n_submissions=5, layout="flat"))
    with zipfile.ZipFile(path) as zf:
        by_sub = _lines(zf, "responses-by-submission.jsonl")
        by_task = _lines(zf, "responses-by-task.jsonl")
    assert len(by_sub) == len(by_task) == gt.counts["responses"]
    required = {"id", "created_at", "batch_id", "participant_id", "task_id", "response"}
    for rec in by_sub:
        assert required <= set(rec)
        assert set(rec["response"]) == {"instruction_id", "type", "answer"}
    assert {r["id"] for r in by_sub} == {r["id"] for r in by_task}
    assert [r["task_id"] for r in by_task] == sorted(
        (r["task_id"] for r in by_task), key=[r["task_id"] for r in by_task].index
    )
    assert all(s["study_id"] is None and s["extra"] is None for s in gt.submissions)
    extras = {k for rec in by_sub for k in rec} - required - {"submission_id", "metadata"}
    assert extras == {"time_spent_ms"}


def test_filters(tmp_path: Path) -> None:
    full = make_batch_export(None, ExportSpec(n_submissions=12, seed=5))
    study = full.submissions[0]["study_id"]
    by_study = make_batch_export(
        tmp_path / "s.zip", ExportSpec(n_submissions=12, seed=5), study_id=study
    )
    assert by_study.counts["submissions"] == sum(s["study_id"] == study for s in full.submissions)
    assert 0 < by_study.counts["submissions"] < 12
    stamps = sorted(r["created_at"] for r in full.responses)
    since = datetime.fromisoformat(stamps[30])
    until = datetime.fromisoformat(stamps[100])
    window = make_batch_export(
        tmp_path / "w.zip", ExportSpec(n_submissions=12, seed=5), since=since, until=until
    )
    assert window.counts["responses"] == 70
    assert {r["response_id"] for r in window.responses} == {
        r["response_id"]
        for r in full.responses
        if since <= datetime.fromisoformat(r["created_at"]) < until
    }
    with zipfile.ZipFile(tmp_path / "w.zip") as zf:
        subs = _lines(zf, "responses-by-submission.jsonl")
        by_task = _lines(zf, "responses-by-task.jsonl")
    assert len(subs) == window.counts["submissions"]
    assert sum(len(t["responses"]) for t in by_task) == 70
    assert all(t["responses"] for s in subs for t in s["tasks"])


def test_collection_export(tmp_path: Path) -> None:
    path = tmp_path / "c.zip"
    gt = make_collection_export(path, ExportSpec(n_submissions=5, seed=2))
    with zipfile.ZipFile(path) as zf:
        names = _members(zf)
        assert {"responses.jsonl", "collection.json", "README.md"} <= names
        assert "responses-by-task.jsonl" not in names
        lines = _lines(zf, "responses.jsonl")
        meta = json.loads(zf.read("collection.json"))
    assert gt.kind == "collection"
    assert meta["id"] == gt.owner_id
    assert len(lines) == 5
    assert all(rec["collection_id"] == gt.owner_id for rec in lines)
    assert sum(len(rec["responses"]) for rec in lines) == gt.counts["responses"] == 5 * 7
    assert gt.tasks == []
    assert gt.counts["tasks"] == 0
    assert all(r["task_id"] is None for r in gt.responses)
    assert all("collection_id" in s for s in gt.submissions)
    flat = make_collection_export(tmp_path / "cf.zip", ExportSpec(n_submissions=2, layout="flat"))
    with zipfile.ZipFile(tmp_path / "cf.zip") as zf:
        recs = _lines(zf, "responses.jsonl")
    assert len(recs) == flat.counts["responses"]
    assert all("collection_id" in r and "response" in r and "task_id" not in r for r in recs)


def test_bad_options_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="layout"):
        make_batch_export(tmp_path / "x.zip", ExportSpec(layout="v2"))
    with pytest.raises(ValueError, match="free_text"):
        make_batch_export(
            tmp_path / "x.zip", ExportSpec(instruction_types=("file_upload",), huge_line_bytes=9)
        )


def test_counts_without_rows(tmp_path: Path) -> None:
    kept = make_batch_export(None, ExportSpec(n_submissions=7, seed=9))
    light = make_batch_export(
        tmp_path / "l.zip", ExportSpec(n_submissions=7, seed=9), keep_rows=False
    )
    assert light.counts == kept.counts
    assert light.answers == []
    assert light.responses == []


def _peak(path: Path, n: int) -> tuple[int, Any]:
    tracemalloc.start()
    try:
        gt = make_batch_export(
            path,
            ExportSpec(n_submissions=n, uploads=False, compression=zipfile.ZIP_STORED),
            keep_rows=False,
        )
        return tracemalloc.get_traced_memory()[1], gt
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_bounded_memory(tmp_path: Path) -> None:
    small_peak, small = _peak(tmp_path / "small.zip", 40)
    big_peak, big = _peak(tmp_path / "big.zip", 200)
    assert big.jsonl_bytes > 4 * small.jsonl_bytes
    assert big.counts["responses"] == 200 * 3 * len(INSTRUCTION_TYPES)
    # memory does not grow with the size of the export ...
    assert big_peak < small_peak * 1.3 + 64 * 1024
    # ... and stays far below the size of the data written
    assert big_peak < big.jsonl_bytes / 5
    with zipfile.ZipFile(tmp_path / "big.zip") as zf:
        assert zf.getinfo("responses-by-submission.jsonl").file_size == big.jsonl_bytes


def test_spec_is_frozen_hashable_and_checked_when_built() -> None:
    spec = ExportSpec(instruction_types=["free_text"], study_ids=["s1", "s2"])
    assert spec.instruction_types == ("free_text",)
    assert spec.study_ids == ("s1", "s2")
    assert hash(spec) == hash(ExportSpec(instruction_types=("free_text",), study_ids=("s1", "s2")))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 1  # type: ignore[misc]
    with pytest.raises(ValueError, match="layout"):
        ExportSpec(layout="v2")
    with pytest.raises(TypeError):
        ExportSpec(5)  # type: ignore[misc]  # keywords only


@pytest.mark.parametrize(
    ("make", "id_keyword"),
    [(make_batch_export, "batch_id"), (make_collection_export, "collection_id")],
)
def test_the_old_keywords_write_the_same_archive_with_a_deprecation_warning(
    tmp_path: Path, make: Any, id_keyword: str
) -> None:
    options = {"n_submissions": 4, "seed": 7, "crlf": True, "root_folder": "x"}
    with pytest.warns(DeprecationWarning, match=r"ExportSpec\(\.\.\.\).* go in 0\.3") as caught:
        old = make(tmp_path / "old.zip", **options, **{id_keyword: "owner-1"}, keep_rows=True)
    assert caught[0].filename == __file__  # points at the caller
    new = make(tmp_path / "new.zip", ExportSpec(**options, owner_id="owner-1"))
    assert old.owner_id == new.owner_id == "owner-1"
    assert old.answers == new.answers
    assert _member_bytes(tmp_path / "old.zip") == _member_bytes(tmp_path / "new.zip")


def _member_bytes(path: Path) -> list[tuple[str, int, bytes]]:
    """Each member's name, compression and bytes (its timestamp is the time of writing)."""
    with zipfile.ZipFile(path) as zf:
        return [(i.filename, i.compress_type, zf.read(i)) for i in zf.infolist()]


def test_a_spec_and_old_keywords_together_or_unknown_keywords_are_refused(
    tmp_path: Path,
) -> None:
    with pytest.raises(TypeError, match="not both"):
        make_batch_export(None, ExportSpec(), n_submissions=3)
    with pytest.raises(TypeError, match="'not_an_option'"):
        make_batch_export(None, not_an_option=1)
    with pytest.raises(TypeError, match="'tasks_per_submission'"):
        make_collection_export(None, tasks_per_submission=2)
    with pytest.raises(TypeError, match="'collection_id'"):
        make_batch_export(None, collection_id="c")
    assert not (tmp_path / "x.zip").exists()
