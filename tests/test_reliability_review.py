"""Regressions from the reliability review: skipped outputs, shared remote caches,
the export cap under scheduled incremental loads, lost DELETE responses, conflicting
``export_id`` and filter arguments, storage errors as typed exceptions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prolific_ingest import load_batch_export


def test_output_already_committed_with_a_fresh_cache_still_loads(
    prolific_emulator: Any, conn: dict[str, Any], tmp_path: Path
) -> None:
    """The sink skips an export already in the lake without reading the batch stream;
    the parse must still run (it fills the parsed-table cache and the tables)."""
    batch_id = prolific_emulator.add_batch(n_submissions=4)
    out = str(tmp_path / "lake")
    first = load_batch_export(batch_id, output=out, **conn)
    again = {**conn, "cache": str(tmp_path / "other-cache")}
    for policy in ("raise", "skip"):
        second = load_batch_export(
            batch_id, output=out, export_id=first.export_id, on_bad_records=policy, **again
        )
        assert second.written is not None and second.written.skipped
        assert second.row_counts == first.row_counts
        assert len(second.answers) == len(first.answers) > 0


def test_remote_cache_leaves_a_fresh_archive_without_manifest_alone(
    s3: Any, monkeypatch: Any
) -> None:
    """On a shared s3:// cache another machine (its own locks) may be between moving its
    archive into place and writing the manifest: a fresh archive without a manifest is
    reported absent but not deleted; once stale it is removed as an interrupted commit."""
    import prolific_ingest.cache as cache_module
    from prolific_ingest.cache import ExportCache
    from prolific_ingest.exports import ExportRef

    ref = ExportRef("batch", "B1")
    cache = ExportCache(s3.url("cache"), storage_options=s3.storage_options)
    archive = f"{s3.bucket}/cache/batch/B1/E1/archive.zip"
    s3.fs.pipe(archive, b"PK in flight")
    assert cache.lookup(ref, "E1") is None
    assert s3.fs.exists(archive)
    monkeypatch.setattr(cache_module, "STALE_STAGING", cache_module.timedelta(0))
    assert cache.lookup(ref, "E1") is None
    assert not s3.fs.exists(archive)


def test_local_cache_still_removes_an_interrupted_commit_at_once(tmp_path: Path) -> None:
    from prolific_ingest.cache import ExportCache
    from prolific_ingest.exports import ExportRef

    ref = ExportRef("batch", "B1")
    cache = ExportCache(str(tmp_path / "cache"))
    entry = Path(cache.entry_path(ref, "E1"))
    entry.mkdir(parents=True)
    (entry / "archive.zip").write_bytes(b"PK")
    assert cache.lookup(ref, "E1") is None  # under the lock: no commit can be in flight
    assert not (entry / "archive.zip").exists()
