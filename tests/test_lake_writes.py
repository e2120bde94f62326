"""The lake is Delta Lake: one Delta table per export table, merged on natural keys."""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from prolific_ingest import (
    ConfigurationError,
    ExportRef,
    LakeNotFoundError,
    LakeTarget,
    LegacyLakeError,
    MissingPathError,
    committed_exports,
    load_batch_export,
    load_collection_export,
    read_dataset,
    read_export,
)
from prolific_ingest.lake import write_export
from prolific_ingest.lake._storage import delta_storage_options


def _keys(frame: Any, *cols: str) -> list[tuple[Any, ...]]:
    return sorted(zip(*(frame[c].astype(str) for c in cols), strict=True))


def _delta(target: Any, table: str) -> DeltaTable:
    opts = delta_storage_options(target.output, target.storage_options)
    return DeltaTable(f"{target.output}/{table}", storage_options=opts)


def _write(target: Any, tables: Any, export_id: str, owner: str = "b1", **kw: Any) -> Any:
    return write_export(
        tables,
        target.output,
        kind="batch",
        owner_id=owner,
        export_id=export_id,
        storage_options=target.storage_options,
        **kw,
    )


def test_every_table_is_a_delta_table_partitioned_by_owner_with_owner_and_export_columns(
    prolific_emulator: Any, conn: dict[str, Any], tmp_path: Path
) -> None:
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=21, n_submissions=6)
    out = str(tmp_path / "lake")
    exp = load_batch_export(batch_id, output=out, **conn)
    truth = emu.ground_truth(batch_id)
    assert exp.written is not None and not exp.written.skipped
    for table in ("submissions", "tasks", "responses", "answers", "files", "instructions"):
        delta = DeltaTable(f"{out}/{table}")
        assert delta.metadata().partition_columns == ["batch_id"]
        back = delta.to_pyarrow_table()
        assert back.num_rows == exp.row_counts[table]
        assert set(back.column("batch_id").to_pylist()) <= {batch_id}
        assert set(back.column("export_id").to_pylist()) <= {exp.export_id}
    assert not (tmp_path / "lake" / "rejected").exists()  # written only when it has rows
    answers = read_dataset(out, "answers", ExportRef("batch", batch_id))
    assert len(answers) == truth.counts["answers"]


def test_loading_the_same_export_twice_leaves_every_row_once(
    prolific_emulator: Any, conn: dict[str, Any], sink_target: Any
) -> None:
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=22, n_submissions=5)
    out, opts = sink_target.output, sink_target.storage_options
    first = load_batch_export(batch_id, output=LakeTarget(out, storage_options=opts), **conn)
    again = load_batch_export(batch_id, output=LakeTarget(out, storage_options=opts), **conn)
    assert again.export_id == first.export_id
    assert again.written is not None and again.written.skipped
    replaced = load_batch_export(
        batch_id, output=LakeTarget(out, storage_options=opts, overwrite=True), **conn
    )
    assert replaced.written is not None and not replaced.written.skipped
    truth = emu.ground_truth(batch_id)
    for table, keys in (
        ("responses", ("response_id",)),
        ("answers", ("response_id", "answer_index")),
    ):
        # Read the table itself, as any engine would: no de-duplication anywhere.
        rows = _delta(sink_target, table).to_pyarrow_table(columns=list(keys))
        assert rows.num_rows == truth.counts[table]
        assert (
            len(set(zip(*(rows.column(k).to_pylist() for k in keys), strict=True))) == rows.num_rows
        )
    records = committed_exports(out, ExportRef("batch", batch_id), storage_options=opts)
    assert [r["export_id"] for r in records] == [first.export_id] * 2


def test_an_overlapping_incremental_window_adds_exactly_the_new_responses(
    prolific_emulator: Any, conn: dict[str, Any], tmp_path: Path
) -> None:
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=23, n_submissions=10)
    other = emu.add_batch(seed=24, n_submissions=3)
    out = str(tmp_path / "lake")
    load_batch_export(other, output=out, **conn)
    load_batch_export(batch_id, output=LakeTarget(out, incremental=True), **conn)
    before = read_dataset(out, "responses", ExportRef("batch", batch_id))
    other_files = {
        p for p in DeltaTable(f"{out}/responses").file_uris() if f"batch_id={other}" in p
    }
    emu.add_submissions(batch_id, 4)
    emu.clear_requests()
    second = load_batch_export(batch_id, output=LakeTarget(out, incremental=True), **conn)
    post = next(r for r in emu.requests if r.method == "POST")
    assert "from" in post.query, "an incremental load must send the watermark as `from`"
    assert second.written is not None and second.written.modes["responses"] == "merge"
    truth = emu.ground_truth(batch_id)
    assert 0 < len(second.responses) < truth.counts["responses"]  # the tail plus the overlap
    table = DeltaTable(f"{out}/responses").to_pyarrow_table(filters=[("batch_id", "=", batch_id)])
    ids = table.column("response_id").to_pylist()
    assert sorted(ids) == sorted(r["response_id"] for r in truth.responses)
    assert len(set(ids)) == len(ids)
    new = set(ids) - set(before["response_id"].astype(str))
    assert len(new) == truth.counts["responses"] - len(before)
    # The MERGE touched only this batch's partition: the other batch's files are the same.
    assert other_files <= set(DeltaTable(f"{out}/responses").file_uris())
    answers = read_dataset(out, "answers", ExportRef("batch", batch_id))
    assert len(answers) == truth.counts["answers"]
    subs = read_dataset(out, "submissions", ExportRef("batch", batch_id))
    expected = {s["submission_id"]: s["n_responses"] for s in truth.submissions}
    assert dict(zip(subs["submission_id"], subs["n_responses"], strict=True)) == expected
    assert len(committed_exports(out, ExportRef("batch", batch_id))) == 2


def test_a_merge_rewrites_no_file_whose_rows_did_not_change(
    sink_target: Any, make_export: Any
) -> None:
    _write(sink_target, make_export("b1", 40, tag="v1"), "e1")
    files = set(_delta(sink_target, "responses").file_uris())
    result = _write(sink_target, make_export("b1", 10, start=40, tag="v1"), "e2")
    assert result.modes["responses"] == "merge"
    after = set(_delta(sink_target, "responses").file_uris())
    assert files <= after and len(after - files) == 1  # the new rows in one new file


def test_the_latest_export_wins_for_a_changed_row(sink_target: Any, make_export: Any) -> None:
    _write(sink_target, make_export("b1", 6, tag="old"), "e1")
    _write(sink_target, make_export("b1", 2, tag="new"), "e2")
    answers = read_dataset(
        sink_target.output,
        "answers",
        ExportRef("batch", "b1"),
        storage_options=sink_target.storage_options,
    )
    by_response = dict(zip(answers["response_id"], answers["value"], strict=False))
    assert by_response["r00000"] == "new" and by_response["r00005"] == "old"
    assert len(answers) == 12
    exports = dict(zip(answers["response_id"], answers["export_id"], strict=False))
    assert exports["r00000"] == "e2" and exports["r00005"] == "e1"


def test_tasks_keep_one_row_per_distinct_content_across_exports(
    tmp_path: Path, make_export: Any
) -> None:
    lake = str(tmp_path / "lake")
    first = make_export("b1", 2)
    tasks = first["tasks"]
    other = tasks.set_column(4, "metadata", pa.array(['{"m":1}', None, None]))
    write_export(first, lake, kind="batch", owner_id="b1", export_id="e1")
    write_export({**first, "tasks": other}, lake, kind="batch", owner_id="b1", export_id="e2")
    back = read_dataset(lake, "tasks", ExportRef("batch", "b1"))
    assert len(back) == 4  # t0, t1, t2 and t0 with other metadata; nulls matched null-safe


def test_collection_exports_are_partitioned_by_collection_id(
    prolific_emulator: Any, conn: dict[str, Any], tmp_path: Path
) -> None:
    collection_id = prolific_emulator.add_collection(seed=25, n_submissions=5)
    out = tmp_path / "lake"
    load_collection_export(collection_id, output=str(out), **conn)
    assert DeltaTable(str(out / "answers")).metadata().partition_columns == ["collection_id"]
    assert not (out / "tasks").exists()
    back = read_dataset(str(out), "answers", ExportRef("collection", collection_id))
    assert len(back) == prolific_emulator.ground_truth(collection_id).counts["answers"]
    assert set(back["collection_id"]) == {collection_id}


def test_date_partitioning_splits_responses_by_utc_day(
    prolific_emulator: Any, conn: dict[str, Any], tmp_path: Path
) -> None:
    batch_id = prolific_emulator.add_batch(seed=26, n_submissions=8)
    out = tmp_path / "lake"
    exp = load_batch_export(batch_id, output=LakeTarget(str(out), partition_by=["date"]), **conn)
    delta = DeltaTable(str(out / "responses"))
    assert delta.metadata().partition_columns == ["batch_id", "date"]
    assert len({p["date"] for p in delta.partitions()}) >= 2
    back = read_dataset(str(out), "responses", ExportRef("batch", batch_id))
    assert _keys(back, "response_id") == _keys(exp.responses, "response_id")
    with pytest.raises(ValueError, match="partition_by"):
        load_batch_export(batch_id, output=LakeTarget(str(out), partition_by=["hour"]), **conn)


def test_empty_tables_are_created_with_their_schema(tmp_path: Path, make_export: Any) -> None:
    lake = str(tmp_path / "lake")
    write_export(make_export("b1", 0), lake, kind="batch", owner_id="b1", export_id="e0")
    for table in ("responses", "answers", "files"):
        back = read_dataset(lake, table, ExportRef("batch", "b1"), as_arrow=True)
        assert back.num_rows == 0
        assert {"batch_id", "export_id"} <= set(back.schema.names)
    assert read_dataset(lake, "rejected", ExportRef("batch", "b1")).empty


def test_quarantined_lines_land_in_a_rejected_table(tmp_path: Path) -> None:
    import zipfile

    from prolific_ingest.testing import ExportSpec, make_batch_export

    good = tmp_path / "good.zip"
    make_batch_export(good, ExportSpec(n_submissions=3, seed=5))
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("responses-by-submission.jsonl"):
                data += b'\n{"submission_id": broken\n{"also": broken\n'
            dst.writestr(info, data)
    exp = read_export(str(path), on_bad_records="quarantine")
    lake = str(tmp_path / "lake")
    exp.to_lake(lake)
    rejected = read_dataset(lake, "rejected", ExportRef("batch", exp.owner_id))
    assert len(rejected) == exp.row_counts["rejected"] == 2
    exp.to_lake(LakeTarget(lake, overwrite=True))
    assert len(read_dataset(lake, "rejected", ExportRef("batch", exp.owner_id))) == 2


def test_a_column_added_later_evolves_the_table_without_rewriting_it(
    tmp_path: Path, make_export: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = str(tmp_path / "lake")
    write_export(make_export("b1", 4), lake, kind="batch", owner_id="b1", export_id="e1")
    old_files = set(DeltaTable(f"{lake}/files").file_uris())
    from prolific_ingest.lake import _layout, _spool

    real = _layout.lake_schema

    def newer(table: str, kind: str, partition_by: Any = ()) -> pa.Schema:
        schema = real(table, kind, partition_by)
        return schema.append(pa.field("checksum", pa.string())) if table == "files" else schema

    monkeypatch.setattr(_spool, "lake_schema", newer)
    rows = make_export("b2", 2)
    write_export(rows, lake, kind="batch", owner_id="b2", export_id="e2")
    delta = DeltaTable(f"{lake}/files")
    assert "checksum" in delta.schema().to_arrow().names  # type: ignore[attr-defined]
    assert old_files <= set(delta.file_uris())


def test_a_memory_url_or_unknown_protocol_is_refused_before_any_download(
    prolific_emulator: Any, conn: dict[str, Any]
) -> None:
    batch_id = prolific_emulator.add_batch(seed=27, n_submissions=2)
    prolific_emulator.clear_requests()
    with pytest.raises(ConfigurationError, match="memory://"):
        load_batch_export(batch_id, output="memory://lake", **conn)
    with pytest.raises(ConfigurationError, match="ftp"):
        load_batch_export(batch_id, output="ftp://host/lake", **conn)
    assert prolific_emulator.requests == []


def test_the_old_manifest_layout_is_refused_with_the_rebuild_command(
    tmp_path: Path, make_export: Any
) -> None:
    lake = tmp_path / "lake"
    (lake / "_manifests" / "batch_id=b1").mkdir(parents=True)
    (lake / "_manifests" / "batch_id=b1" / "e1.json").write_text(json.dumps({"export_id": "e1"}))
    with pytest.raises(LegacyLakeError, match="--offline --out") as info:
        write_export(make_export("b1", 2), str(lake), kind="batch", owner_id="b1", export_id="e2")
    assert info.value.url == str(lake)
    with pytest.raises(LegacyLakeError):
        read_dataset(str(lake), "responses")
    assert not (lake / "responses").exists()


def test_reading_a_lake_that_does_not_exist_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(MissingPathError) as missing:
        read_dataset(str(tmp_path / "nowhere"), "responses")
    assert isinstance(missing.value, FileNotFoundError)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LakeNotFoundError, match="responses") as info:
        read_dataset(str(tmp_path / "empty"), "responses")
    assert isinstance(info.value, FileNotFoundError)
    assert committed_exports(str(tmp_path / "empty")) == []
    with pytest.raises(ValueError, match="table"):
        read_dataset(str(tmp_path), "secrets")


def test_read_dataset_time_travel_pruning_and_arrow(tmp_path: Path, make_export: Any) -> None:
    lake = str(tmp_path / "lake")
    write_export(make_export("b1", 4), lake, kind="batch", owner_id="b1", export_id="e1")
    v_first = DeltaTable(f"{lake}/responses").version()
    between = datetime.now(UTC)
    write_export(make_export("b1", 4, start=4), lake, kind="batch", owner_id="b1", export_id="e2")
    write_export(make_export("b2", 3), lake, kind="batch", owner_id="b2", export_id="e3")
    assert len(read_dataset(lake, "responses")) == 11
    assert len(read_dataset(lake, "responses", ExportRef("batch", "b1"))) == 8
    assert len(read_dataset(lake, "responses", ExportRef("batch", "b1"), version=v_first)) == 4
    assert len(read_dataset(lake, "responses", ExportRef("batch", "b1"), as_of=between)) == 4
    some = read_dataset(lake, "responses", columns=["response_id", "batch_id"], as_arrow=True)
    assert isinstance(some, pa.Table) and some.schema.names == ["response_id", "batch_id"]
    late = read_dataset(
        lake,
        "responses",
        ExportRef("batch", "b1"),
        filters=[("created_at", ">=", datetime(2026, 1, 1, 0, 6, tzinfo=UTC))],
    )
    assert sorted(late["response_id"]) == ["r00006", "r00007"]
    with pytest.raises(ValueError, match="name one owner"):
        read_dataset(lake, "responses", ExportRef("batch", "b1"), collection_id="c1")
    with pytest.raises(ValueError, match="not both"):
        read_dataset(lake, "responses", version=1, as_of=between)


def test_read_dataset_dedup_is_deprecated_and_ignored(tmp_path: Path, make_export: Any) -> None:
    lake = str(tmp_path / "lake")
    write_export(make_export("b1", 3), lake, kind="batch", owner_id="b1", export_id="e1")
    with pytest.warns(DeprecationWarning, match="dedup"):
        frame = read_dataset(lake, "responses", dedup=False)
    assert len(frame) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_dataset(lake, "responses")


def test_load_records_carry_filter_watermark_counts_versions(
    tmp_path: Path, make_export: Any
) -> None:
    lake = str(tmp_path / "lake")
    flt = {"study_id": None, "from": "2026-01-01T00:00:00Z", "to": None}
    result = write_export(
        make_export("b1", 5), lake, kind="batch", owner_id="b1", export_id="e1", filter=flt
    )
    (record,) = committed_exports(lake)
    assert record["export_id"] == "e1" and record["owner_id"] == "b1"
    assert record["filter"] == flt
    assert datetime.fromisoformat(record["watermark"]) == datetime(
        2026, 1, 1, tzinfo=UTC
    ) + timedelta(minutes=4)
    assert record["counts"]["responses"] == 5 and record["counts"]["answers"] == 10
    assert record["versions"] == result.versions
    assert record["library_version"]
    assert committed_exports(lake, kind="collection") == []


def test_export_to_parquet_writes_one_plain_file_per_table(
    tmp_path: Path, prolific_emulator: Any, conn: dict[str, Any]
) -> None:
    import pyarrow.parquet as pq

    batch_id = prolific_emulator.add_batch(seed=28, n_submissions=3)
    exp = load_batch_export(batch_id, **conn)
    written = exp.to_parquet(str(tmp_path / "share"))
    assert set(written) == set(exp.row_counts)
    for name, url in written.items():
        assert pq.read_table(url).num_rows == exp.row_counts[name]
    with pytest.raises(FileExistsError):
        exp.to_parquet(str(tmp_path / "share"))
    with pytest.warns(DeprecationWarning, match="partition_by"):
        exp.to_parquet(str(tmp_path / "share"), overwrite=True, partition_by=["date"])


def test_table_files_are_read_back_one_row_group_at_a_time(tmp_path: Path) -> None:
    """Reading a whole file with ``iter_batches`` reads ahead across row groups (memory)."""
    import pyarrow.parquet as pq

    from prolific_ingest.lake import _spool

    table = pa.table({"n": pa.array(range(25_000), pa.int64())})
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=10_000)
    parquet = pq.ParquetFile(path)
    batches = list(_spool._row_group_batches(parquet, None))
    assert pa.Table.from_batches(batches).equals(table)
    edges = {0}
    for batch in batches:  # no batch spans two row groups
        first = batch.column(0)[0].as_py()
        assert first // 10_000 == (first + batch.num_rows - 1) // 10_000
        assert batch.num_rows <= _spool.READ_BATCH_ROWS
        edges.add(first)
    assert {10_000, 20_000} <= edges
