"""The optional dlt source: merge resources, incremental watermarks, duckdb end to end."""

from __future__ import annotations

import importlib
import logging
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

dlt = pytest.importorskip("dlt")
duckdb = pytest.importorskip("duckdb")

from prolific_ingest import PermissionDeniedError
from prolific_ingest.dlt_source import PRIMARY_KEYS, RESOURCE_TABLES, _prepare, prolific_source

# Only dlt's own deprecation notices (none with dlt 1.31; future versions may add some).
pytestmark = pytest.mark.filterwarnings(r"ignore::DeprecationWarning:dlt(\..*)?")

DATASET = "prolific_data"


@pytest.fixture(autouse=True)
def _isolated_dlt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep dlt away from the user's home and project; no telemetry, quiet logs."""
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt-data"))
    monkeypatch.setenv("DLT_PROJECT_DIR", str(tmp_path / "dlt-project"))
    monkeypatch.setenv("RUNTIME__LOG_LEVEL", "WARNING")
    monkeypatch.setenv("RUNTIME__DLTHUB_TELEMETRY", "false")


@pytest.fixture
def conn(prolific_emulator, tmp_path):
    return {
        "base_url": prolific_emulator.base_url,
        "token": prolific_emulator.token,
        "cache": str(tmp_path / "cache"),
    }


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "prolific.duckdb"


def _pipeline(tmp_path: Path, db: Path):
    return dlt.pipeline(
        pipeline_name="prolific_test",
        destination=dlt.destinations.duckdb(str(db)),
        dataset_name=DATASET,
        pipelines_dir=str(tmp_path / "pipelines"),
    )


def _query(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.sql(sql).fetchall()


def _tables(db: Path) -> set[str]:
    rows = _query(
        db, f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{DATASET}'"
    )
    return {r[0] for r in rows}


def _count(db: Path, table: str) -> int:
    return _query(db, f"SELECT count(*) FROM {DATASET}.{table}")[0][0]


def _distinct_keys(db: Path, table: str) -> int:
    keys = ", ".join(PRIMARY_KEYS[table])
    return _query(db, f"SELECT count(*) FROM (SELECT DISTINCT {keys} FROM {DATASET}.{table})")[0][0]


def _posts(emu) -> list[dict[str, str]]:
    return [r.query for r in emu.requests if r.host == "api" and r.method == "POST"]


def _state_marks(pipeline) -> dict[str, dict[str, str]]:
    return pipeline.state["sources"]["prolific"]["watermarks"]


def _created(rows) -> list[datetime]:
    return sorted(datetime.fromisoformat(str(r["created_at"])) for r in rows)


def _assert_matches_truth(db: Path, truth, tables=RESOURCE_TABLES) -> None:
    for table in tables:
        expected = truth.counts[table]
        if expected == 0:
            assert table not in _tables(db) or _count(db, table) == 0, table
            continue
        assert _count(db, table) == expected, table
        assert _distinct_keys(db, table) == expected, f"{table} has duplicate keys"


def test_first_run_loads_everything_and_second_run_only_the_tail(
    prolific_emulator, conn, tmp_path, db
):
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=41, n_submissions=4, uploads=True)
    overlap = timedelta(minutes=30)

    pipeline = _pipeline(tmp_path, db)
    pipeline.run(prolific_source([batch_id], overlap=overlap, **conn))
    first = _posts(emu)
    assert len(first) == 1
    assert "from" not in first[0]
    truth = emu.ground_truth(batch_id)
    _assert_matches_truth(db, truth)
    assert truth.counts["files"] > 0
    export_ids = _query(db, f"SELECT DISTINCT export_id FROM {DATASET}.answers")
    assert len(export_ids) == 1 and export_ids[0][0]
    for table in RESOURCE_TABLES:
        owners = _query(db, f"SELECT DISTINCT batch_id FROM {DATASET}.{table}")
        assert owners == [(batch_id,)], table
    latest = _created(truth.responses)[-1]
    marks = _state_marks(pipeline)[f"batch:{batch_id}"]
    assert set(marks) == set(RESOURCE_TABLES)
    assert {datetime.fromisoformat(m) for m in marks.values()} == {latest}

    emu.add_submissions(batch_id, 3)
    emu.clear_requests()
    pipeline = _pipeline(tmp_path, db)
    pipeline.run(prolific_source([batch_id], overlap=overlap, **conn))
    second = _posts(emu)
    assert len(second) == 1, "each batch is requested once per run, shared by every table"
    since = (latest - overlap).astimezone(UTC).replace(microsecond=0)
    assert second[0]["from"] == since.strftime("%Y-%m-%dT%H:%M:%SZ")

    before = truth.counts["responses"]
    truth = emu.ground_truth(batch_id)
    tail = emu.ground_truth(batch_id, since=since).counts["responses"]
    new = truth.counts["responses"] - before
    assert tail > new > 0, "the overlap re-delivers rows already loaded"
    _assert_matches_truth(db, truth)
    stored = {r[0] for r in _query(db, f"SELECT response_id FROM {DATASET}.responses")}
    assert stored == {r["response_id"] for r in truth.responses}
    assert len(_query(db, f"SELECT DISTINCT export_id FROM {DATASET}.responses")) == 2
    new_latest = _created(truth.responses)[-1]
    assert new_latest > latest
    marks = _state_marks(pipeline)[f"batch:{batch_id}"]
    assert {datetime.fromisoformat(m) for m in marks.values()} == {new_latest}


def test_collection_and_batch_in_one_source(prolific_emulator, conn, tmp_path, db):
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=42, n_submissions=3)
    collection_id = emu.add_collection(seed=43, n_submissions=3)
    pipeline = _pipeline(tmp_path, db)
    pipeline.run(prolific_source(batch_id, collection_id, **conn))
    batch, coll = emu.ground_truth(batch_id), emu.ground_truth(collection_id)
    for table in RESOURCE_TABLES:
        assert _count(db, table) == batch.counts[table] + coll.counts[table], table
    rows = _query(
        db,
        f"SELECT count(*) FROM {DATASET}.submissions "
        f"WHERE collection_id = '{collection_id}' AND batch_id IS NULL",
    )
    assert rows == [(coll.counts["submissions"],)]
    marks = _state_marks(pipeline)
    assert "tasks" not in marks[f"collection:{collection_id}"]
    assert "tasks" in marks[f"batch:{batch_id}"]


def test_initial_since_is_the_first_from_filter(prolific_emulator, conn, tmp_path, db):
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=44, n_submissions=4)
    responses = _created(emu.ground_truth(batch_id).responses)
    cut = responses[len(responses) // 2].replace(microsecond=0) + timedelta(seconds=1)
    _pipeline(tmp_path, db).run(prolific_source([batch_id], initial_since=cut, **conn))
    assert _posts(emu)[0]["from"] == cut.strftime("%Y-%m-%dT%H:%M:%SZ")
    truth = emu.ground_truth(batch_id, since=cut)
    assert 0 < truth.counts["responses"] < len(responses)
    assert _count(db, "responses") == truth.counts["responses"]


def test_a_table_never_loaded_forces_a_full_export(prolific_emulator, conn, tmp_path, db):
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=45, n_submissions=3)
    pipeline = _pipeline(tmp_path, db)
    pipeline.run(prolific_source([batch_id], **conn).with_resources("answers"))
    assert _tables(db) >= {"answers"}
    assert "responses" not in _tables(db)
    assert set(_state_marks(pipeline)[f"batch:{batch_id}"]) == {"answers"}

    emu.add_submissions(batch_id, 2)
    emu.clear_requests()
    pipeline = _pipeline(tmp_path, db)
    # Same (empty) filter as run 1: max_age=0 refuses to reuse run 1's cached export.
    pipeline.run(prolific_source([batch_id], max_age=0, **conn))
    assert "from" not in _posts(emu)[0], "responses had no watermark: load everything"
    _assert_matches_truth(db, emu.ground_truth(batch_id))


def test_a_failed_load_keeps_the_watermark(prolific_emulator, conn, tmp_path, db):
    emu = prolific_emulator
    good = emu.add_batch(seed=46, n_submissions=2)
    locked = emu.add_batch(seed=47, n_submissions=2, access=False)
    pipeline = _pipeline(tmp_path, db)
    from dlt.pipeline.exceptions import PipelineStepFailed

    with pytest.raises(PipelineStepFailed) as info:
        pipeline.run(prolific_source([good, locked], **conn))
    chain, exc = [], info.value
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert any(isinstance(e, PermissionDeniedError) for e in chain)
    assert not pipeline.state.get("sources", {}).get("prolific", {}).get("watermarks")


def test_token_is_not_stored_by_dlt(prolific_emulator, conn, tmp_path, db, caplog):
    caplog.set_level(logging.DEBUG)
    batch_id = prolific_emulator.add_batch(seed=48, n_submissions=2)
    pipeline = _pipeline(tmp_path, db)
    pipeline.run(prolific_source([batch_id], **conn))
    token = prolific_emulator.token.encode()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert token not in path.read_bytes(), path
    assert prolific_emulator.token not in caplog.text
    assert prolific_emulator.token not in repr(pipeline.state)


def test_importing_without_dlt_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlt", None)
    monkeypatch.delitem(sys.modules, "prolific_ingest.dlt_source")
    with pytest.raises(ImportError, match=r'pip install "prolific-ingest\[dlt\]"'):
        importlib.import_module("prolific_ingest.dlt_source")


def test_token_from_dlt_config_works_and_is_not_traced(
    prolific_emulator, tmp_path, db, monkeypatch
):
    emu = prolific_emulator
    monkeypatch.setenv("SOURCES__PROLIFIC__TOKEN", emu.token)
    batch_id = emu.add_batch(seed=49, n_submissions=2)
    pipeline = _pipeline(tmp_path, db)
    source = prolific_source(batch_id, base_url=emu.base_url, cache=str(tmp_path / "cache"))
    pipeline.run(source)
    assert _count(db, "submissions") == emu.ground_truth(batch_id).counts["submissions"]
    token = emu.token.encode()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert token not in path.read_bytes(), path
    assert emu.token not in str(pipeline.last_trace)


def test_nothing_is_requested_for_a_collection_when_only_tasks_are_selected(
    prolific_emulator, conn, tmp_path, db
):
    collection_id = prolific_emulator.add_collection(seed=50, n_submissions=2)
    pipeline = _pipeline(tmp_path, db)
    pipeline.run(prolific_source((), [collection_id], **conn).with_resources("tasks"))
    assert prolific_emulator.requests == []
    assert "tasks" not in _tables(db)


def _documented_pipeline_calls() -> list[str]:
    """The ``dlt.pipeline(...)`` call of docs/data-lakes.md and of the module docstring."""
    import re

    import prolific_ingest.dlt_source as module

    docs = (Path(__file__).resolve().parents[1] / "docs" / "data-lakes.md").read_text("utf-8")
    pattern = r"dlt\.pipeline\([^\n]*\)"
    return [*re.findall(pattern, docs), *re.findall(pattern, module.__doc__ or "")]


def test_the_documented_pipeline_runs_with_the_default_duckdb_file(
    prolific_emulator, conn, tmp_path, monkeypatch
):
    calls = _documented_pipeline_calls()
    assert len(calls) == 2 and calls[0] == calls[1], calls
    monkeypatch.chdir(tmp_path)  # destination="duckdb" writes <pipeline name>.duckdb here
    batch_id = prolific_emulator.add_batch(seed=47, n_submissions=3)
    pipeline = eval(calls[0], {"dlt": dlt})  # exactly as documented
    pipeline.run(prolific_source(batch_ids=[batch_id], **conn))
    db = tmp_path / f"{pipeline.pipeline_name}.duckdb"
    answers = _query(db, f"SELECT count(*) FROM {pipeline.dataset_name}.answers")[0][0]
    assert answers == prolific_emulator.ground_truth(batch_id).counts["answers"]


def test_tasks_merge_on_a_content_key_so_repeats_and_null_ids_load(tmp_path, db):
    """tasks has one row per distinct task content: a task_id may repeat (differing
    contents) or be null (a task object without one). dlt's primary key must be non-null
    and unique per row, so tasks merge on task_key, a hash of the content; loading the
    same rows again adds nothing."""
    import pyarrow as pa

    from prolific_ingest.tables import schema_for

    rows = [
        {"task_id": "t1", "batch_id": "b1", "metadata": '{"m":1}'},
        {"task_id": "t1", "batch_id": "b1", "metadata": '{"m":2}'},
        {"task_id": None, "batch_id": "b1", "datapoint": '{"text":"orphan"}'},
    ]
    table = pa.Table.from_pylist(rows, schema=schema_for("tasks", "batch"))
    prepared = _prepare(table, "tasks", kind="batch", owner_id="b1", export_id="e1")
    keys = prepared.column("task_key").to_pylist()
    assert len(set(keys)) == 3 and prepared.schema.field("task_key").nullable is False
    again = _prepare(table, "tasks", kind="batch", owner_id="b1", export_id="e2")
    assert again.column("task_key").to_pylist() == keys  # content only, not export_id

    @dlt.resource(name="tasks", primary_key=list(PRIMARY_KEYS["tasks"]), write_disposition="merge")
    def tasks(t):
        yield t

    pipeline = _pipeline(tmp_path, db)
    pipeline.run(tasks(prepared))
    pipeline.run(tasks(again))
    assert _count(db, "tasks") == 3
    got = _query(db, f"SELECT task_id, metadata FROM {DATASET}.tasks ORDER BY metadata NULLS FIRST")
    assert got == [(None, None), ("t1", '{"m":1}'), ("t1", '{"m":2}')]
