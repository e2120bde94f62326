"""Pins the on-disk layout of the export cache (changing it orphans users' caches)."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from prolific_ingest import __version__
from prolific_ingest.cache import FORMAT_VERSION, ArchiveFacts, ExportCache
from prolific_ingest.exports import ExportFilter, ExportRef

PAYLOAD = b"PK\x05\x06" + b"\x00" * 18  # an empty ZIP


def _commit(cache: ExportCache, ref: ExportRef, export_id: str, **kw: object) -> Path:
    with cache.lock(ref, export_id):
        staging = cache.staging(ref, export_id)
        Path(staging).write_bytes(PAYLOAD)
        cache.commit(
            ref,
            export_id,
            staging,
            ArchiveFacts(
                filter=kw.get("filter", ExportFilter()),  # type: ignore[arg-type]
                size=len(PAYLOAD),
                sha256=hashlib.sha256(PAYLOAD).hexdigest(),
                etag="abc",
                source_url="https://bucket.s3.example.com/exports/x.zip?X-Amz-Signature=SIG",
            ),
        )
    return Path(cache.entry_path(ref, export_id))


def test_entry_layout(tmp_path: Path) -> None:
    cache = ExportCache(str(tmp_path))
    entry = _commit(cache, ExportRef("batch", "B1"), "E1")
    assert entry == tmp_path / "batch" / "B1" / "E1"
    assert sorted(p.name for p in entry.iterdir()) == ["archive.zip", "manifest.json"]
    assert (entry / "archive.zip").read_bytes() == PAYLOAD

    entry2 = _commit(cache, ExportRef("collection", "C9"), "E2")
    assert entry2 == tmp_path / "collection" / "C9" / "E2"
    top = sorted(p.name for p in tmp_path.iterdir())
    assert top == [".locks", "batch", "collection"]  # lock files stay beside, not inside, entries
    assert sorted(p.name for p in (tmp_path / ".locks").iterdir()) == [
        "batch-B1-E1.lock",
        "collection-C9-E2.lock",
    ]


def test_manifest_fields(tmp_path: Path) -> None:
    cache = ExportCache(str(tmp_path))
    flt = ExportFilter(study_id="S1", since=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    entry = _commit(cache, ExportRef("batch", "B1"), "E1", filter=flt)
    manifest = json.loads((entry / "manifest.json").read_text("utf-8"))
    assert set(manifest) == {
        "export_id",
        "kind",
        "owner_id",
        "filter_known",
        "created_at",
        "filter",
        "fetched_at",
        "size",
        "sha256",
        "etag",
        "source_host",
        "library_version",
        "format_version",
    }
    assert manifest["export_id"] == "E1"
    assert manifest["kind"] == "batch"
    assert manifest["owner_id"] == "B1"
    assert manifest["filter"] == {"study_id": "S1", "from": "2026-01-02T03:04:05Z", "to": None}
    assert manifest["size"] == len(PAYLOAD)
    assert manifest["sha256"] == hashlib.sha256(PAYLOAD).hexdigest()
    assert manifest["etag"] == "abc"
    assert manifest["source_host"] == "bucket.s3.example.com"  # host only: no path, no query
    assert manifest["library_version"] == __version__
    assert manifest["format_version"] == FORMAT_VERSION == 1
    fetched = datetime.fromisoformat(manifest["fetched_at"])
    assert fetched.utcoffset() is not None
    assert fetched.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert "SIG" not in (entry / "manifest.json").read_text("utf-8")


def test_staging_lives_in_the_entry_directory(tmp_path: Path) -> None:
    cache = ExportCache(str(tmp_path))
    ref = ExportRef("batch", "B1")
    staging = Path(cache.staging(ref, "E1"))
    assert staging.parent == tmp_path / "batch" / "B1" / "E1"
    assert staging.name.startswith(f"archive.zip.tmp-{os.getpid()}-")


def test_tables_directory_is_room_beside_the_archive(tmp_path: Path) -> None:
    cache = ExportCache(str(tmp_path))
    ref = ExportRef("batch", "B1")
    entry = _commit(cache, ref, "E1")
    (entry / "tables").mkdir()
    (entry / "tables" / "responses.parquet").write_bytes(b"x")
    hit = cache.lookup(ref, "E1")
    assert hit is not None
    assert hit.path == str(entry)
    assert hit.archive_path == str(entry / "archive.zip")
    assert [e.export_id for e in cache.list()] == ["E1"]  # tables/ is not an entry
