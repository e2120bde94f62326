"""A full disk under the cache: a typed error or a load without the cache, nothing half-written.

A full disk while the archive downloads is a CacheError; while the parsed-table cache (an
optimisation) is written, the load still returns its tables, with a warning.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from prolific_ingest import CacheError, Export, ExportCache, ExportRef, load_batch_export
from prolific_ingest.cache._tables import TableCache


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB filesystem (tmpfs); skipped where mounting is not permitted."""
    where = tmp_path / "small"
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def test_a_full_disk_while_downloading_is_a_cache_error_that_leaves_no_entry(
    prolific_emulator: Any, conn: dict[str, Any], small_disk: Path
) -> None:
    batch_id = prolific_emulator.add_batch(seed=11, n_submissions=600)
    cache = small_disk / "cache"
    with pytest.raises(CacheError) as caught:
        load_batch_export(batch_id, **{**conn, "cache": str(cache)})
    assert "No space left" in str(caught.value) or "28" in str(caught.value)
    assert str(small_disk) in str(caught.value)
    assert ExportCache(str(cache)).list(ExportRef("batch", batch_id)) == []
    leftovers = [p for p in cache.rglob("*") if p.is_file() and p.stat().st_size > 0]
    assert not [p for p in leftovers if p.name.endswith(".zip")]


# -- the parsed-table cache on a full disk ----------------------------------------------------


def _mount(where: Path, size: str) -> None:
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")


@dataclass
class RoomForTheArchiveOnly:
    """A cache on a tmpfs that holds the export's archive but not its parsed tables."""

    batch_id: str
    reference: Export  # the same export loaded into a cache with room to spare
    cache: Path


@pytest.fixture
def room_for_the_archive_only(
    prolific_emulator: Any, conn: dict[str, Any], tmp_path: Path
) -> Iterator[RoomForTheArchiveOnly]:
    batch_id = prolific_emulator.add_batch(seed=11, n_submissions=300)
    roomy = tmp_path / "roomy"
    reference = load_batch_export(batch_id, **{**conn, "cache": str(roomy)})
    (archive,) = roomy.rglob("archive.zip")
    tables = sum(p.stat().st_size for p in archive.parent.joinpath("tables").iterdir())
    margin = 192 * 1024
    assert tables > 2 * margin  # the premise: the archive fits, its parsed tables cannot
    where = tmp_path / "small"
    _mount(where, f"{(archive.stat().st_size + margin) // 1024}k")
    try:
        yield RoomForTheArchiveOnly(batch_id, reference, where / "cache")
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def _table_cache_files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("tables/*"))


def _assert_same_tables(got: Export, want: Export) -> None:
    assert got.row_counts == want.row_counts
    for name, table in want.arrow.tables.items():
        assert got.arrow.tables[name].equals(table), name


def test_a_full_disk_while_caching_parsed_tables_still_loads_them_and_leaves_nothing(
    room_for_the_archive_only: RoomForTheArchiveOnly,
    conn: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    setup = room_for_the_archive_only
    options = {**conn, "cache": str(setup.cache)}
    with caplog.at_level(logging.WARNING, logger="prolific_ingest"):
        first = load_batch_export(setup.batch_id, **options)
    _assert_same_tables(first, setup.reference)
    (warning,) = [r for r in caplog.records if "parsed-table cache" in r.getMessage()]
    assert str(setup.cache) in warning.getMessage()
    assert "No space left" in warning.getMessage()
    assert _table_cache_files(setup.cache) == []  # no temporary file, no marker
    assert len(list(setup.cache.rglob("archive.zip"))) == 1  # the archive stays cached

    caplog.clear()
    again = load_batch_export(setup.batch_id, **{**options, "offline": True})
    _assert_same_tables(again, setup.reference)
    assert _table_cache_files(setup.cache) == []


def test_a_full_disk_while_caching_parsed_tables_of_a_lake_load_still_hands_them_over(
    room_for_the_archive_only: RoomForTheArchiveOnly, conn: dict[str, Any], tmp_path: Path
) -> None:
    setup = room_for_the_archive_only
    lake = tmp_path / "lake"
    loaded = load_batch_export(
        setup.batch_id, **{**conn, "cache": str(setup.cache), "output": str(lake)}
    )
    assert loaded.written is not None
    _assert_same_tables(loaded, setup.reference)  # parsed again from the cached archive
    assert _table_cache_files(setup.cache) == []


def _fill(where: Path) -> Path:
    """Write zeros into ``where`` until its filesystem is full."""
    filler = where / "filler"
    block = bytes(64 * 1024)
    with filler.open("wb", buffering=0) as fh:
        try:
            while True:
                fh.write(block)
        except OSError:
            pass
    return filler


def test_a_disk_that_fills_before_the_table_cache_is_committed_keeps_no_table_file(
    prolific_emulator: Any,
    conn: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    batch_id = prolific_emulator.add_batch(seed=11, n_submissions=300)
    where = tmp_path / "small"
    _mount(where, "16m")
    try:
        real_commit = TableCache.commit
        fillers: list[Path] = []

        def fill_then_commit(self: TableCache, *args: Any) -> bool:
            fillers.append(_fill(where))  # the table files are written; the marker cannot be
            return real_commit(self, *args)

        monkeypatch.setattr(TableCache, "commit", fill_then_commit)
        options = {**conn, "cache": str(where / "cache")}
        with caplog.at_level(logging.WARNING, logger="prolific_ingest"):
            first = load_batch_export(batch_id, **options)
        assert fillers
        assert "could not cache parsed tables" in caplog.text
        assert _table_cache_files(where / "cache") == []  # the moved files are gone too

        monkeypatch.setattr(TableCache, "commit", real_commit)
        fillers[0].unlink()
        second = load_batch_export(batch_id, **{**options, "offline": True})
        _assert_same_tables(second, first)
        names = {p.name for p in _table_cache_files(where / "cache")}
        assert "_tables.json" in names and not [n for n in names if ".tmp-" in n]
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)
