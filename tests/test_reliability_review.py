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
