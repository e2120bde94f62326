"""Many loads into one lake, and an S3 cache: the emulator plus a real S3 API (moto server).

The lake's own behaviours are in ``test_lake_*.py``."""

from __future__ import annotations

import pytest

from prolific_ingest import (
    ExportCache,
    LakeTarget,
    NotFoundError,
    PermissionDeniedError,
    committed_exports,
    load_batch_export,
    load_batch_exports,
)


def test_incremental_requires_output(conn):
    from prolific_ingest import ConfigurationError

    with (
        pytest.warns(DeprecationWarning, match="LakeTarget"),
        pytest.raises(ConfigurationError, match="output"),
    ):
        load_batch_export("b", incremental=True, **conn)


def test_ten_batches_concurrently_one_failure_nine_committed(prolific_emulator, conn, s3):
    emu = prolific_emulator
    good = [emu.add_batch(seed=30 + i, n_submissions=3) for i in range(9)]
    locked = emu.add_batch(seed=99, n_submissions=3, access=False)
    out, opts = s3.url("lake"), s3.storage_options
    report = load_batch_exports(
        [*good, locked], max_workers=4, output=LakeTarget(out, storage_options=opts), **conn
    )
    assert sorted(report.results) == sorted(good)
    assert list(report.errors) == [locked]
    assert isinstance(report.errors[locked], PermissionDeniedError)
    assert not report.ok
    loads = committed_exports(out, storage_options=opts)
    assert sorted(r["owner_id"] for r in loads) == sorted(good)
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
    kw = dict(conn, cache=ExportCache(cache, storage_options=s3.storage_options))
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
