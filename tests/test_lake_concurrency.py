"""Four processes load two batches (two exports each) into one lake at once: all commit,
and every row is in its table exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from prolific_ingest import ExportRef, committed_exports, read_dataset, read_export
from prolific_ingest.testing import ExportSpec, make_batch_export

HELPER = Path(__file__).with_name("_lake_writer_process.py")
KEYS = {
    "responses": ("response_id",),
    "answers": ("response_id", "answer_index"),
    "submissions": ("submission_id",),
    "files": ("path",),
}


@pytest.mark.parametrize("where", ["local", "s3"])
def test_four_processes_two_batches_one_lake_every_row_once(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = dict(os.environ)
    env.pop("PROLIFIC_INGEST_TEST_KILL_AT", None)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    options: dict[str, Any] | None = None
    if where == "local":
        lake = str(tmp_path / "lake")
    else:
        s3 = request.getfixturevalue("s3")
        lake, options = s3.url("lake"), s3.storage_options
        env.update(os.environ)  # the fixture's fake credentials
        env["AWS_ENDPOINT_URL"] = s3.endpoint
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    archives = {}
    for n, batch in enumerate(("b-one", "b-two")):
        path = tmp_path / f"{batch}.zip"
        make_batch_export(path, ExportSpec(owner_id=batch, n_submissions=5 + n, seed=80 + n))
        archives[batch] = path
    jobs = [(batch, f"{batch}-export-{k}") for batch in archives for k in (1, 2)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(HELPER), lake, str(archives[batch]), export_id],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for batch, export_id in jobs
    ]
    try:
        outcomes = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    for p, (out, err) in zip(procs, outcomes, strict=True):
        assert p.returncode == 0, err
        assert "done" in out
    for batch, path in archives.items():
        truth = read_export(str(path))
        for table, keys in KEYS.items():
            back = read_dataset(lake, table, ExportRef("batch", batch), storage_options=options)
            rows = list(zip(*(back[k].astype(str) for k in keys), strict=True))
            want = list(zip(*(truth.tables[table][k].astype(str) for k in keys), strict=True))
            assert len(rows) == len(set(rows)) == truth.row_counts[table], table
            assert set(rows) == set(want), table
    loads = committed_exports(lake, storage_options=options)
    assert sorted(r["export_id"] for r in loads) == sorted(e for _, e in jobs)


def test_a_streamed_first_load_that_loses_its_partition_commits_nothing_and_leaves_no_file(
    tmp_path: Path,
) -> None:
    """Another writer filled the partition after our snapshot: our commit conflicts."""
    import pyarrow as pa
    import pyarrow.fs as pafs
    from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
    from deltalake.exceptions import CommitFailedError

    from prolific_ingest.lake._stream import stream_first_load

    uri = str(tmp_path / "t")
    schema = pa.schema([("batch_id", pa.string()), ("k", pa.int64())])
    DeltaTable.create(uri, schema, partition_by=["batch_id"])
    ours = DeltaTable(uri)  # the snapshot our write starts from: partition empty

    def props() -> CommitProperties:
        txn = Transaction(app_id="prolific-ingest/t/batch_id=b1", version=1)
        return CommitProperties(app_transactions=[txn])

    theirs = pa.table({"batch_id": ["b1"], "k": [1]}, schema=schema)
    write_deltalake(
        uri, theirs, mode="append", partition_by=["batch_id"], commit_properties=props()
    )
    before = sorted(p.name for p in (tmp_path / "t" / "batch_id=b1").iterdir())
    rows = pa.table({"batch_id": ["b1"] * 3, "k": [2, 3, 4]}, schema=schema)
    with pytest.raises(CommitFailedError):
        stream_first_load(
            ours,
            pafs.LocalFileSystem(),
            uri,
            rows.to_reader(),
            owner="batch_id",
            owner_id="b1",
            partition_by=["batch_id"],
            commit_properties=props(),
            target_file_bytes=1 << 20,
        )
    assert sorted(p.name for p in (tmp_path / "t" / "batch_id=b1").iterdir()) == before
    assert DeltaTable(uri).to_pyarrow_table().column("k").to_pylist() == [1]
