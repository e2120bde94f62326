"""Every engine reads each lake table identically: deltalake, Polars, DuckDB, Daft, Dask, read_dataset.

Spark's ``format("delta")`` needs the delta-spark jars, which no registry here serves: it
is documented (docs/data-lakes.md), not tested.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from prolific_ingest import ExportRef, LakeTarget, load_batch_export, read_dataset

TABLES = ("submissions", "tasks", "responses", "answers", "files", "instructions")


def _rows(table: pa.Table) -> list[tuple[Any, ...]]:
    """Rows as sorted tuples of text (engines differ in how they type timestamps/partitions)."""
    names = sorted(table.column_names)
    cols = [table.column(n).to_pylist() for n in names]
    return sorted(
        tuple("" if v is None else str(v) for v in row) for row in zip(*cols, strict=True)
    )


@pytest.fixture
def lake(prolific_emulator: Any, conn: dict[str, Any], tmp_path: Path) -> tuple[str, list[str]]:
    emu = prolific_emulator
    batches = [emu.add_batch(seed=60 + i, n_submissions=4 + i) for i in range(2)]
    out = str(tmp_path / "lake")
    for batch_id in batches:
        load_batch_export(batch_id, output=LakeTarget(out, incremental=True), **conn)
    emu.add_submissions(batches[0], 2)
    load_batch_export(batches[0], output=LakeTarget(out, incremental=True), **conn)  # a MERGE too
    return out, batches


def _timestamps_as_utc(table: pa.Table) -> pa.Table:
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type):
            col = table.column(i).cast(pa.timestamp("us", tz="UTC"))
            table = table.set_column(i, field.name, col)
    return table


def _dask_rows(uri: str) -> pa.Table:
    """The table at ``uri`` read by Dask (Arrow-backed pandas partitions), as Arrow."""
    import pandas as pd

    dask_deltatable = pytest.importorskip("dask_deltatable")
    frame = dask_deltatable.read_deltalake(
        uri, pyarrow_to_pandas={"types_mapper": pd.ArrowDtype}
    ).compute()
    return pa.Table.from_pandas(frame, preserve_index=False)


def engines_read_the_same_rows(uri: str, want: list[tuple[Any, ...]]) -> list[str]:
    """Read the Delta table at ``uri`` with every engine; assert each sees ``want``.

    Returns the engines that were compared (an engine that is not installed is left out).
    """
    seen = {}
    try:
        import polars
    except ImportError:
        pass
    else:
        seen["polars.read_delta"] = polars.read_delta(uri).to_arrow()
        seen["polars.scan_delta"] = polars.scan_delta(uri).collect().to_arrow()
    try:
        import duckdb
    except ImportError:
        pass
    else:
        con = duckdb.connect()
        con.register("t", DeltaTable(uri).to_pyarrow_dataset())
        seen["duckdb"] = con.sql("SELECT * FROM t").to_arrow_table()
    try:
        import daft
    except ImportError:
        pass
    else:
        seen["daft"] = daft.read_deltalake(uri).to_arrow()
    try:
        import dask_deltatable  # noqa: F401
    except ImportError:
        pass
    else:
        seen["dask"] = _dask_rows(uri)
    for engine, table in seen.items():
        assert _rows(_timestamps_as_utc(table)) == want, engine
    return sorted(seen)


@pytest.mark.parametrize("table", TABLES)
def test_polars_duckdb_daft_dask_and_read_dataset_read_the_same_rows(
    lake: tuple[str, list[str]], table: str
) -> None:
    for engine in ("polars", "duckdb", "daft"):
        pytest.importorskip(engine)
    out, _ = lake
    uri = f"{out}/{table}"
    want = _rows(DeltaTable(uri).to_pyarrow_table())
    assert want  # every table has rows in this lake
    assert _rows(read_dataset(out, table, as_arrow=True)) == want
    engines = engines_read_the_same_rows(uri, want)
    assert {"polars.read_delta", "polars.scan_delta", "duckdb", "daft"} <= set(engines)


def test_dask_reads_every_table_like_deltalake(lake: tuple[str, list[str]]) -> None:
    out, _ = lake
    for table in TABLES:
        uri = f"{out}/{table}"
        want = _rows(DeltaTable(uri).to_pyarrow_table())
        assert _rows(_timestamps_as_utc(_dask_rows(uri))) == want, table


def test_no_engine_sees_a_duplicate_key_after_an_overlapping_load(
    lake: tuple[str, list[str]],
) -> None:
    duckdb = pytest.importorskip("duckdb")
    out, batches = lake
    con = duckdb.connect()
    con.register("responses", DeltaTable(f"{out}/responses").to_pyarrow_dataset())
    total, distinct = con.execute(
        "SELECT count(*), count(DISTINCT response_id) FROM responses WHERE batch_id = ?",
        [batches[0]],
    ).fetchone()
    assert total == distinct > 0


def test_partition_filters_prune_files_in_polars_and_read_dataset(
    lake: tuple[str, list[str]],
) -> None:
    polars = pytest.importorskip("polars")
    out, batches = lake
    uri = f"{out}/answers"
    one = polars.scan_delta(uri).filter(polars.col("batch_id") == batches[1]).collect()
    assert set(one["batch_id"].to_list()) == {batches[1]}
    assert len(one) == len(read_dataset(out, "answers", ExportRef("batch", batches[1])))


def _add_actions(uri: str) -> list[dict[str, Any]]:
    return pa.table(DeltaTable(uri).get_add_actions(flatten=True)).to_pylist()


def test_a_first_load_is_one_streamed_overwrite_that_every_engine_reads(
    prolific_emulator: Any, conn: dict[str, Any], tmp_path: Path
) -> None:
    """pyarrow writes the files of a first load (not delta-rs), committed in one version."""
    import pyarrow.parquet as pq

    for engine in ("polars", "duckdb", "daft"):
        pytest.importorskip(engine)
    batch_id = prolific_emulator.add_batch(seed=71, n_submissions=6)
    out = str(tmp_path / "lake")
    load_batch_export(batch_id, output=LakeTarget(out, partition_by=("date",)), **conn)
    for table in TABLES:
        uri = f"{out}/{table}"
        delta = DeltaTable(uri)
        (commit,) = [h for h in delta.history() if h["version"] == delta.version()]
        assert commit["operation"] == "WRITE"
        assert commit["operationParameters"]["mode"] == "Overwrite"
        assert "predicate" not in commit["operationParameters"]  # not write_deltalake's
        actions = _add_actions(uri)
        assert actions, table
        for action in actions:
            created_by = pq.read_metadata(f"{uri}/{action['path']}").created_by
            assert created_by.startswith("parquet-cpp-arrow"), (table, created_by)
        want = _rows(delta.to_pyarrow_table())
        assert want
        assert _rows(read_dataset(out, table, as_arrow=True)) == want
        engines_read_the_same_rows(uri, want)
    dated = {a["partition.date"] for a in _add_actions(f"{out}/responses")}
    assert dated and None not in dated


def test_a_first_loads_file_statistics_hold_for_every_file(
    prolific_emulator: Any, conn: dict[str, Any], tmp_path: Path
) -> None:
    """Row counts, null counts and min/max in the log match each file's rows."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    batch_id = prolific_emulator.add_batch(seed=72, n_submissions=8)
    out = str(tmp_path / "lake")
    load_batch_export(batch_id, output=out, **conn)
    checked = 0
    for table in TABLES:
        uri = f"{out}/{table}"
        for action in _add_actions(uri):
            rows = pq.read_table(f"{uri}/{action['path']}")
            assert action["num_records"] == rows.num_rows
            for name in rows.column_names:
                col = rows.column(name)
                assert action[f"null_count.{name}"] == col.null_count, (table, name)
                low, high = action.get(f"min.{name}"), action.get(f"max.{name}")
                if low is None or high is None:
                    continue
                bounds = pc.min_max(col)
                if pa.types.is_timestamp(col.type):  # the log keeps milliseconds
                    assert low <= bounds["min"].as_py(), (table, name)
                    assert high >= bounds["max"].as_py(), (table, name)
                else:
                    assert (low, high) == (bounds["min"].as_py(), bounds["max"].as_py())
                checked += 1
    assert checked
