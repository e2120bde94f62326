"""What the sinks write is read identically by pyarrow.dataset, DuckDB and Dask."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from prolific_ingest import sinks

# Dask's parquet reader calls DataFrame.reset_index(inplace=True), deprecated in pandas 3.1.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The inplace keyword in DataFrame.reset_index:pandas.errors.Pandas4Warning"
)

BATCHES = ("b0aa1", "b0bb2")
STR_PARTS = ds.partitioning(
    pa.schema([("batch_id", pa.string()), ("export_id", pa.string())]), flavor="hive"
)


def _write_lake(output: str, make_export: Any, sink_schemas: Any, **kw: Any) -> None:
    """Two exports for each of two batches; the second export overlaps the first."""
    for n, batch in enumerate(BATCHES):
        for k, export_id in enumerate(("e1", "e2")):
            tables = make_export(
                batch,
                6,
                start=100 * n + 3 * k,
                tag=f"v{k}",
                day=datetime(2026, 1, 1 + k, tzinfo=UTC),
            )
            sinks.write_parquet(
                tables,
                output,
                kind="batch",
                owner_id=batch,
                export_id=f"{export_id}-{batch}",
                schemas=sink_schemas(),
                **kw,
            )
    # an empty export must not disturb any engine
    sinks.write_parquet(
        {}, output, kind="batch", owner_id=BATCHES[0], export_id="e0-empty",
        schemas=sink_schemas(), **kw,
    )  # fmt: skip


def _norm(frame: pd.DataFrame, columns: list[str], keys: list[str]) -> list[dict[str, Any]]:
    """Rows as plain Python values (strings / ints / ISO UTC text), sorted by ``keys``."""
    out = pd.DataFrame(index=range(len(frame)))
    for col in columns:
        values = frame[col].reset_index(drop=True)
        if col == "created_at":
            stamps = pd.to_datetime(values, utc=True)
            out[col] = [None if pd.isna(v) else v.isoformat() for v in stamps]
        else:
            out[col] = [None if pd.isna(v) else str(v) for v in values]
    rows: list[dict[str, Any]] = out.to_dict("records")
    return sorted(rows, key=lambda r: tuple(str(r[k]) for k in keys))


def _expected(output: str, table: str, **kw: Any) -> pd.DataFrame:
    return sinks.read_dataset(output, table, dedup=False, **kw)


@pytest.mark.parametrize(
    ("table", "keys"),
    [("responses", ["response_id", "export_id"]), ("submissions", ["submission_id", "export_id"])],
)
def test_pyarrow_duckdb_dask_read_identical_rows(
    tmp_path: Path, make_export: Any, sink_schemas: Any, table: str, keys: list[str]
) -> None:
    duckdb = pytest.importorskip("duckdb")
    dd = pytest.importorskip("dask.dataframe")
    out = str(tmp_path / "lake")
    _write_lake(out, make_export, sink_schemas)
    expected = _expected(out, table)
    names = sink_schemas()[table].names
    columns = [*names, *(["batch_id"] if "batch_id" not in names else []), "export_id"]
    want = _norm(expected, columns, keys)
    assert len(want) == (24 if table == "responses" else 14)

    got_pyarrow = ds.dataset(f"{out}/{table}", format="parquet", partitioning="hive").to_table()
    got_duckdb = duckdb.sql(
        f"SELECT * FROM read_parquet('{out}/{table}/**/*.parquet', hive_partitioning=true)"
    ).df()
    got_dask = dd.read_parquet(f"{out}/{table}").compute()
    got_dask_typed = dd.read_parquet(
        f"{out}/{table}", dataset={"partitioning": STR_PARTS}
    ).compute()

    assert _norm(got_pyarrow.to_pandas(), columns, keys) == want
    assert _norm(got_duckdb, columns, keys) == want
    assert _norm(got_dask, columns, keys) == want
    assert _norm(got_dask_typed, columns, keys) == want
    # the partition column comes back with the file data's type in pyarrow
    assert got_pyarrow.schema.field("batch_id").type == pa.string()


def test_date_partitioned_lake_reads_the_same_in_pyarrow_and_duckdb(
    tmp_path: Path, make_export: Any, sink_schemas: Any
) -> None:
    duckdb = pytest.importorskip("duckdb")
    dd = pytest.importorskip("dask.dataframe")
    out = str(tmp_path / "lake")
    _write_lake(out, make_export, sink_schemas, partition_by=("date",))
    columns = [*sink_schemas()["responses"].names, "batch_id", "export_id"]
    keys = ["response_id", "export_id"]
    want = _norm(_expected(out, "responses"), columns, keys)

    got_pyarrow = ds.dataset(f"{out}/responses", format="parquet", partitioning="hive")
    got_duckdb = duckdb.sql(
        f"SELECT * FROM read_parquet('{out}/responses/**/*.parquet', hive_partitioning=true)"
    ).df()
    got_dask = dd.read_parquet(f"{out}/responses").compute()

    assert _norm(got_pyarrow.to_table().to_pandas(), columns, keys) == want
    assert _norm(got_duckdb, columns, keys) == want
    assert _norm(got_dask, columns, keys) == want
    days = {str(d)[:10] for d in got_duckdb["date"]}
    assert days == {"2026-01-01", "2026-01-02"}


def test_pyarrow_reads_the_lake_from_s3(s3: Any, make_export: Any, sink_schemas: Any) -> None:
    out = s3.url("lake")
    _write_lake_s3(out, s3.storage_options, make_export, sink_schemas)
    columns = [*sink_schemas()["responses"].names, "batch_id", "export_id"]
    keys = ["response_id", "export_id"]
    want = _norm(
        sinks.read_dataset(out, "responses", dedup=False, storage_options=s3.storage_options),
        columns,
        keys,
    )
    assert len(want) == 12

    dataset = ds.dataset(
        f"{s3.bucket}/lake/responses", filesystem=s3.fs, format="parquet", partitioning=STR_PARTS
    )
    assert _norm(dataset.to_table().to_pandas(), columns, keys) == want


def _write_lake_s3(out: str, options: Any, make_export: Any, sink_schemas: Any) -> None:
    for n, batch in enumerate(BATCHES):
        sinks.write_parquet(
            {"responses": make_export(batch, 6, start=100 * n)["responses"]},
            out,
            kind="batch",
            owner_id=batch,
            export_id=f"e1-{batch}",
            schemas={"responses": sink_schemas()["responses"]},
            storage_options=options,
        )
