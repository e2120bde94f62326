"""Tables read from generated exports match the generator's ground truth exactly.

Every variation of spec section 2 is read through both parse paths
(``tests._helpers.read_both_ways``); they must agree, and match the truth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _truth import assert_matches_truth

from prolific_ingest import tables as tables_mod
from prolific_ingest.archive import _reader as archive_mod
from prolific_ingest.archive import open_archive
from prolific_ingest.tables import build_tables, schema_for, table_names
from prolific_ingest.testing import ExportSpec, make_batch_export, make_collection_export
from tests._helpers import read_both_ways

VARIATIONS: dict[str, dict[str, Any]] = {
    "v1": {},
    "flat": {"layout": "flat"},
    "root_folder": {"root_folder": "export-2026"},
    "flat_root_folder": {"layout": "flat", "root_folder": "x"},
    "crlf_bom_blank": {"crlf": True, "bom": True, "blank_lines": True},
    "flat_crlf_bom_blank": {"layout": "flat", "crlf": True, "bom": True, "blank_lines": True},
    "omit_optional": {"omit_optional": True},
    "flat_omit_optional": {"layout": "flat", "omit_optional": True},
    "no_unknown_keys": {"unknown_keys": False},
    "no_uploads": {"uploads": False},
    "empty": {"empty": True},
    "omit_jsonl": {"omit_jsonl": True},
}


def _check(path: Path, truth: Any) -> None:
    tables = read_both_ways(path)
    assert tables.kind == truth.kind
    assert set(tables.tables) == set(table_names(truth.kind))
    for name, table in tables.tables.items():
        assert table.schema == schema_for(name, truth.kind), name
    assert tables["rejected"].num_rows == 0
    assert_matches_truth(tables.tables, truth)


@pytest.mark.parametrize("variation", sorted(VARIATIONS))
def test_batch_variations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variation: str) -> None:
    path = tmp_path / "batch.zip"
    truth = make_batch_export(path, ExportSpec(n_submissions=9, seed=3, **VARIATIONS[variation]))
    _check(path, truth)


@pytest.mark.parametrize("variation", sorted(VARIATIONS))
def test_collection_variations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variation: str
) -> None:
    path = tmp_path / "collection.zip"
    truth = make_collection_export(
        path, ExportSpec(n_submissions=9, seed=5, **VARIATIONS[variation])
    )
    _check(path, truth)


@pytest.mark.parametrize("layout", ["v1", "flat"])
def test_huge_line_longer_than_a_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    monkeypatch.setattr(archive_mod, "CHUNK_BYTES", 64 * 1024)
    path = tmp_path / "huge.zip"
    truth = make_batch_export(
        path, ExportSpec(n_submissions=6, layout=layout, huge_line_bytes=400_000, crlf=True)
    )
    _check(path, truth)
    with open_archive(path) as archive:
        values = build_tables(archive)["answers"].column("value").to_pylist()
    assert max(len(v or "") for v in values) == 400_000


def test_many_blocks_and_small_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of a few lines each, batches of a few rows: same rows, order kept."""
    monkeypatch.setattr(archive_mod, "CHUNK_BYTES", 4096)
    path = tmp_path / "blocks.zip"
    truth = make_batch_export(path, ExportSpec(n_submissions=30, seed=11))
    _check(path, truth)
    with open_archive(path) as archive:
        whole = build_tables(archive)
        batches = list(tables_mod.iter_record_batches(archive, batch_rows=7))
    assert all(batch.num_rows <= 7 for _, batch in batches)
    responses = [b for name, b in batches if name == "responses"]
    ids = [i for b in responses for i in b.column("response_id").to_pylist()]
    assert ids == whole["responses"].column("response_id").to_pylist()


def test_by_task_member_when_by_submission_absent(tmp_path: Path) -> None:
    """Without responses-by-submission.jsonl the reader uses responses-by-task.jsonl."""
    import zipfile

    src = tmp_path / "full.zip"
    truth = make_batch_export(src, ExportSpec(n_submissions=6, seed=2))
    dst = tmp_path / "by-task.zip"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if not info.filename.endswith("responses-by-submission.jsonl"):
                zout.writestr(info, zin.read(info))
    with open_archive(dst) as archive:
        tables = build_tables(archive)
    assert tables.row_counts["responses"] == truth.counts["responses"]
    assert tables.row_counts["answers"] == truth.counts["answers"]
    assert tables.row_counts["tasks"] == truth.counts["tasks"]
    subs = {r["submission_id"]: r["n_responses"] for r in tables["submissions"].to_pylist()}
    assert subs == {r["submission_id"]: r["n_responses"] for r in truth.submissions}
