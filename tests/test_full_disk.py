"""A full disk while an export downloads into the cache: a typed error, nothing half-written."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prolific_ingest import CacheError, ExportCache, ExportRef, load_batch_export


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
