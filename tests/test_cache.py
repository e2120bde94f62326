"""ExportCache: commit, lookup, damage detection, find/list/clear, locks, remote roots."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fsspec
import pytest

from prolific_ingest.cache import ArchiveFacts, ExportCache
from prolific_ingest.errors import CacheError
from prolific_ingest.exports import ExportFilter, ExportRef

REF = ExportRef("batch", "B1")
DATA = b"PK" + bytes(range(256)) * 40


def put(
    cache: ExportCache,
    export_id: str,
    data: bytes = DATA,
    *,
    ref: ExportRef = REF,
    flt: ExportFilter | None = None,
) -> Any:
    staging = cache.staging(ref, export_id)
    with fsspec.open(staging, "wb", **cache.storage_options) as fh:
        fh.write(data)
    return cache.commit(
        ref,
        export_id,
        staging,
        ArchiveFacts(
            filter=flt,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            etag=None,
            source_url="http://127.0.0.1:9/x.zip?sig=1",
        ),
    )


def set_fetched_at(cache: ExportCache, export_id: str, when: datetime) -> None:
    path = Path(cache.entry_path(REF, export_id)) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["fetched_at"] = when.isoformat()
    path.write_text(json.dumps(manifest))


@pytest.fixture
def cache(tmp_path: Path) -> ExportCache:
    return ExportCache(str(tmp_path / "cache"))


def test_commit_then_lookup(cache: ExportCache) -> None:
    flt = ExportFilter(study_id="S")
    committed = put(cache, "E1", flt=flt)
    hit = cache.lookup(REF, "E1")
    assert hit == committed
    assert hit is not None
    assert hit.size == len(DATA)
    assert hit.filter == flt
    assert Path(hit.archive_path).read_bytes() == DATA
    assert hit.manifest["sha256"] == hashlib.sha256(DATA).hexdigest()
    assert abs(datetime.now(UTC) - hit.fetched_at) < timedelta(minutes=5)
    assert cache.lookup(REF, "E1", verify="full") == committed


def test_commit_removes_staging(cache: ExportCache) -> None:
    put(cache, "E1")
    entry = Path(cache.entry_path(REF, "E1"))
    assert sorted(p.name for p in entry.iterdir()) == ["archive.zip", "manifest.json"]


def test_staging_paths_are_unique(cache: ExportCache) -> None:
    assert cache.staging(REF, "E1") != cache.staging(REF, "E1")


def test_commit_failure_removes_staging_and_commits_nothing(cache: ExportCache) -> None:
    staging = cache.staging(REF, "E1")
    Path(staging).write_bytes(DATA)
    with pytest.raises(CacheError, match="expected"):
        cache.commit(
            REF,
            "E1",
            staging,
            ArchiveFacts(
                filter=None,
                size=len(DATA) + 1,
                sha256="0",
                etag=None,
                source_url=None,
            ),
        )
    assert not Path(staging).exists()
    assert cache.lookup(REF, "E1") is None


def test_absent_entry_is_none_without_warning(
    cache: ExportCache, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert cache.lookup(REF, "nope") is None
        cache.staging(REF, "inflight")  # a download in progress is not damage
        assert cache.lookup(REF, "inflight") is None
    assert caplog.records == []


def _truncate(entry: Path) -> None:
    data = (entry / "archive.zip").read_bytes()
    (entry / "archive.zip").write_bytes(data[:-10])


def _drop_manifest(entry: Path) -> None:
    (entry / "manifest.json").unlink()


def _garble_manifest(entry: Path) -> None:
    (entry / "manifest.json").write_text("{not json")


def _foreign_manifest(entry: Path) -> None:
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["export_id"] = "OTHER"
    (entry / "manifest.json").write_text(json.dumps(manifest))


def _manifest_without_size(entry: Path) -> None:
    manifest = json.loads((entry / "manifest.json").read_text())
    del manifest["size"]
    (entry / "manifest.json").write_text(json.dumps(manifest))


def _drop_archive(entry: Path) -> None:
    (entry / "archive.zip").unlink()


@pytest.mark.parametrize(
    "damage",
    [
        _truncate,
        _drop_manifest,
        _garble_manifest,
        _foreign_manifest,
        _manifest_without_size,
        _drop_archive,
    ],
)
def test_damaged_entry_is_detected_and_removed(
    cache: ExportCache, caplog: pytest.LogCaptureFixture, damage: Any
) -> None:
    put(cache, "E1")
    entry = Path(cache.entry_path(REF, "E1"))
    damage(entry)
    with caplog.at_level(logging.WARNING, logger="prolific_ingest.cache"):
        assert cache.lookup(REF, "E1") is None
    assert any("damaged" in r.getMessage() for r in caplog.records)
    assert not (entry / "archive.zip").exists()
    assert not (entry / "manifest.json").exists()
    assert cache.lookup(REF, "E1") is None  # stays gone, and is re-fetchable
    put(cache, "E1")
    assert cache.lookup(REF, "E1") is not None


def test_same_size_corruption_needs_full_verification(cache: ExportCache) -> None:
    put(cache, "E1")
    archive = Path(cache.entry_path(REF, "E1")) / "archive.zip"
    data = bytearray(archive.read_bytes())
    data[100] ^= 0xFF
    archive.write_bytes(bytes(data))
    assert cache.lookup(REF, "E1") is not None  # size check only: cheap
    assert cache.lookup(REF, "E1", verify="full") is None  # sha256 catches it
    assert not archive.exists()


def test_damage_check_inside_a_held_lock_does_not_deadlock(cache: ExportCache) -> None:
    put(cache, "E1")
    _truncate(Path(cache.entry_path(REF, "E1")))
    with cache.lock(REF, "E1"):
        assert cache.lookup(REF, "E1") is None


def _process_context() -> Any:
    """A fork-safe start method that imports the package once, not once per child."""
    if "forkserver" not in multiprocessing.get_all_start_methods():  # pragma: no cover
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["prolific_ingest.cache", fetch_once.__module__])
    return ctx


def _commit_then_die(root: str) -> None:
    """Child process: move the archive into place, then get killed before the manifest."""
    from prolific_ingest import cache as cache_mod

    def die(self: Any, path: str, data: Any) -> None:
        os._exit(9)

    cache_mod.ExportCache._write_json = die  # type: ignore[method-assign]
    put(cache_mod.ExportCache(root), "E1")


def test_commit_is_atomic_when_killed_before_the_manifest(cache: ExportCache) -> None:
    ctx = _process_context()
    proc = ctx.Process(target=_commit_then_die, args=(cache.root,))
    proc.start()
    proc.join(120)
    assert proc.exitcode == 9
    entry = Path(cache.entry_path(REF, "E1"))
    assert (entry / "archive.zip").exists()  # the move happened ...
    assert not (entry / "manifest.json").exists()  # ... the commit did not
    assert cache.list() == []
    assert cache.find(REF, None, max_age=None) is None
    assert cache.lookup(REF, "E1") is None  # not visible, and cleaned up
    assert not (entry / "archive.zip").exists()


def test_recommit_replaces_an_entry(cache: ExportCache) -> None:
    put(cache, "E1", b"old")
    put(cache, "E1", DATA)
    hit = cache.lookup(REF, "E1", verify="full")
    assert hit is not None
    assert Path(hit.archive_path).read_bytes() == DATA


def test_find_newest_same_filter_within_max_age(cache: ExportCache) -> None:
    now = datetime.now(UTC)
    flt = ExportFilter(study_id="S")
    put(cache, "old", flt=flt)
    put(cache, "new", flt=flt)
    put(cache, "other", flt=ExportFilter(study_id="T"))
    set_fetched_at(cache, "old", now - timedelta(hours=5))
    set_fetched_at(cache, "new", now - timedelta(hours=1))
    hit = cache.find(REF, ExportFilter(study_id="S"), max_age=timedelta(hours=2))
    assert hit is not None
    assert hit.export_id == "new"
    assert cache.find(REF, flt, max_age=timedelta(minutes=30)) is None
    assert cache.find(REF, flt, max_age=None).export_id == "new"  # type: ignore[union-attr]
    assert cache.find(REF, None, max_age=None) is None  # unfiltered != filtered
    assert cache.find(ExportRef("batch", "B2"), flt, max_age=None) is None


def test_find_skips_damaged_entries(cache: ExportCache) -> None:
    put(cache, "older")
    put(cache, "newer")
    set_fetched_at(cache, "older", datetime.now(UTC) - timedelta(hours=1))
    _truncate(Path(cache.entry_path(REF, "newer")))
    hit = cache.find(REF, None, max_age=3600.0 * 2)
    assert hit is not None
    assert hit.export_id == "older"


def test_list_all_and_per_ref(cache: ExportCache) -> None:
    other = ExportRef("collection", "C1")
    put(cache, "E1")
    put(cache, "E2", ref=other)
    set_fetched_at(cache, "E1", datetime.now(UTC) - timedelta(days=1))
    assert [(e.ref, e.export_id) for e in cache.list()] == [(other, "E2"), (REF, "E1")]
    assert [e.export_id for e in cache.list(REF)] == ["E1"]
    assert cache.list(ExportRef("batch", "none")) == []


def test_delete(cache: ExportCache) -> None:
    put(cache, "E1")
    assert cache.delete(REF, "E1") is True
    assert cache.lookup(REF, "E1") is None
    assert cache.delete(REF, "E1") is False


def test_plan_then_clear(cache: ExportCache) -> None:
    put(cache, "E1")
    put(cache, "E2", ref=ExportRef("batch", "B2"))
    plan = cache.plan_clear(REF)
    assert [e.export_id for e in plan] == ["E1"]
    assert cache.lookup(REF, "E1") is not None  # planning removes nothing
    assert [e.export_id for e in cache.clear(REF)] == ["E1"]
    assert [e.export_id for e in cache.list()] == ["E2"]
    assert [e.export_id for e in cache.clear()] == ["E2"]
    assert cache.list() == []


def test_prune_by_age(cache: ExportCache) -> None:
    put(cache, "old")
    put(cache, "new")
    set_fetched_at(cache, "old", datetime.now(UTC) - timedelta(days=10))
    assert [e.export_id for e in cache.plan_prune(timedelta(days=1))] == ["old"]
    assert [e.export_id for e in cache.plan_clear(max_age=86400)] == ["old"]
    assert [e.export_id for e in cache.prune(max_age=timedelta(days=1))] == ["old"]
    assert [e.export_id for e in cache.list()] == ["new"]


def test_execute_skips_entries_already_gone(cache: ExportCache) -> None:
    put(cache, "E1")
    plan = cache.plan_clear()
    cache.delete(REF, "E1")
    assert cache.execute(plan) == []


@pytest.mark.parametrize("bad", ["", "..", "a/b", "a\\b"])
def test_unsafe_export_ids_are_refused(cache: ExportCache, bad: str) -> None:
    with pytest.raises(CacheError):
        cache.entry_path(REF, bad)


def test_default_root_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROLIFIC_INGEST_CACHE", str(tmp_path / "envcache"))
    cache = ExportCache()
    assert cache.root == str(tmp_path / "envcache")
    put(cache, "E1")
    assert (tmp_path / "envcache" / "batch" / "B1" / "E1" / "manifest.json").exists()


def test_memory_root(memory_prefix: str) -> None:
    cache = ExportCache(f"{memory_prefix}/cache")
    committed = put(cache, "E1")
    assert committed.path.startswith("memory://")
    assert cache.entry_path(REF, "E1") == committed.path
    hit = cache.lookup(REF, "E1", verify="full")
    assert hit == committed
    with fsspec.open(hit.archive_path, "rb") as fh:  # type: ignore[union-attr]
        assert fh.read() == DATA
    assert cache.find(REF, None, max_age=timedelta(hours=1)) == committed
    assert [e.export_id for e in cache.list()] == ["E1"]
    fs = fsspec.filesystem("memory")
    fs.pipe(hit.archive_path, DATA[:10])  # type: ignore[union-attr]
    assert cache.lookup(REF, "E1") is None
    put(cache, "E2")
    assert [e.export_id for e in cache.clear()] == ["E2"]


def test_s3_root(s3: Any) -> None:
    cache = ExportCache(s3.url("cache"), storage_options=s3.storage_options)
    committed = put(cache, "E1")
    assert committed.archive_path.startswith(f"s3://{s3.bucket}/cache/batch/B1/E1/")
    assert cache.lookup(REF, "E1", verify="full") == committed
    assert s3.fs.cat_file(f"{s3.bucket}/cache/batch/B1/E1/archive.zip") == DATA
    assert [e.export_id for e in cache.clear()] == ["E1"]


# -- staging files left by killed processes ------------------------------------------------


def test_stale_staging_files_are_swept_under_the_lock(cache: ExportCache) -> None:
    """A killed download or parse leaves ``*.tmp-*`` files; the next staging of the same
    entry removes those not written to for an hour, and keeps fresh ones (a live writer)."""
    entry = Path(cache.entry_path(REF, "E1"))
    (entry / "tables").mkdir(parents=True)
    stale = [
        entry / "archive.zip.tmp-4242-dead",
        entry / "manifest.json.tmp-4242-dead",
        entry / "tables" / "answers.arrow.tmp-dead",
    ]
    fresh = entry / "archive.zip.tmp-4343-live"
    two_hours_ago = (datetime.now(UTC) - timedelta(hours=2)).timestamp()
    for path in [*stale, fresh]:
        path.write_bytes(b"partial")
    for path in stale:
        os.utime(path, (two_hours_ago, two_hours_ago))
    with cache.lock(REF, "E1"):
        staging = cache.staging(REF, "E1")
    assert [p for p in stale if p.exists()] == []
    assert fresh.exists()
    assert not Path(staging).exists()  # a name only; the download creates it
    put(cache, "E1")
    assert cache.lookup(REF, "E1") is not None
    assert sorted(p.name for p in entry.iterdir()) == [
        "archive.zip",
        fresh.name,
        "manifest.json",
        "tables",
    ]


def test_stale_staging_sweep_on_s3(s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import prolific_ingest.cache._store as cache_module

    cache = ExportCache(s3.url("cache"), storage_options=s3.storage_options)
    left = f"{s3.bucket}/cache/batch/B1/E1/archive.zip.tmp-1-dead"
    s3.fs.pipe(left, b"partial")
    assert cache.sweep_staging(REF, "E1") == []  # written just now: maybe a live writer
    assert s3.fs.exists(left)
    monkeypatch.setattr(cache_module, "STALE_STAGING", timedelta(0))
    assert cache.sweep_staging(REF, "E1") == [f"s3://{left}"]
    assert not s3.fs.exists(left)
    put(cache, "E1")
    assert sorted(s3.fs.ls(f"{s3.bucket}/cache/batch/B1/E1", detail=False)) == [
        f"{s3.bucket}/cache/batch/B1/E1/archive.zip",
        f"{s3.bucket}/cache/batch/B1/E1/manifest.json",
    ]


# -- one download per export, across threads and processes ---------------------------------


def fetch_once(root: str, counter: str, barrier: Any) -> None:
    """Lock, look up, 'download' (append to a counter file) and commit, like the loader."""
    cache = ExportCache(root)
    barrier.wait()
    with cache.lock(REF, "E1"):
        if cache.lookup(REF, "E1") is not None:
            return
        with open(counter, "a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()}-{threading.get_ident()}\n")
        put(cache, "E1")


def test_one_download_across_threads(tmp_path: Path) -> None:
    root, counter = str(tmp_path / "cache"), str(tmp_path / "count")
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fetch_once(root, counter, barrier)
        except Exception as exc:  # noqa: BLE001  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(Path(counter).read_text().splitlines()) == 1
    assert ExportCache(root).lookup(REF, "E1", verify="full") is not None


def test_one_download_across_processes(tmp_path: Path) -> None:
    root, counter = str(tmp_path / "cache"), str(tmp_path / "count")
    ctx = _process_context()
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=fetch_once, args=(root, counter, barrier)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert len(Path(counter).read_text().splitlines()) == 1
    assert ExportCache(root).lookup(REF, "E1", verify="full") is not None


def test_no_secret_in_cache_files(cache: ExportCache) -> None:
    put(cache, "E1")
    for path in Path(cache.root).rglob("*"):
        if path.is_file() and path.name != "archive.zip":
            text = path.read_text("utf-8", errors="replace")
            assert "sig=1" not in text
            assert "127.0.0.1:9/x.zip" not in text


def test_storage_options_are_ignored_for_a_local_root(tmp_path: Path) -> None:
    """Callers pass one set of options whatever the root is (api, prune_exports): a local
    root must not hand S3 options to the local filesystem."""
    options = {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": "http://x"}}
    for root in (str(tmp_path / "a"), f"file://{tmp_path / 'b'}"):
        cache = ExportCache(root, storage_options=options)
        assert cache.storage_options == {}
        put(cache, "E1")
        assert cache.lookup(REF, "E1") is not None
    assert ExportCache("memory://c", storage_options={"x": 1}).storage_options == {"x": 1}


def test_commit_with_the_facts_as_keywords_still_commits_and_warns(tmp_path: Path) -> None:
    cache = ExportCache(str(tmp_path))
    staging = cache.staging(REF, "E9")
    Path(staging).write_bytes(DATA)
    facts = {"size": len(DATA), "sha256": hashlib.sha256(DATA).hexdigest(), "etag": None}
    with pytest.warns(DeprecationWarning, match=r"ExportCache\.pending\(size="):
        pending = cache.pending(REF, "E9", filter=None, source_url=None, **facts)
    with pytest.warns(DeprecationWarning, match=r"ExportCache\.commit\(size="):
        entry = cache.commit(REF, "E9", staging, filter=None, source_url=None, **facts)
    assert entry.size == pending.size == len(DATA)
    assert cache.lookup(REF, "E9") == entry


def test_commit_takes_its_facts_once(tmp_path: Path) -> None:
    cache = ExportCache(str(tmp_path))
    facts = ArchiveFacts(size=1, sha256="0")
    with pytest.raises(TypeError, match="not both"):
        cache.pending(REF, "E9", facts, size=1)
    with pytest.raises(TypeError, match="needs the archive's facts"):
        cache.pending(REF, "E9")
