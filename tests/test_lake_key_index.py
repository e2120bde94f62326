"""The key index: an incremental load reads only the data files that can hold its keys.

Each load records, per data file of an owner partition, the hashes of the first keys it
holds (``responses``: its rows per submission) under ``<lake>/_keys/``. A later load
reads only the files whose entries match; a file no entry names (another writer's,
``optimize``'s) is read in full and indexed, so the rows are those a full scan gives.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake

from prolific_ingest import optimize_lake, read_dataset
from prolific_ingest.lake import _changes, _keyindex, write_export
from prolific_ingest.lake._keyhash import hash_keys
from prolific_ingest.lake._layout import MERGE_KEYS
from tests.test_lake_readers import _rows, engines_read_the_same_rows

TABLES = ("submissions", "tasks", "responses", "answers", "files", "instructions")


def _write(lake: str, tables: Any, export_id: str, storage_options: Any = None, **kw: Any) -> Any:
    return write_export(
        tables,
        lake,
        kind="batch",
        owner_id="b1",
        export_id=export_id,
        storage_options=storage_options,
        **kw,
    )


def _reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the data files a merge reads the key columns of (files no entry names)."""
    read: list[str] = []
    real = _changes.read_entry

    def counting(dataset: Any, fragment: Any, first: str, counted: str | None) -> Any:
        read.append(fragment.path)
        return real(dataset, fragment, first, counted)

    monkeypatch.setattr(_changes, "read_entry", counting)
    return read


def _table(lake: str, name: str) -> pa.Table:
    delta = DeltaTable(f"{lake}/{name}")
    rows = delta.to_pyarrow_table().drop_columns(["export_id"])
    return rows.sort_by([(c, "ascending") for c in rows.column_names if c != "extra"])


def _snapshot(lake: str) -> dict[str, list[tuple[Any, ...]]]:
    return {name: _rows(_table(lake, name)) for name in TABLES}


def _n_responses(lake: str) -> dict[str, int]:
    subs = DeltaTable(f"{lake}/submissions").to_pyarrow_table()
    ids = subs.column("submission_id").to_pylist()
    return dict(zip(ids, subs.column("n_responses").to_pylist(), strict=True))


def _counted(lake: str) -> dict[str, int]:
    ids = DeltaTable(f"{lake}/responses").to_pyarrow_table(columns=["submission_id"])
    counts = pc.value_counts(ids.column("submission_id"))
    return dict(
        zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True)
    )


def _overlap(make_export: Any) -> Any:
    """10 responses of the first export, with a changed value, and 20 new ones."""
    tables = make_export("b1", 30, start=30, tag="v1")
    changed = make_export("b1", 10, start=30, tag="v2")
    for name in ("responses", "answers", "submissions"):
        tables[name] = pa.concat_tables([changed[name], tables[name].slice(changed[name].num_rows)])
    return tables


@pytest.mark.parametrize("sink_target", ["local", "s3"], indirect=True)
def test_an_incremental_load_reads_no_key_column_of_files_the_index_rules_out(
    sink_target: Any, make_export: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, opts = sink_target.output, sink_target.storage_options
    _write(out, make_export("b1", 40, tag="v1"), "e1", opts)
    read = _reads(monkeypatch)
    result = _write(out, make_export("b1", 10, start=40, tag="v1"), "e2", opts)
    assert result.modes["responses"] == "merge"
    assert read == []  # every file of the partition is indexed, and none holds a new key
    answers = read_dataset(out, "answers", "b1", storage_options=opts)
    assert len(answers) == 100
    assert sink_target.fs.exists(f"{sink_target.root}/_keys/responses/batch_id=b1")


@pytest.mark.parametrize("partition_by", [(), ("date",)])
def test_without_an_index_every_file_is_read_and_the_rows_are_the_same(
    tmp_path: Path, make_export: Any, monkeypatch: pytest.MonkeyPatch, partition_by: Any
) -> None:
    days = [datetime(2026, 1, d, tzinfo=UTC) for d in (1, 2)]
    first = make_export("b1", 40, tag="v1", day=days[0])
    later = make_export("b1", 20, start=40, tag="v1", day=days[1])  # a second day's files
    for name in ("responses", "answers", "submissions"):
        first[name] = pa.concat_tables([first[name], later[name]])
    lakes = {}
    for name, drop in (("indexed", False), ("scanned", True)):
        lake = str(tmp_path / name)
        _write(lake, first, "e1", partition_by=partition_by)
        if drop:
            for segment in (tmp_path / name / "_keys").rglob("*.parquet"):
                segment.write_bytes(b"not a segment")  # unreadable: ignored
        read = _reads(monkeypatch)
        _write(lake, _overlap(make_export), "e2", partition_by=partition_by)
        assert bool(read) == drop, name
        lakes[name] = lake
    assert _snapshot(lakes["indexed"]) == _snapshot(lakes["scanned"])
    for lake in lakes.values():
        assert _n_responses(lake) == _counted(lake)


def test_files_written_by_optimize_are_read_once_then_indexed(
    tmp_path: Path, make_export: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = str(tmp_path / "lake")
    for i in range(4):
        _write(lake, make_export("b1", 10, start=10 * i, tag="v1"), f"e{i}")
    optimize_lake(lake)
    for name in TABLES:  # the compacted files' originals are gone too
        DeltaTable(f"{lake}/{name}").vacuum(
            retention_hours=0, enforce_retention_duration=False, dry_run=False
        )
    read = _reads(monkeypatch)
    # Responses 35..39 are held (unchanged, so no file is rewritten), 40..44 are new.
    _write(lake, make_export("b1", 10, start=35, tag="v1"), "e4")
    assert read  # optimize's files: no entry names them, so their keys are read
    read.clear()
    _write(lake, make_export("b1", 10, start=38, tag="v1"), "e5")
    assert read == []  # and indexed by the load that read them
    assert _n_responses(lake) == _counted(lake)
    ids = DeltaTable(f"{lake}/responses").to_pyarrow_table().column("response_id").to_pylist()
    assert sorted(ids) == [f"r{i:05d}" for i in range(48)]


def test_a_foreign_writers_rows_are_found_by_the_next_load(
    tmp_path: Path, make_export: Any
) -> None:
    lake = str(tmp_path / "lake")
    _write(lake, make_export("b1", 10, tag="v1"), "e1")
    # Another writer appends a response the next export carries (so it is held, not new).
    extra = make_export("b1", 1, start=10, tag="theirs")["responses"]
    schema = DeltaTable(f"{lake}/responses").schema().to_arrow()
    theirs = extra.append_column("batch_id", pa.array(["b1"])).append_column(
        "export_id", pa.array(["foreign"])
    )
    write_deltalake(f"{lake}/responses", theirs.select(pa.schema(schema).names), mode="append")
    _write(lake, make_export("b1", 5, start=8, tag="v1"), "e2")
    rows = DeltaTable(f"{lake}/responses").to_pyarrow_table()
    ids = rows.column("response_id").to_pylist()
    assert sorted(ids) == sorted(set(ids)) == [f"r{i:05d}" for i in range(13)]
    assert _n_responses(lake) == _counted(lake)


def test_every_engine_reads_the_rows_of_an_indexed_incremental_lake(
    tmp_path: Path, make_export: Any
) -> None:
    lake = str(tmp_path / "lake")
    _write(lake, make_export("b1", 40, tag="v1"), "e1")
    _write(lake, _overlap(make_export), "e2")
    for name in ("responses", "answers"):
        want = _rows(DeltaTable(f"{lake}/{name}").to_pyarrow_table())
        assert "daft" in engines_read_the_same_rows(f"{lake}/{name}", want), name
        keys = DeltaTable(f"{lake}/{name}").to_pyarrow_table(columns=list(MERGE_KEYS[name]))
        assert len(set(zip(*keys.to_pydict().values(), strict=True))) == keys.num_rows


def test_many_segments_are_merged_into_one_that_names_only_live_files(
    tmp_path: Path, make_export: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_keyindex, "MAX_SEGMENTS", 3)
    lake = str(tmp_path / "lake")
    for i in range(6):
        _write(lake, make_export("b1", 5, start=5 * i, tag="v1"), f"e{i}")
    folder = tmp_path / "lake" / "_keys" / "responses" / "batch_id=b1"
    assert 1 <= len(list(folder.glob("*.parquet"))) <= 3
    read = _reads(monkeypatch)
    _write(lake, make_export("b1", 5, start=30, tag="v1"), "e6")
    assert read == []
    assert _n_responses(lake) == _counted(lake)


def test_key_hashes_are_stable_null_safe_and_independent_of_chunking() -> None:
    values = pa.array(["a", None, "", "r00001", "x" * 100, "é"])
    hashes = hash_keys(values)
    assert len(set(hashes.tolist())) == len(values)
    assert hashes.tolist() == hash_keys(pa.chunked_array([values[:2], values[2:]])).tolist()
    assert hashes[3:].tolist() == hash_keys(values[3:]).tolist()
    # On storage: a change of these values needs a new index format.
    assert hash_keys(pa.array(["r00001", None, "", "x" * 20])).tolist() == [
        9017673185186967647,
        7959387129361299745,
        5197578548964807871,
        3183420336962780579,
    ]


def test_entries_kept_on_disk_until_the_commit_come_back_unchanged() -> None:
    import numpy as np
    import pyarrow as pa

    from prolific_ingest.lake._keyrows import Entry, EntrySpool

    kept = [
        Entry("a/part-0.parquet", np.array([1, 5, 2**63 + 7], np.uint64), None),
        Entry(
            "a/part-1.parquet",
            np.empty(0, np.uint64),
            pa.table({"value": ["s1", "s2"], "n": pa.array([3, 4], pa.int64())}),
        ),
    ]
    with EntrySpool() as spool:
        for entry in kept:
            spool.append(entry)
        assert spool.paths == ["a/part-0.parquet", "a/part-1.parquet"]
        back = list(spool)
    assert [e.path for e in back] == [e.path for e in kept]
    assert back[0].hashes.tolist() == kept[0].hashes.tolist()
    assert back[1].hashes.tolist() == []
    assert back[0].counts is not None and back[0].counts.num_rows == 0
    assert back[1].counts is not None
    assert back[1].counts.to_pylist() == [{"value": "s1", "n": 3}, {"value": "s2", "n": 4}]
