"""Where a load's rows are read back from for the Delta writes: memory, the parsed-table
cache's files, or (only when neither is there) a spool in the temporary directory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from prolific_ingest import LakeTarget, ProlificClient, load_batch_export, read_export
from prolific_ingest.archive import open_archive
from prolific_ingest.lake import _spool, write_export
from prolific_ingest.lake._spool import PREFIX, STALE_SECONDS, staged_files, sweep_stale
from prolific_ingest.tables import iter_record_batches
from prolific_ingest.testing import ExportSpec, make_batch_export

TABLES = ("tasks", "responses", "submissions", "answers", "files", "instructions")


def _rows(lake: Path) -> dict[str, list[tuple[str, ...]]]:
    out = {}
    for table in TABLES:
        data = DeltaTable(str(lake / table)).to_pyarrow_table()
        names = sorted(data.column_names)
        cols = [data.column(n).to_pylist() for n in names]
        out[table] = sorted(tuple(str(v) for v in row) for row in zip(*cols, strict=True))
    return out


@pytest.fixture
def spools(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every spool folder made during the test (they are removed on exit)."""
    made: list[str] = []
    real = _spool.tempfile.mkdtemp

    def mkdtemp(*args: Any, **kwargs: Any) -> str:
        path = real(*args, **kwargs)
        made.append(path)
        return path

    monkeypatch.setattr(_spool.tempfile, "mkdtemp", mkdtemp)
    return made


def test_a_cold_load_writes_the_lake_from_the_table_cache_files_without_a_spool(
    prolific_emulator: Any, conn: dict[str, Any], tmp_path: Path, spools: list[str]
) -> None:
    batch_id = prolific_emulator.add_batch(seed=41, n_submissions=7)
    streamed, spooled = tmp_path / "streamed", tmp_path / "spooled"
    exp = load_batch_export(batch_id, output=str(streamed), **conn)
    assert exp.written is not None and not exp.written.skipped
    assert spools == []
    # The parsed-table cache is committed as usual (its files were only read meanwhile).
    warm = load_batch_export(batch_id, export_id=exp.export_id, offline=True, cache=conn["cache"])
    assert warm.row_counts == exp.row_counts
    # Same rows as the spooled path gives for the same archive.
    with open_archive(exp.archive_url) as archive:
        write_export(
            iter_record_batches(archive),
            str(spooled),
            kind="batch",
            owner_id=batch_id,
            export_id=exp.export_id,
        )
    assert len(spools) == 1 and not Path(spools[0]).exists()
    assert _rows(streamed) == _rows(spooled)
    assert exp.written.counts["answers"] == len(exp.answers)


def test_in_memory_tables_are_written_without_a_spool(tmp_path: Path, spools: list[str]) -> None:
    archive = tmp_path / "a.zip"
    make_batch_export(archive, ExportSpec(owner_id="b-mem", n_submissions=5, seed=42))
    export = read_export(archive, export_id="e1")
    export.to_lake(str(tmp_path / "lake"))
    export.to_lake(
        LakeTarget(str(tmp_path / "lake"), overwrite=True)
    )  # the merge reads keys from memory
    assert spools == []
    assert len(DeltaTable(str(tmp_path / "lake" / "answers")).to_pyarrow_table()) == len(
        export.answers
    )


class _LostFiles:
    """A staged stream whose table files went missing (as when the cache's disk filled)."""

    local = True

    def __init__(self, archive: Any) -> None:
        self.archive = archive
        self.replayed = 0

    def __iter__(self) -> Iterator[tuple[str, pa.RecordBatch]]:
        return iter_record_batches(self.archive)

    def files(self) -> Mapping[str, str] | None:
        return None

    def replay(self) -> Iterable[tuple[str, pa.RecordBatch]]:
        self.replayed += 1
        return iter_record_batches(self.archive)


def test_a_staged_stream_without_its_files_is_read_again_into_a_spool(
    tmp_path: Path, spools: list[str]
) -> None:
    path = tmp_path / "a.zip"
    make_batch_export(path, ExportSpec(owner_id="b-lost", n_submissions=6, seed=43))
    with open_archive(str(path)) as archive:
        lost = _LostFiles(archive)
        result = write_export(
            lost, str(tmp_path / "lost"), kind="batch", owner_id="b-lost", export_id="e1"
        )
        assert lost.replayed == 1
        assert len(spools) == 1 and not Path(spools[0]).exists()
        plain = write_export(
            staged_files(iter_record_batches(archive), lambda: None, list),
            str(tmp_path / "empty-replay"),
            kind="batch",
            owner_id="b-lost",
            export_id="e1",
        )
    export = read_export(str(path), export_id="e1")
    export.to_lake(str(tmp_path / "memory"))
    assert _rows(tmp_path / "lost") == _rows(tmp_path / "memory")
    assert result.counts == {k: v for k, v in export.row_counts.items() if k in result.counts}
    # A replay that yields nothing commits empty tables, never the first pass's counts.
    assert plain.counts["answers"] == 0


def test_stale_spools_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(dead.stdout)  # that process has exited
    live = tmp_path / f"{PREFIX}{os.getppid()}-abc"
    mine = tmp_path / f"{PREFIX}{os.getpid()}-abc"
    gone = tmp_path / f"{PREFIX}{dead_pid}-abc"
    old_style_fresh = tmp_path / f"{PREFIX}abc"
    old_style_stale = tmp_path / f"{PREFIX}def"
    reused_pid = tmp_path / f"{PREFIX}{os.getppid()}-old"
    for folder in (live, mine, gone, old_style_fresh, old_style_stale, reused_pid):
        folder.mkdir()
        (folder / "answers.parquet").write_bytes(b"x")
    long_ago = time.time() - STALE_SECONDS - 60
    for folder in (old_style_stale, reused_pid):
        os.utime(folder, (long_ago, long_ago))
    other = tmp_path / "prolific-ingest-other"
    other.mkdir()

    assert sweep_stale(tmp_path) == 3
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(p.name for p in (live, mine, old_style_fresh, other))


def test_a_cache_on_an_object_store_is_spooled_while_parsed_once(
    prolific_emulator: Any,
    tmp_path: Path,
    memory_prefix: str,
    spools: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prolific_ingest.pipeline import _parse

    parses: list[int] = []
    real = _parse.iter_record_batches

    def counted(*args: Any, **kwargs: Any) -> Any:
        parses.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(_parse, "iter_record_batches", counted)
    batch_id = prolific_emulator.add_batch(seed=44, n_submissions=5)
    exp = load_batch_export(
        batch_id,
        output=str(tmp_path / "lake"),
        client=ProlificClient(base_url=prolific_emulator.base_url, token=prolific_emulator.token),
        cache=f"{memory_prefix}/cache",
        progress=False,
    )
    assert exp.written is not None and exp.written.counts["answers"] == len(exp.answers)
    assert len(parses) == 1
    assert len(spools) == 1 and not Path(spools[0]).exists()
