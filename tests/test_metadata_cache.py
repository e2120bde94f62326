"""Odd metadata never poisons the parsed-table cache; a damaged marker reads as absent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from prolific_ingest import load_batch_export
from prolific_ingest.testing import _build
from prolific_ingest.testing._zipwriter import dumps

SURROGATE = "caf\udc80"


@pytest.fixture
def surrogate_batch(prolific_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    real = _build.owner_object

    def with_surrogate(*args: Any, **kwargs: Any) -> dict[str, Any]:
        meta = real(*args, **kwargs)
        meta["note"] = SURROGATE
        return meta

    monkeypatch.setattr(_build, "owner_object", with_surrogate)
    # the archive spells it as the JSON escape "\udc80" (no UTF-8 text can hold it)
    monkeypatch.setattr(_build, "dumps", lambda obj: dumps(obj, ascii_only=True))
    batch_id: str = prolific_emulator.add_batch(seed=2, n_submissions=5)
    return batch_id


def _markers(cache: Path) -> list[Path]:
    return list(cache.rglob("_tables.json*"))


def test_a_lone_surrogate_in_metadata_loads_and_is_cached_losslessly(
    surrogate_batch: str, conn: dict[str, Any]
) -> None:
    cold = load_batch_export(surrogate_batch, **conn)
    assert cold.metadata["note"] == SURROGATE
    markers = _markers(Path(conn["cache"]))
    assert [m.name for m in markers] == ["_tables.json"]  # committed, no temporary left
    assert markers[0].stat().st_size > 0
    warm = load_batch_export(surrogate_batch, **conn)
    assert warm.metadata["note"] == SURROGATE
    assert warm.row_counts == cold.row_counts


@pytest.mark.parametrize("damage", [b"", b'{"format": 1, "coun', b"[1, 2]", b"\xff\xfe"])
def test_a_damaged_table_cache_marker_reads_as_absent(
    surrogate_batch: str, conn: dict[str, Any], damage: bytes
) -> None:
    first = load_batch_export(surrogate_batch, **conn)
    (marker,) = _markers(Path(conn["cache"]))
    marker.write_bytes(damage)
    again = load_batch_export(surrogate_batch, **conn)
    assert again.row_counts == first.row_counts
    assert again.metadata == first.metadata
    assert marker.stat().st_size > 0 and marker.read_bytes() != damage  # re-committed
