"""Conformance suite of the Parquet sinks over a local path, memory:// and s3:// (moto)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from prolific_ingest import sinks
from prolific_ingest._version import __version__
from prolific_ingest.errors import SinkError

BATCH = "b0aa1"
OTHER = "b0bb2"


_SCHEMAS: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _schemas(sink_schemas: Any) -> None:
    _SCHEMAS.update(batch=sink_schemas("batch"), collection=sink_schemas("collection"))


def _write(target: Any, tables: Any, export_id: str = "e1", **kw: Any) -> sinks.WriteResult:
    schemas = kw.pop("schemas", None) or _SCHEMAS[kw.get("kind", "batch")]
    kw.setdefault("kind", "batch")
    kw.setdefault("owner_id", BATCH)
    return sinks.write_parquet(
        tables,
        target.output,
        export_id=export_id,
        schemas=schemas,
        storage_options=target.storage_options,
        **kw,
    )


def _read_file(target: Any, rel: str) -> Any:
    with target.fs.open(f"{target.root}/{rel}", "rb") as fh:
        return pq.ParquetFile(pa.BufferReader(fh.read()))


def _read(target: Any, table: str, **kw: Any) -> pd.DataFrame:
    return sinks.read_dataset(target.output, table, storage_options=target.storage_options, **kw)


def _committed(target: Any, **kw: Any) -> list[dict[str, Any]]:
    return sinks.committed_exports(target.output, storage_options=target.storage_options, **kw)


# --- layout, schema, idempotency ------------------------------------------------------------


def test_layout_paths_counts_and_compression(sink_target: Any, make_export: Any) -> None:
    result = _write(sink_target, make_export(BATCH, 10))

    assert not result.skipped
    assert result.counts == {
        "submissions": 5,
        "responses": 10,
        "answers": 20,
        "files": 0,
        "instructions": 1,
        "tasks": 3,
    }
    expected = {
        t: [f"{sink_target.output}/{t}/batch_id={BATCH}/export_id=e1/part-0.parquet"]
        for t in result.counts
    }
    assert result.paths == expected
    assert result.manifest_path == f"{sink_target.output}/_manifests/batch_id={BATCH}/e1.json"
    files = sink_target.find()
    assert f"_manifests/batch_id={BATCH}/e1.json" in files
    assert not [f for f in files if f.startswith("_staging/")]
    meta = _read_file(sink_target, f"responses/batch_id={BATCH}/export_id=e1/part-0.parquet")
    assert meta.metadata.row_group(0).column(0).compression == "ZSTD"
    assert meta.metadata.num_rows == 10


def test_partition_column_is_not_stored_in_the_file(sink_target: Any, make_export: Any) -> None:
    _write(sink_target, make_export(BATCH, 4))
    for table in ("submissions", "tasks"):
        stored = _read_file(sink_target, f"{table}/batch_id={BATCH}/export_id=e1/part-0.parquet")
        assert "batch_id" not in stored.schema_arrow.names
    frame = _read(sink_target, "tasks")
    assert list(frame.columns[:2]) == ["task_id", "batch_id"]
    assert set(frame["batch_id"]) == {BATCH}


def test_owner_column_disagreeing_with_partition_is_refused(
    sink_target: Any, make_export: Any
) -> None:
    tables = make_export(BATCH, 4)
    tables["tasks"] = tables["tasks"].set_column(
        1, "batch_id", pa.array(["elsewhere"] * 3, pa.string())
    )
    with pytest.raises(SinkError, match="different from the partition value"):
        _write(sink_target, tables)
    assert _committed(sink_target) == []


def test_same_schema_for_every_export_including_empty(
    sink_target: Any, make_export: Any, sink_schemas: Any
) -> None:
    full = _write(sink_target, make_export(BATCH, 6), "e1")
    empty = _write(sink_target, {}, "e2")

    assert set(empty.counts.values()) == {0}
    for table in sink_schemas():
        assert len(empty.paths[table]) == 1, table
        rel = f"{table}/batch_id={BATCH}/export_id=e2/part-0.parquet"
        empty_file = _read_file(sink_target, rel)
        full_file = _read_file(sink_target, rel.replace("e2", "e1"))
        assert empty_file.metadata.num_rows == 0
        assert empty_file.schema_arrow.equals(full_file.schema_arrow), table
    assert full.counts["responses"] == 6


def test_second_write_is_a_noop(sink_target: Any, make_export: Any) -> None:
    first = _write(sink_target, make_export(BATCH, 3))
    manifest_before = _committed(sink_target)[0]

    def never() -> Iterator[tuple[str, Any]]:
        raise AssertionError("the data of an already committed export must not be read")
        yield  # pragma: no cover

    again = _write(sink_target, never())

    assert again.skipped
    assert (again.paths, again.counts, again.manifest_path) == (
        first.paths,
        first.counts,
        first.manifest_path,
    )
    assert _committed(sink_target) == [manifest_before]


def test_overwrite_replaces_the_export(sink_target: Any, make_export: Any) -> None:
    day1 = datetime(2026, 1, 1, 23, 50, tzinfo=UTC)
    _write(sink_target, make_export(BATCH, 20, day=day1), partition_by=("date",))
    old = _committed(sink_target)[0]
    assert sink_target.exists(f"responses/batch_id={BATCH}/export_id=e1/date=2026-01-02")

    result = _write(
        sink_target,
        make_export(BATCH, 3, tag="v2", day=day1),
        overwrite=True,
        partition_by=("date",),
    )

    assert not result.skipped
    assert result.counts["responses"] == 3
    assert not sink_target.exists(f"responses/batch_id={BATCH}/export_id=e1/date=2026-01-02")
    frame = _read(sink_target, "responses")
    assert len(frame) == 3
    assert set(frame["extra"]) == {'{"tag":"v2"}'}
    new = _committed(sink_target)
    assert len(new) == 1
    assert new[0]["created_at"] > old["created_at"]


# --- streaming ------------------------------------------------------------------------------


def test_many_small_batches_become_few_row_groups(sink_target: Any, make_export: Any) -> None:
    responses = make_export(BATCH, 5000)["responses"]
    stream = (("responses", b) for b in responses.to_batches(max_chunksize=50))

    result = _write(sink_target, stream, row_group_rows=1000)

    assert result.counts["responses"] == 5000
    meta = _read_file(sink_target, f"responses/batch_id={BATCH}/export_id=e1/part-0.parquet")
    assert meta.metadata.num_row_groups == 5
    assert {meta.metadata.row_group(i).num_rows for i in range(5)} == {1000}
    assert meta.read().column("response_id").to_pylist() == responses["response_id"].to_pylist()
    # tables absent from the stream still get an empty file
    assert result.counts["answers"] == 0
    assert len(result.paths["answers"]) == 1


def test_streaming_memory_stays_flat(tmp_path: Path) -> None:
    schema = pa.schema([("response_id", pa.string()), ("extra", pa.string())])
    payload = "x" * 1000
    peak = 0

    def stream() -> Iterator[tuple[str, Any]]:
        nonlocal peak
        for k in range(100):  # 100 batches x 1000 rows x ~1 kB = ~100 MB in total
            ids = [f"r{k:03d}-{i:04d}" for i in range(1000)]
            yield "responses", pa.record_batch([ids, [payload] * 1000], schema=schema)
            peak = max(peak, pa.total_allocated_bytes())

    out = str(tmp_path / "lake")
    result = sinks.write_parquet(
        stream(), out, kind="batch", owner_id=BATCH, export_id="e1",
        schemas={"responses": schema}, row_group_rows=2000,
    )  # fmt: skip
    assert result.counts["responses"] == 100_000
    assert peak < 20 * 1024 * 1024  # a few row groups, never the whole export


def test_leftover_rows_make_a_final_smaller_row_group(tmp_path: Path, make_export: Any) -> None:
    responses = make_export(BATCH, 250)["responses"]
    stream = (("responses", b) for b in responses.to_batches(max_chunksize=30))
    out = str(tmp_path / "lake")
    sinks.write_parquet(
        stream,
        out,
        kind="batch",
        owner_id=BATCH,
        export_id="e1",
        schemas={"responses": responses.schema},
        row_group_rows=100,
    )
    meta = pq.ParquetFile(f"{out}/responses/batch_id={BATCH}/export_id=e1/part-0.parquet")
    sizes = [meta.metadata.row_group(i).num_rows for i in range(meta.metadata.num_row_groups)]
    assert sizes == [100, 100, 50]


def test_batches_are_cast_to_the_schema_when_only_types_differ(
    tmp_path: Path, sink_schemas: Any
) -> None:
    schema = pa.schema([("path", pa.string()), ("size_bytes", pa.int64())])
    batch = pa.record_batch({"path": ["a"], "size_bytes": pa.array([3], pa.int32())})
    out = str(tmp_path / "lake")
    sinks.write_parquet(
        [("files", batch)], out, kind="batch", owner_id=BATCH, export_id="e1",
        schemas={"files": schema},
    )  # fmt: skip
    assert sinks.read_dataset(out, "files")["size_bytes"].dtype == pd.ArrowDtype(pa.int64())


# --- manifest -------------------------------------------------------------------------------


def test_manifest_content(sink_target: Any, make_export: Any, sink_schemas: Any) -> None:
    extra = {"archive_sha256": "ab" * 32, "filter": {"study_id": "s1"}, "note": "hello"}
    result = _write(sink_target, make_export(BATCH, 7), manifest_extra=extra)

    [manifest] = _committed(sink_target)
    with sink_target.fs.open(f"{sink_target.root}/_manifests/batch_id={BATCH}/e1.json") as fh:
        raw = json.load(fh)
    assert manifest == {**raw, "manifest_path": result.manifest_path}
    assert raw["kind"] == "batch"
    assert (raw["owner_col"], raw["owner_id"], raw["export_id"]) == ("batch_id", BATCH, "e1")
    assert raw["counts"] == result.counts
    assert raw["archive_sha256"] == "ab" * 32
    assert raw["filter"] == {"study_id": "s1"}
    assert raw["note"] == "hello"
    assert raw["library_version"] == __version__
    assert raw["watermark"] == "2026-01-01T00:06:00.000000Z"  # max responses.created_at
    assert datetime.fromisoformat(raw["created_at"]) > datetime.now(UTC) - timedelta(hours=1)
    for name, schema in sink_schemas().items():
        expected = hashlib.sha256(schema.serialize().to_pybytes()).hexdigest()
        assert raw["schema_fingerprints"][name] == expected
    assert raw["files"] == {
        t: [p[len(sink_target.output) + 1 :] for p in ps] for t, ps in result.paths.items()
    }


def test_manifest_watermark_given_by_the_caller_wins(tmp_path: Path, make_export: Any) -> None:
    out = str(tmp_path / "lake")
    given = datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)
    sinks.write_parquet(
        {"responses": make_export(BATCH, 2)["responses"]}, out, kind="batch", owner_id=BATCH,
        export_id="e1", schemas={"responses": make_export(BATCH, 0)["responses"].schema},
        manifest_extra={"watermark": given},
    )  # fmt: skip
    assert sinks.committed_exports(out)[0]["watermark"] == "2030-05-06T07:08:09.000000Z"


def test_reserved_manifest_keys_are_refused(tmp_path: Path, make_export: Any) -> None:
    out = str(tmp_path / "lake")
    with pytest.raises(ValueError, match="reserved"):
        sinks.write_parquet(
            {}, out, kind="batch", owner_id=BATCH, export_id="e1", schemas={},
            manifest_extra={"counts": {}},
        )  # fmt: skip
    assert not (tmp_path / "lake").exists()


class RecordingFS(MemoryFileSystem):
    """memory:// that records every mutation (to check the order of the commit)."""

    protocol = "recmem"
    log: list[tuple[str, str]] = []

    def mv(self, path1: Any, path2: Any, *args: Any, **kwargs: Any) -> Any:
        self.log.append(("mv", str(path2)))
        return super().mv(path1, path2, *args, **kwargs)

    def cp_file(self, path1: Any, path2: Any, *args: Any, **kwargs: Any) -> Any:
        self.log.append(("mv", str(path2)))
        return super().cp_file(path1, path2, *args, **kwargs)

    def pipe_file(self, path: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        self.log.append(("pipe", str(path)))
        return super().pipe_file(path, value, *args, **kwargs)

    def _open(self, path: Any, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
        if "w" in mode:
            self.log.append(("open", str(path)))
        return super()._open(path, mode, *args, **kwargs)


def test_manifest_is_written_last(memory_prefix: str, make_export: Any) -> None:
    fsspec.register_implementation("recmem", RecordingFS, clobber=True)
    RecordingFS.log = []
    out = "recmem://" + memory_prefix.removeprefix("memory://") + "/lake"

    sinks.write_parquet(
        make_export(BATCH, 3), out, kind="batch", owner_id=BATCH, export_id="e1",
        schemas=_SCHEMAS["batch"],
    )  # fmt: skip

    ops = RecordingFS.log
    visible = [(op, p) for op, p in ops if "/_staging/" not in p]
    assert visible[-1][0] == "mv"
    assert visible[-1][1].endswith(f"/_manifests/batch_id={BATCH}/e1.json")
    data_moves = [i for i, (op, p) in enumerate(ops) if op == "mv" and p.endswith(".parquet")]
    writes = [i for i, (op, p) in enumerate(ops) if op == "open" and p.endswith(".parquet")]
    assert data_moves
    assert all("/_staging/" in ops[i][1] for i in writes)
    assert max(writes) < min(data_moves)


def test_unreadable_manifest_is_ignored(
    sink_target: Any, make_export: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _write(sink_target, make_export(BATCH, 2), "e1")
    sink_target.fs.pipe_file(f"{sink_target.root}/_manifests/batch_id={BATCH}/e2.json", b"{trunc")
    with caplog.at_level(logging.WARNING, logger="prolific_ingest"):
        exports = _committed(sink_target)
    assert [m["export_id"] for m in exports] == ["e1"]
    assert "unreadable manifest" in caplog.text


# --- invisibility, cleanup, errors ------------------------------------------------------------


def _fake_uncommitted(target: Any, export_id: str) -> str:
    """Copy e1's responses file to a partition of ``export_id`` that has no manifest."""
    src = f"{target.root}/responses/batch_id={BATCH}/export_id=e1/part-0.parquet"
    rel = f"responses/batch_id={BATCH}/export_id={export_id}"
    target.fs.makedirs(f"{target.root}/{rel}", exist_ok=True)
    target.fs.copy(src, f"{target.root}/{rel}/part-0.parquet")
    return rel


def _marker(target: Any, token: str, export_id: str, started: datetime) -> None:
    body = {
        "started_at": started.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "owner_col": "batch_id",
        "owner_id": BATCH,
        "export_id": export_id,
    }
    target.fs.makedirs(f"{target.root}/_staging/{token}", exist_ok=True)
    target.fs.pipe_file(f"{target.root}/_staging/{token}/_writer.json", json.dumps(body).encode())


def test_uncommitted_partition_is_invisible_and_cleaned(sink_target: Any, make_export: Any) -> None:
    _write(sink_target, make_export(BATCH, 4), "e1")
    rel = _fake_uncommitted(sink_target, "e9")
    assert sink_target.exists(rel)

    assert [m["export_id"] for m in _committed(sink_target)] == ["e1"]
    assert set(_read(sink_target, "responses")["export_id"]) == {"e1"}

    removed = sinks.cleanup(sink_target.output, storage_options=sink_target.storage_options)

    assert removed == [f"{sink_target.output}/{rel}"]
    assert not sink_target.exists(rel)
    assert len(_read(sink_target, "responses")) == 4


def test_cleanup_spares_running_writers_and_removes_stale_staging(
    sink_target: Any, make_export: Any
) -> None:
    _write(sink_target, make_export(BATCH, 2), "e1")
    running = _fake_uncommitted(sink_target, "e8")
    now = datetime.now(UTC)
    _marker(sink_target, "fresh", "e8", now)
    _marker(sink_target, "stale", "e7", now - timedelta(hours=2))
    opts = sink_target.storage_options

    removed = sinks.cleanup(sink_target.output, storage_options=opts)

    assert removed == [f"{sink_target.output}/_staging/stale"]
    assert sink_target.exists(running)
    assert sink_target.exists("_staging/fresh/_writer.json")

    removed = sinks.cleanup(sink_target.output, storage_options=opts, older_than=0)
    assert sorted(removed) == sorted(
        [f"{sink_target.output}/_staging/fresh", f"{sink_target.output}/{running}"]
    )
    assert sink_target.find("_staging") == []
    assert [m["export_id"] for m in _committed(sink_target)] == ["e1"]


def test_next_write_cleans_uncommitted_partitions_of_the_same_owner(
    sink_target: Any, make_export: Any
) -> None:
    _write(sink_target, make_export(BATCH, 2), "e1")
    rel = _fake_uncommitted(sink_target, "e9")
    _write(sink_target, make_export(BATCH, 2), "e2")
    assert not sink_target.exists(rel)


def test_error_removes_staging_and_commits_nothing(sink_target: Any, make_export: Any) -> None:
    good = make_export(BATCH, 300)["responses"]
    bad = pa.record_batch({"response_id": ["x"]})
    stream = [("responses", b) for b in good.to_batches(max_chunksize=100)] + [("responses", bad)]

    with pytest.raises(SinkError, match="do not match the schema") as info:
        _write(sink_target, iter(stream), row_group_rows=100)

    assert isinstance(info.value.__cause__, ValueError)
    assert info.value.url == sink_target.output
    assert sink_target.find("_staging") == []
    assert not sink_target.exists(f"responses/batch_id={BATCH}/export_id=e1")
    assert _committed(sink_target) == []
    assert _read(sink_target, "responses").empty


def test_failing_stream_is_wrapped_with_its_cause(tmp_path: Path, make_export: Any) -> None:
    def stream() -> Iterator[tuple[str, Any]]:
        yield "responses", make_export(BATCH, 5)["responses"].to_batches()[0]
        raise RuntimeError("archive went away")

    out = str(tmp_path / "lake")
    with pytest.raises(SinkError, match="archive went away") as info:
        sinks.write_parquet(
            stream(), out, kind="batch", owner_id=BATCH, export_id="e1",
            schemas={"responses": make_export(BATCH, 0)["responses"].schema},
        )  # fmt: skip
    assert isinstance(info.value.__cause__, RuntimeError)
    assert list((tmp_path / "lake" / "_staging").iterdir()) == []


def test_unknown_table_in_stream_is_an_error(tmp_path: Path, make_export: Any) -> None:
    out = str(tmp_path / "lake")
    with pytest.raises(SinkError, match="has no schema"):
        sinks.write_parquet(
            {"responses": make_export(BATCH, 1)["responses"]}, out, kind="batch",
            owner_id=BATCH, export_id="e1", schemas={},
        )  # fmt: skip


def test_error_message_carries_no_credentials(memory_prefix: str) -> None:
    out = memory_prefix.replace("memory://", "memory://alice:hunter2@") + "/lake"
    with pytest.raises(SinkError) as info:
        sinks.write_parquet(
            [("files", pa.record_batch({"x": [1]}))], out, kind="batch", owner_id=BATCH,
            export_id="e1", schemas={"files": pa.schema([("path", pa.string())])},
        )  # fmt: skip
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in str(info.value.url)
    assert "alice" not in str(info.value.url)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"kind": "study"}, "kind must be"),
        ({"owner_id": "../x"}, "cannot be used"),
        ({"owner_id": "a=b"}, "cannot be used"),
        ({"export_id": ""}, "cannot be used"),
        ({"partition_by": ("hour",)}, "unsupported partition_by"),
        ({"row_group_rows": 0}, "must be positive"),
        ({"schemas": {"_staging": pa.schema([])}}, "not a lower-case identifier"),
    ],
)
def test_invalid_arguments(tmp_path: Path, kw: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"kind": "batch", "owner_id": BATCH, "export_id": "e1", "schemas": {}}
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        sinks.write_parquet({}, str(tmp_path / "lake"), **args)
    assert not (tmp_path / "lake").exists()


# --- a real process killed mid-write -----------------------------------------------------------

KILLER = Path(__file__).with_name("_kill_writer.py")


@pytest.mark.parametrize(("mode", "signal_line"), [("write", "writing"), ("commit", "moved")])
def test_sigkill_mid_write_leaves_nothing_visible(
    tmp_path: Path, make_export: Any, mode: str, signal_line: str
) -> None:
    out = str(tmp_path / "lake")
    proc = subprocess.Popen(
        [sys.executable, str(KILLER), out, mode, BATCH, "e1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != signal_line:
            proc.kill()
            pytest.fail(f"writer did not reach {mode!r}: {line!r} {proc.communicate()[1]}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == -signal.SIGKILL
    leftovers = list((tmp_path / "lake").rglob("*.parquet"))
    assert leftovers  # the process really was killed with data on disk

    assert sinks.committed_exports(out) == []
    assert sinks.read_dataset(out, "responses").empty

    result = sinks.write_parquet(
        {"responses": make_export(BATCH, 5)["responses"]}, out, kind="batch", owner_id=BATCH,
        export_id="e1", schemas={"responses": make_export(BATCH, 0)["responses"].schema},
    )  # fmt: skip
    assert not result.skipped
    frame = sinks.read_dataset(out, "responses")
    assert sorted(frame["response_id"]) == [f"r{i:05d}" for i in range(5)]
    removed = sinks.cleanup(out, older_than=0)
    assert [r for r in removed if "/_staging/" in r]
    assert not list((tmp_path / "lake" / "_staging").iterdir())
    assert sorted(p.name for p in (tmp_path / "lake").rglob("*.parquet")) == ["part-0.parquet"]


# --- readers ------------------------------------------------------------------------------------


def test_read_dataset_dedup_latest_export_wins(sink_target: Any, make_export: Any) -> None:
    later = datetime(2026, 2, 1, tzinfo=UTC)
    _write(sink_target, make_export(BATCH, 10, start=0, tag="v1"), "e1")
    _write(sink_target, make_export(BATCH, 10, start=5, tag="v2", day=later), "e2")

    frame = _read(sink_target, "responses")

    assert sorted(frame["response_id"]) == [f"r{i:05d}" for i in range(15)]
    by_id = frame.set_index("response_id")
    assert set(by_id.loc[[f"r{i:05d}" for i in range(5)], "export_id"]) == {"e1"}
    assert set(by_id.loc[[f"r{i:05d}" for i in range(5, 15)], "export_id"]) == {"e2"}
    assert set(by_id.loc[[f"r{i:05d}" for i in range(5, 15)], "extra"]) == {'{"tag":"v2"}'}
    assert all(isinstance(t, pd.ArrowDtype) for t in frame.dtypes)
    assert set(frame["batch_id"]) == {BATCH}

    answers = _read(sink_target, "answers")
    assert len(answers) == 30
    assert not answers.duplicated(["response_id", "answer_index"]).any()
    assert len(_read(sink_target, "responses", dedup=False)) == 20
    assert len(_read(sink_target, "tasks")) == 3


def test_read_dataset_filters_by_owner_and_kind(sink_target: Any, make_export: Any) -> None:
    _write(sink_target, make_export(BATCH, 3), "e1")
    _write(sink_target, make_export(OTHER, 4, start=100), "e2", owner_id=OTHER)
    _write(
        sink_target, make_export("c0cc3", 2, start=200, kind="collection"), "e3",
        kind="collection", owner_id="c0cc3",
    )  # fmt: skip

    assert len(_read(sink_target, "responses", batch_id=OTHER)) == 4
    assert len(_read(sink_target, "responses", collection_id="c0cc3")) == 2
    everything = _read(sink_target, "responses")
    assert len(everything) == 9
    assert {"batch_id", "collection_id", "export_id"} <= set(everything.columns)
    subs = _read(sink_target, "submissions", collection_id="c0cc3")
    assert set(subs["collection_id"]) == {"c0cc3"}
    assert [m["export_id"] for m in _committed(sink_target, kind="collection")] == ["e3"]
    assert [m["export_id"] for m in _committed(sink_target, owner_id=OTHER)] == ["e2"]
    assert len(_committed(sink_target, kind=None)) == 3
    with pytest.raises(ValueError, match="has table"):
        _read(sink_target, "nonesuch")
    with pytest.raises(ValueError, match="not both"):
        _read(sink_target, "responses", batch_id=BATCH, collection_id="c0cc3")


def test_committed_exports_sorted_by_watermark(sink_target: Any, make_export: Any) -> None:
    _write(sink_target, make_export(BATCH, 2, day=datetime(2026, 3, 1, tzinfo=UTC)), "late")
    _write(sink_target, make_export(BATCH, 2, day=datetime(2026, 1, 1, tzinfo=UTC)), "early")
    _write(sink_target, {}, "empty")

    assert [m["export_id"] for m in _committed(sink_target)] == ["empty", "early", "late"]
    assert _committed(sink_target)[0]["watermark"] is None


def test_nothing_committed_reads_empty(sink_target: Any) -> None:
    if sink_target.name == "local":  # an existing empty folder; a missing one raises
        sink_target.fs.makedirs(sink_target.root, exist_ok=True)
    assert _committed(sink_target) == []
    assert _read(sink_target, "responses").empty


# --- date partitioning ------------------------------------------------------------------------


def test_partition_by_date(sink_target: Any, make_export: Any) -> None:
    tables = make_export(BATCH, 4, day=datetime(2026, 1, 1, 23, 58, tzinfo=UTC))
    created = tables["responses"]["created_at"].to_pylist()
    created[3] = None
    tables["responses"] = tables["responses"].set_column(
        1, "created_at", pa.array(created, pa.timestamp("us", tz="UTC"))
    )

    result = _write(sink_target, tables, partition_by=("date",))

    prefix = f"{sink_target.output}/responses/batch_id={BATCH}/export_id=e1"
    assert result.paths["responses"] == [
        f"{prefix}/date=2026-01-01/part-0.parquet",
        f"{prefix}/date=2026-01-02/part-0.parquet",
        f"{prefix}/date=__HIVE_DEFAULT_PARTITION__/part-0.parquet",
    ]
    assert result.paths["answers"] == [
        f"{sink_target.output}/answers/batch_id={BATCH}/export_id=e1/part-0.parquet"
    ]
    frame = _read(sink_target, "responses")
    assert len(frame) == 4
    assert "date" not in frame.columns
    assert frame["created_at"].isna().sum() == 1


def test_partition_by_date_empty_table_has_no_file_but_keeps_columns(
    sink_target: Any, make_export: Any, sink_schemas: Any
) -> None:
    result = _write(sink_target, {}, partition_by=("date",))
    assert result.paths["responses"] == []
    assert len(result.paths["answers"]) == 1

    frame = _read(sink_target, "responses")
    expected = [*sink_schemas()["responses"].names, "batch_id", "export_id"]
    assert list(frame.columns) == expected
    assert frame.empty


def test_schemas_from_tables_module_when_available(tmp_path: Path) -> None:
    tables_mod = pytest.importorskip("prolific_ingest.tables")
    schema_for = getattr(tables_mod, "schema_for", None)
    if schema_for is None:
        pytest.skip("prolific_ingest.tables.schema_for is not available")
    names = ["submissions", "responses", "answers", "tasks", "instructions", "files"]
    schemas = {n: schema_for(n, "batch") for n in names}
    out = str(tmp_path / "lake")
    result = sinks.write_parquet(
        {}, out, kind="batch", owner_id=BATCH, export_id="e1", schemas=schemas
    )
    assert set(result.paths) == set(names)
    assert list(sinks.read_dataset(out, "tasks").columns[:2]) == ["task_id", "batch_id"]
