"""Data lakes end to end: the emulator plus a real S3 API (moto server) through s3fs."""

from __future__ import annotations

import pytest

from prolific_ingest import (
    NotFoundError,
    PermissionDeniedError,
    committed_exports,
    load_batch_export,
    load_batch_exports,
    read_dataset,
)


def _ids(frame, column):
    return sorted(frame[column].astype(str))


def test_same_export_twice_leaves_one_copy_and_overwrite_replaces_it(prolific_emulator, conn, s3):
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=21, n_submissions=6)
    out = s3.url("lake")
    opts = s3.storage_options
    first = load_batch_export(batch_id, output=out, storage_options=opts, **conn)
    again = load_batch_export(batch_id, output=out, storage_options=opts, **conn)
    assert again.export_id == first.export_id
    assert first.written is not None and not first.written.skipped
    assert again.written is not None and again.written.skipped
    s3.fs.invalidate_cache()
    parts = s3.fs.glob(f"{s3.bucket}/lake/answers/**/*.parquet")
    assert len(parts) == 1
    answers = read_dataset(out, "answers", batch_id=batch_id, storage_options=opts)
    assert len(answers) == emu.ground_truth(batch_id).counts["answers"]
    replaced = load_batch_export(batch_id, output=out, storage_options=opts, overwrite=True, **conn)
    assert replaced.written is not None and not replaced.written.skipped
    assert len(committed_exports(out, owner_id=batch_id, storage_options=opts)) == 1


def test_incremental_run_adds_exactly_the_new_responses(prolific_emulator, conn, s3):
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=22, n_submissions=10)
    out, opts = s3.url("lake"), s3.storage_options
    load_batch_export(batch_id, output=out, storage_options=opts, incremental=True, **conn)
    before = read_dataset(out, "responses", batch_id=batch_id, storage_options=opts)
    emu.add_submissions(batch_id, 4)
    emu.clear_requests()
    second = load_batch_export(batch_id, output=out, storage_options=opts, incremental=True, **conn)
    post = next(r for r in emu.requests if r.method == "POST")
    assert "from" in post.query, "an incremental load must send the watermark as `from`"
    assert second.filter.since is not None
    # The second export holds only the tail (new responses plus the safety overlap) ...
    truth = emu.ground_truth(batch_id)
    assert len(second.responses) < truth.counts["responses"]
    # ... and the dataset has every response exactly once.
    after = read_dataset(out, "responses", batch_id=batch_id, storage_options=opts)
    assert _ids(after, "response_id") == sorted(r["response_id"] for r in truth.responses)
    new = set(after["response_id"].astype(str)) - set(before["response_id"].astype(str))
    assert len(new) == truth.counts["responses"] - len(before)
    answers = read_dataset(out, "answers", batch_id=batch_id, storage_options=opts)
    assert len(answers) == truth.counts["answers"]
    assert len(committed_exports(out, owner_id=batch_id, storage_options=opts)) == 2


def test_incremental_requires_output(conn):
    from prolific_ingest import ConfigurationError

    with pytest.raises(ConfigurationError, match="output"):
        load_batch_export("b", incremental=True, **conn)


def test_ten_batches_concurrently_one_failure_nine_committed(prolific_emulator, conn, s3):
    emu = prolific_emulator
    good = [emu.add_batch(seed=30 + i, n_submissions=3) for i in range(9)]
    locked = emu.add_batch(seed=99, n_submissions=3, access=False)
    out, opts = s3.url("lake"), s3.storage_options
    report = load_batch_exports(
        [*good, locked], max_workers=4, output=out, storage_options=opts, **conn
    )
    assert sorted(report.results) == sorted(good)
    assert list(report.errors) == [locked]
    assert isinstance(report.errors[locked], PermissionDeniedError)
    assert not report.ok
    manifests = committed_exports(out, storage_options=opts)
    assert sorted(m["owner_id"] for m in manifests) == sorted(good)
    with pytest.raises(PermissionDeniedError):
        report.raise_for_errors()


def test_unknown_batch_among_many_is_reported_not_raised(prolific_emulator, conn):
    good = prolific_emulator.add_batch(seed=1, n_submissions=2)
    report = load_batch_exports([good, "44444444-4444-4444-4444-444444444444"], **conn)
    assert list(report.results) == [good]
    assert isinstance(next(iter(report.errors.values())), NotFoundError)


def test_s3_cache_and_offline_reload(prolific_emulator, conn, s3):
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=23, n_submissions=5)
    cache = s3.url("cache")
    kw = dict(conn, cache=cache, storage_options=s3.storage_options)
    first = load_batch_export(batch_id, **kw)
    assert first.archive_url.startswith("s3://")
    s3.fs.invalidate_cache()
    assert s3.fs.exists(f"{s3.bucket}/cache/batch/{batch_id}/{first.export_id}/manifest.json")
    emu.clear_requests()
    again = load_batch_export(batch_id, export_id=first.export_id, offline=True, **kw)
    assert emu.requests == []
    assert again.arrow.tables["answers"].equals(first.arrow.tables["answers"])
    files = again.files
    if len(files):
        with again.open_file(files["path"].iloc[0]) as fh:
            assert len(fh.read()) == files["size_bytes"].iloc[0]


def test_partition_by_date_through_the_loader(prolific_emulator, conn, tmp_path):
    batch_id = prolific_emulator.add_batch(seed=24, n_submissions=8)
    out = tmp_path / "lake"
    exp = load_batch_export(batch_id, output=str(out), partition_by=["date"], **conn)
    dates = {p.name for p in (out / "responses").rglob("date=*")}
    assert len(dates) >= 2
    back = read_dataset(str(out), "responses", batch_id=batch_id)
    assert _ids(back, "response_id") == _ids(exp.responses, "response_id")


def test_collection_output_uses_collection_id_partitions(prolific_emulator, conn, tmp_path):
    from prolific_ingest import load_collection_export

    collection_id = prolific_emulator.add_collection(seed=25, n_submissions=5)
    out = tmp_path / "lake"
    exp = load_collection_export(collection_id, output=str(out), **conn)
    part = out / "answers" / f"collection_id={collection_id}" / f"export_id={exp.export_id}"
    assert (part / "part-0.parquet").exists()
    assert not (out / "tasks").exists()
    back = read_dataset(str(out), "answers", collection_id=collection_id)
    assert len(back) == prolific_emulator.ground_truth(collection_id).counts["answers"]
