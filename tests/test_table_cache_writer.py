"""The parsed-table cache is written behind the parse, and a cold load keeps its tables."""

from __future__ import annotations

import json
import threading
import types
import zipfile
from pathlib import Path
from typing import Any

import pytest

from prolific_ingest import _parquet
from prolific_ingest.archive import open_archive
from prolific_ingest.cache import _tables as table_cache
from prolific_ingest.cache._tables import TableCache
from prolific_ingest.pipeline._parse import parse
from prolific_ingest.tables import build_tables, iter_record_batches


def _archive(tmp_path: Path, n: int = 2000) -> Path:
    lines = [
        {
            "submission_id": f"s{i}",
            "participant_id": f"p{i}",
            "tasks": [
                {"task_id": f"t{i % 50}", "responses": [{"id": f"r{i}", "answer": [{"value": i}]}]}
            ],
        }
        for i in range(n)
    ]
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("responses-by-submission.jsonl", "\n".join(map(json.dumps, lines)))
    return path


def _entry(tmp_path: Path, archive: Path) -> Any:
    return types.SimpleNamespace(
        path=str(tmp_path / "entry"),
        archive_path=str(archive),
        export_id="e",
        manifest={"sha256": "abc"},
        ref=types.SimpleNamespace(kind="batch"),
    )


def _cache() -> Any:
    return types.SimpleNamespace(storage_options=None)


def test_cache_files_are_written_on_a_background_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: set[str] = set()
    real = _parquet.RowGroupWriter.write

    def spy(self: Any, batch: Any) -> None:
        threads.add(threading.current_thread().name)
        real(self, batch)

    monkeypatch.setattr(_parquet.RowGroupWriter, "write", spy)
    path = _archive(tmp_path)
    store = TableCache(_entry(tmp_path, path), None)
    counts: dict[str, int] = {}
    with open_archive(path) as archive:
        for _ in store.tee(iter_record_batches(archive, batch_rows=100), counts):
            pass
    assert threads == {"prolific-ingest-table-cache"}
    assert store.commit(counts, {})
    info = store.info()
    assert info is not None
    cached = store.read(info)
    assert cached is not None
    with open_archive(path) as archive:
        direct = build_tables(archive)
    for name, table in direct.tables.items():
        assert cached[name].equals(table), name


def test_a_failing_cache_write_stops_the_cache_not_the_stream_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Any, batch: Any) -> None:
        raise OSError("disk full (test)")

    monkeypatch.setattr(_parquet.RowGroupWriter, "write", broken)
    path = _archive(tmp_path)
    store = TableCache(_entry(tmp_path, path), None)
    counts: dict[str, int] = {}
    with open_archive(path) as archive:
        streamed = sum(b.num_rows for n, b in store.tee(iter_record_batches(archive), counts))
    assert counts["submissions"] == 2000 and streamed == sum(counts.values())
    assert isinstance(store.failed, OSError)
    assert store.commit(counts, {}) is False
    assert list((tmp_path / "entry" / "tables").iterdir()) == []
    assert store.info() is None
    assert store.parse_again("raise").row_counts == counts


def test_a_cache_writer_bug_fails_the_parse_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Any, batch: Any) -> None:
        raise TypeError("a bug (test)")

    monkeypatch.setattr(_parquet.RowGroupWriter, "write", broken)
    path = _archive(tmp_path)
    store = TableCache(_entry(tmp_path, path), None)
    with open_archive(path) as archive, pytest.raises(TypeError, match="a bug"):
        for _ in store.tee(iter_record_batches(archive, batch_rows=100), {}):
            pass
    assert list((tmp_path / "entry" / "tables").iterdir()) == []
    assert store.info() is None


def test_a_consumer_that_stops_early_leaves_no_file(tmp_path: Path) -> None:
    path = _archive(tmp_path)
    store = TableCache(_entry(tmp_path, path), None)
    with open_archive(path) as archive:
        stream = store.tee(iter_record_batches(archive, batch_rows=100), {})
        next(stream)
        stream.close()
    assert list((tmp_path / "entry" / "tables").iterdir()) == []


def test_a_cold_parse_hands_its_tables_over_from_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _archive(tmp_path)
    entry = _entry(tmp_path, path)
    parsed = parse(entry, cache=_cache())

    def no_reads(fs: Any, path: str) -> Any:
        raise AssertionError("the cold load read its own cache back")

    monkeypatch.setattr(table_cache, "read_table_file", no_reads)
    tables = parsed.load()
    monkeypatch.undo()
    warm = parse(entry, cache=_cache()).load()  # the committed cache, read back
    with open_archive(path) as archive:
        direct = build_tables(archive)
    for name, table in direct.tables.items():
        assert tables[name].equals(table), name
        assert warm[name].equals(table), name
    assert parsed.counts == direct.row_counts


def test_tables_too_big_for_memory_are_read_back_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(table_cache, "MEMORY_BYTES", 1000)
    path = _archive(tmp_path)
    reads: list[int] = []
    real = table_cache.read_table_file
    monkeypatch.setattr(
        table_cache, "read_table_file", lambda fs, path: reads.append(1) or real(fs, path)
    )
    tables = parse(_entry(tmp_path, path), cache=_cache()).load()
    assert reads
    with open_archive(path) as archive:
        direct = build_tables(archive)
    for name, table in direct.tables.items():
        assert tables[name].equals(table), name
