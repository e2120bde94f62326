"""Reuse safety, incremental scope, archive identity and batch reports."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from prolific_ingest import (
    ExportFilter,
    ExportRef,
    LakeTarget,
    load_batch_export,
    load_batch_exports,
    read_dataset,
    read_export,
)
from prolific_ingest.cli import main as cli_main
from prolific_ingest.exports import find_reusable_job, job_from_body

REF = ExportRef("batch", "b1")
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("item", "known"),
    [
        ({"export_id": "e", "status": "complete", "filter": None}, True),
        ({"export_id": "e", "status": "complete", "filter": {}}, True),
        ({"export_id": "e", "status": "complete", "filter": {"study_id": "s"}}, True),
        ({"export_id": "e", "status": "complete"}, False),
        ({"export_id": "e", "status": "complete", "filters": {"study_id": "s"}}, False),
        ({"export_id": "e", "status": "complete", "filter": {"study": "s"}}, False),
    ],
)
def test_a_job_whose_filter_is_not_stated_is_never_reused(item, known):
    job = job_from_body(
        REF, {**item, "created_at": "2026-11-29T11:59:00Z"}, export_id=None, filter=None
    )
    assert job is not None
    assert job.filter_known is known
    reused = find_reusable_job([job], ExportFilter(), None, NOW)
    expected_reuse = known and not item.get("filter")
    assert (reused is not None) is expected_reuse


def test_status_strings_are_case_insensitive():
    job = job_from_body(
        REF,
        {"export_id": "e", "status": "COMPLETE", "url": "https://x/y"},
        export_id=None,
        filter=ExportFilter(),
    )
    assert job is not None and job.is_complete


def test_until_rounds_up_and_since_rounds_down_to_whole_seconds():
    flt = ExportFilter.coerce(since="2026-11-01T10:00:00.900Z", until="2026-11-01T10:00:00.900Z")
    assert flt.since == datetime(2026, 11, 1, 10, 0, 0, tzinfo=UTC)
    assert flt.until == datetime(2026, 11, 1, 10, 0, 1, tzinfo=UTC)
    assert ExportFilter.coerce(until="2026-11-01T10:00:00Z").until == datetime(
        2026, 11, 1, 10, 0, tzinfo=UTC
    )


def test_export_loaded_by_id_keeps_its_own_filter_and_is_not_reused_for_another(
    prolific_emulator, conn
):
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=31, n_submissions=12)
    study = emu.ground_truth(batch_id).submissions[0]["study_id"]
    from prolific_ingest import ProlificClient, Settings, request_export

    client = ProlificClient(Settings.from_env(token=emu.token, base_url=emu.base_url))
    job = request_export(client, ExportRef("batch", batch_id), ExportFilter(study_id=study))
    by_id = load_batch_export(batch_id, export_id=job.export_id, **conn)
    assert by_id.filter == ExportFilter(study_id=study)  # learnt from the job list
    full = load_batch_export(batch_id, **conn)  # must not be answered by the study export
    assert full.export_id != job.export_id
    assert len(full.submissions) == emu.ground_truth(batch_id).counts["submissions"]


def test_incremental_watermark_is_scoped_to_the_study(prolific_emulator, conn, tmp_path):
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=32, n_submissions=12)
    study = emu.ground_truth(batch_id).submissions[0]["study_id"]
    out = str(tmp_path / "lake")
    load_batch_export(batch_id, output=LakeTarget(out, incremental=True), study_id=study, **conn)
    emu.clear_requests()
    load_batch_export(batch_id, output=LakeTarget(out, incremental=True), **conn)
    post = next(r for r in emu.requests if r.method == "POST")
    assert "from" not in post.query, "a study-scoped watermark must not limit an unscoped run"
    back = read_dataset(out, "responses", ExportRef("batch", batch_id))
    assert len(back) == emu.ground_truth(batch_id).counts["responses"]


def test_read_export_of_cache_entries_has_distinct_export_ids(prolific_emulator, conn, tmp_path):
    emu = prolific_emulator
    a = load_batch_export(emu.add_batch(seed=33, n_submissions=3), **conn)
    b = load_batch_export(emu.add_batch(seed=34, n_submissions=4), **conn)
    ra, rb = read_export(a.archive_url), read_export(b.archive_url)
    assert (ra.export_id, rb.export_id) == (a.export_id, b.export_id)
    assert ra.filter is None
    out = str(tmp_path / "lake")
    assert not ra.to_lake(out).skipped
    assert not rb.to_lake(out).skipped
    explicit = read_export(a.archive_url, export_id="mine")
    assert explicit.export_id == "mine"


def test_read_export_named_archive_without_manifest_uses_a_checksum(tmp_path):
    from prolific_ingest.testing import ExportSpec, make_batch_export

    path = tmp_path / "archive.zip"
    make_batch_export(path, ExportSpec(n_submissions=2, seed=1))
    exp = read_export(str(path))
    assert exp.export_id.startswith("sha256-")
    assert read_export(str(path)).export_id == exp.export_id


def test_unexpected_errors_of_one_batch_are_reported_not_raised(prolific_emulator, conn, tmp_path):
    emu = prolific_emulator
    ids = [emu.add_batch(seed=40 + i, n_submissions=2) for i in range(2)]
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    report = load_batch_exports(ids, **dict(conn, cache=str(blocker / "cache")))
    assert sorted(report.errors) == sorted(ids)
    assert all(isinstance(e, Exception) for e in report.errors.values())


def test_cli_rejects_export_id_with_several_ids(capsys):
    assert cli_main(["batch", "a", "b", "--export-id", "e"]) == 2
    assert "--export-id" in capsys.readouterr().err


def test_read_dataset_recounts_n_responses_after_a_windowed_export(
    prolific_emulator, conn, tmp_path
):
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=35, n_submissions=10)
    truth = emu.ground_truth(batch_id)
    out = str(tmp_path / "lake")
    load_batch_export(batch_id, output=out, **conn)
    times = sorted(r["created_at"] for r in truth.responses)
    load_batch_export(batch_id, output=out, since=times[len(times) // 2], **conn)
    subs = read_dataset(out, "submissions", ExportRef("batch", batch_id))
    assert int(subs["n_responses"].sum()) == truth.counts["responses"]
    expected = {s["submission_id"]: s["n_responses"] for s in truth.submissions}
    assert dict(zip(subs["submission_id"], subs["n_responses"], strict=True)) == expected


def test_offline_honours_an_explicit_max_age(prolific_emulator, conn):
    from prolific_ingest import CacheMissError

    batch_id = prolific_emulator.add_batch(seed=36, n_submissions=2)
    load_batch_export(batch_id, **conn)
    assert load_batch_export(batch_id, offline=True, **conn).batch_id == batch_id
    with pytest.raises(CacheMissError):
        load_batch_export(batch_id, offline=True, max_age=0, **conn)


def test_incremental_requests_a_new_export_by_default(prolific_emulator, conn, tmp_path):
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=37, n_submissions=3)
    out = str(tmp_path / "lake")
    first = load_batch_export(batch_id, output=LakeTarget(out, incremental=True), **conn)
    second = load_batch_export(batch_id, output=LakeTarget(out, incremental=True), **conn)
    third = load_batch_export(batch_id, output=LakeTarget(out, incremental=True), **conn)
    assert len({first.export_id, second.export_id, third.export_id}) == 3
