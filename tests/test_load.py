"""load_batch_export / load_collection_export end to end, against the emulator over real sockets."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from prolific_ingest import (
    AuthenticationError,
    CacheMissError,
    Export,
    ExportFailedError,
    ExportRef,
    NotFoundError,
    PermissionDeniedError,
    ProlificIngestError,
    Settings,
    load_batch_export,
    load_collection_export,
)
from tests._truth import assert_matches_truth

VARIATIONS = {
    "v1": {},
    "flat": {"layout": "flat"},
    "root-folder": {"root_folder": "export-2026-11-29"},
    "crlf-bom-blank": {"crlf": True, "bom": True, "blank_lines": True},
    "huge-line": {"huge_line_bytes": 3_000_000, "n_submissions": 4},
    "optional-missing": {"omit_optional": True},
    "no-unknown-keys": {"unknown_keys": False},
    "empty": {"empty": True},
    "members-absent": {"omit_jsonl": True},
    "no-uploads": {"uploads": False},
}


@pytest.fixture
def emu(prolific_emulator):
    return prolific_emulator


@pytest.mark.parametrize("variation", sorted(VARIATIONS))
def test_every_spec_variation_loads_exactly(emu, conn, variation):
    batch_id = emu.add_batch(seed=7, **{"n_submissions": 12, **VARIATIONS[variation]})
    exp = load_batch_export(batch_id, **conn)
    assert_matches_truth(exp.arrow.tables, emu.ground_truth(batch_id))
    assert exp.batch_id == batch_id
    assert exp.collection_id is None


@pytest.mark.parametrize("variation", ["v1", "root-folder", "crlf-bom-blank", "empty"])
def test_collections_share_the_code_path(emu, conn, variation):
    options = {k: v for k, v in VARIATIONS[variation].items() if k != "layout"}
    collection_id = emu.add_collection(seed=3, **{"n_submissions": 10, **options})
    exp = load_collection_export(collection_id, **conn)
    assert exp.kind == "collection"
    assert exp.collection_id == collection_id
    assert "tasks" not in exp.tables
    assert_matches_truth(exp.arrow.tables, emu.ground_truth(collection_id))


def test_export_object_surface(emu, conn):
    batch_id = emu.add_batch(seed=1, n_submissions=8)
    exp = load_batch_export(batch_id, **conn)
    assert isinstance(exp, Export)
    assert set(exp.tables) == {
        "submissions",
        "tasks",
        "responses",
        "answers",
        "files",
        "instructions",
        "rejected",
    }
    for name, frame in exp.tables.items():
        assert getattr(exp, name) is frame
        assert all(isinstance(dtype, pd.ArrowDtype) for dtype in frame.dtypes), name
    created = exp.responses["created_at"].dtype
    assert created.pyarrow_dtype == pa.timestamp("us", tz="UTC")
    assert exp.metadata["id"] == batch_id
    assert Path(exp.archive_url).name == "archive.zip"
    assert exp.fetched_at.tzinfo is not None
    text = repr(exp)
    assert exp.export_id in text
    assert f"answers={len(exp.answers)}" in text


def test_open_file_reads_an_uploaded_file(emu, conn):
    batch_id = emu.add_batch(seed=2, n_submissions=6, uploads=True)
    exp = load_batch_export(batch_id, **conn)
    truth = emu.ground_truth(batch_id)
    assert truth.files, "the generator should have made uploads"
    with_path = exp.answers.dropna(subset=["file_path"])
    assert len(with_path) == len(truth.files)
    path = with_path["file_path"].iloc[0]
    with exp.open_file(path) as fh:
        data = fh.read()
    size = exp.files.set_index("path").loc[path, "size_bytes"]
    assert len(data) == size


def test_reload_by_export_id_offline_makes_no_network_call(emu, conn):
    batch_id = emu.add_batch(seed=4, n_submissions=5)
    first = load_batch_export(batch_id, **conn)
    before = len(emu.requests)
    again = load_batch_export(batch_id, export_id=first.export_id, offline=True, **conn)
    assert len(emu.requests) == before
    assert again.export_id == first.export_id
    for name in first.tables:
        assert again.arrow.tables[name].equals(first.arrow.tables[name]), name


def test_offline_without_cache_raises_cache_miss_and_calls_nothing(emu, conn):
    batch_id = emu.add_batch(seed=4, n_submissions=5)
    with pytest.raises(CacheMissError, match=batch_id):
        load_batch_export(batch_id, offline=True, **conn)
    with pytest.raises(CacheMissError, match="nope"):
        load_batch_export(batch_id, export_id="nope", offline=True, **conn)
    assert emu.requests == []


def test_max_age_reuses_a_recent_export_and_zero_forces_a_new_one(emu, conn):
    batch_id = emu.add_batch(seed=5, n_submissions=5)
    first = load_batch_export(batch_id, **conn)
    posts = lambda: [r for r in emu.requests if r.method == "POST"]
    assert len(posts()) == 1
    second = load_batch_export(batch_id, **conn)  # default max_age: cache hit, no call at all
    assert second.export_id == first.export_id
    assert len(posts()) == 1
    fresh = load_batch_export(batch_id, max_age=0, **conn)
    assert len(posts()) == 2
    assert fresh.export_id != first.export_id


def test_server_side_complete_export_is_reused_with_an_empty_cache(emu, conn, tmp_path):
    batch_id = emu.add_batch(seed=5, n_submissions=5)
    first = load_batch_export(batch_id, **conn)
    other_cache = dict(conn, cache=str(tmp_path / "other-cache"))
    again = load_batch_export(batch_id, max_age=timedelta(minutes=5), **other_cache)
    assert again.export_id == first.export_id
    assert len([r for r in emu.requests if r.method == "POST"]) == 1


def test_filters_are_sent_and_applied(emu, conn):
    batch_id = emu.add_batch(seed=9, n_submissions=30)
    full = emu.ground_truth(batch_id)
    study = full.submissions[0]["study_id"]
    times = sorted(r["created_at"] for r in full.responses)
    since, until = times[len(times) // 4], times[3 * len(times) // 4]
    exp = load_batch_export(batch_id, study_id=study, since=since, until=until, **conn)
    post = next(r for r in emu.requests if r.method == "POST")
    assert post.query["study_id"] == study
    assert {"from", "to"} <= set(post.query)
    assert_matches_truth(
        exp.arrow.tables, emu.ground_truth(batch_id, study_id=study, since=since, until=until)
    )
    assert exp.filter.study_id == study


def test_failed_export_raises_typed_error_and_caches_nothing(emu, conn):
    batch_id = emu.add_batch(seed=1, n_submissions=3)
    emu.faults.fail_job()
    with pytest.raises(ExportFailedError) as info:
        load_batch_export(batch_id, **conn)
    assert info.value.export_id
    assert info.value.export_id in str(info.value)
    cache = Path(conn["cache"])
    assert not list(cache.rglob("manifest.json"))


def test_bad_token_unknown_batch_and_no_access_raise_typed_errors(emu, conn):
    batch_id = emu.add_batch(seed=1, n_submissions=3)
    wrong = Settings.from_env(token="wrong-token", base_url=conn["client"].base_url)
    with pytest.raises(AuthenticationError) as info:
        load_batch_export(batch_id, **dict(conn, client=wrong))
    assert info.value.status == 401
    with pytest.raises(NotFoundError) as info404:
        load_batch_export("00000000-0000-0000-0000-000000000000", **conn)
    assert info404.value.status == 404
    locked = emu.add_batch(seed=2, n_submissions=3, access=False)
    with pytest.raises(PermissionDeniedError):
        load_batch_export(locked, **conn)
    assert issubclass(PermissionDeniedError, ProlificIngestError)


def test_output_writes_delta_tables_with_one_schema_per_table(emu, conn, tmp_path):
    from deltalake import DeltaTable

    from prolific_ingest import committed_exports, read_dataset

    out = tmp_path / "lake"
    full = emu.add_batch(seed=11, n_submissions=6)
    empty = emu.add_batch(seed=12, empty=True)
    a = load_batch_export(full, output=str(out), **conn)
    load_batch_export(empty, output=str(out), **conn)
    for name in ("submissions", "tasks", "responses", "answers", "files", "instructions"):
        table = DeltaTable(str(out / name))
        assert table.metadata().partition_columns == ["batch_id"], name
        got = read_dataset(str(out), name, ExportRef("batch", full))
        assert len(got) == a.arrow.row_counts[name], name
        assert list(read_dataset(str(out), name, ExportRef("batch", empty)).columns) == list(
            got.columns
        ), name
    (record,) = committed_exports(str(out), ExportRef("batch", full))
    assert record["counts"]["answers"] == len(a.answers)
    assert a.written is not None and not a.written.skipped


def test_warm_load_reads_the_parsed_table_cache(emu, conn, caplog):
    caplog.set_level("INFO", logger="prolific_ingest")
    batch_id = emu.add_batch(seed=13, n_submissions=5)
    first = load_batch_export(batch_id, **conn)
    table_dir = Path(first.archive_url).parent / "tables"
    assert (table_dir / "answers.arrow").exists()
    caplog.clear()
    second = load_batch_export(batch_id, export_id=first.export_id, offline=True, **conn)
    assert "tables read from the parsed-table cache" in caplog.text
    for name in first.tables:
        assert second.arrow.tables[name].equals(first.arrow.tables[name]), name
    (table_dir / "_tables.json").unlink()
    caplog.clear()
    third = load_batch_export(batch_id, export_id=first.export_id, offline=True, **conn)
    assert "parsed-table cache" not in caplog.text
    assert third.arrow.tables["answers"].equals(first.arrow.tables["answers"])
    assert (table_dir / "_tables.json").exists()


def test_tables_cached_in_an_earlier_format_are_parsed_again_and_replaced(emu, conn, caplog):
    import json

    caplog.set_level("INFO", logger="prolific_ingest")
    batch_id = emu.add_batch(seed=14, n_submissions=4)
    first = load_batch_export(batch_id, **conn)
    table_dir = Path(first.archive_url).parent / "tables"
    marker = table_dir / "_tables.json"
    info = json.loads(marker.read_text())
    marker.write_text(json.dumps({**info, "format": 1}))  # as the Parquet version left it
    (table_dir / "answers.arrow").rename(table_dir / "answers.parquet")
    caplog.clear()
    second = load_batch_export(batch_id, export_id=first.export_id, offline=True, **conn)
    assert "tables read from the parsed-table cache" not in caplog.text
    for name in first.tables:
        assert second.arrow.tables[name].equals(first.arrow.tables[name]), name
    assert json.loads(marker.read_text())["format"] == info["format"]
    assert (table_dir / "answers.arrow").exists()
    assert not (table_dir / "answers.parquet").exists()


def test_tls_download_host_with_the_emulator_ca(tmp_path, monkeypatch):
    from prolific_ingest import DownloadError
    from prolific_ingest.testing import Emulator

    with Emulator(polls_until_complete=1, tls=True) as emu:
        batch_id = emu.add_batch(seed=8, n_submissions=4)

        def kw() -> dict[str, Any]:  # the settings as the environment has them now
            return {"client": Settings.from_env(base_url=emu.base_url, token=emu.token)}

        with pytest.raises(DownloadError):  # an untrusted certificate is refused
            load_batch_export(batch_id, cache=str(tmp_path / "untrusted"), progress=False, **kw())
        monkeypatch.setenv("PROLIFIC_CA_BUNDLE", emu.ca_bundle)
        exp = load_batch_export(
            batch_id, cache=str(tmp_path / "trusted"), max_age=0, progress=False, **kw()
        )
        assert all(
            r.headers.get("Host", "").startswith("localhost")
            for r in emu.requests
            if r.host == "download"
        )
        assert_matches_truth(exp.arrow.tables, emu.ground_truth(batch_id))
