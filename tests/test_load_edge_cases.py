"""Load edge cases: skipped outputs, shared remote caches, the export cap under
scheduled incremental loads, lost DELETE responses, conflicting
``export_id`` and filter arguments, storage errors as typed exceptions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from prolific_ingest import ExportRef, LakeTarget, ProlificClient, Settings, load_batch_export


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


def test_remote_cache_leaves_a_fresh_archive_without_manifest_alone(
    s3: Any, monkeypatch: Any
) -> None:
    """On a shared s3:// cache another machine (its own locks) may be between moving its
    archive into place and writing the manifest: a fresh archive without a manifest is
    reported absent but not deleted; once stale it is removed as an interrupted commit."""
    import prolific_ingest.cache._store as cache_module
    from prolific_ingest.cache import ExportCache
    from prolific_ingest.exports import ExportRef

    ref = ExportRef("batch", "B1")
    cache = ExportCache(s3.url("cache"), storage_options=s3.storage_options)
    archive = f"{s3.bucket}/cache/batch/B1/E1/archive.zip"
    s3.fs.pipe(archive, b"PK in flight")
    assert cache.lookup(ref, "E1") is None
    assert s3.fs.exists(archive)
    monkeypatch.setattr(cache_module, "STALE_STAGING", cache_module.timedelta(0))
    assert cache.lookup(ref, "E1") is None
    assert not s3.fs.exists(archive)


def test_local_cache_still_removes_an_interrupted_commit_at_once(tmp_path: Path) -> None:
    from prolific_ingest.cache import ExportCache
    from prolific_ingest.exports import ExportRef

    ref = ExportRef("batch", "B1")
    cache = ExportCache(str(tmp_path / "cache"))
    entry = Path(cache.entry_path(ref, "E1"))
    entry.mkdir(parents=True)
    (entry / "archive.zip").write_bytes(b"PK")
    assert cache.lookup(ref, "E1") is None  # under the lock: no commit can be in flight
    assert not (entry / "archive.zip").exists()


def _since(i: int) -> str:
    return f"2020-01-01T00:00:{i:02d}Z"


def test_scheduled_loads_keep_working_at_the_export_job_cap(
    prolific_emulator: Any, conn: dict[str, Any], caplog: Any
) -> None:
    """Incremental (windowed) runs request a new export each time; at the cap of 10 jobs
    the load deletes the oldest job whose archive is already cached, then requests."""
    from prolific_ingest import list_exports
    from prolific_ingest.testing._routes import EXPORT_CAP

    batch_id = prolific_emulator.add_batch(n_submissions=2)
    kw = {**conn, "max_age": 0}
    loaded = [load_batch_export(batch_id, since=_since(i), **kw) for i in range(EXPORT_CAP)]
    client_kw = {"client": ProlificClient(conn["client"])}
    assert len(list_exports(ExportRef("batch", batch_id), **client_kw)) == EXPORT_CAP
    with caplog.at_level("WARNING", logger="prolific_ingest"):
        extra = load_batch_export(batch_id, since=_since(EXPORT_CAP), **kw)
    ids = {job.export_id for job in list_exports(ExportRef("batch", batch_id), **client_kw)}
    assert extra.export_id in ids and len(ids) == EXPORT_CAP
    assert loaded[0].export_id not in ids  # the oldest cached job made room
    assert {e.export_id for e in loaded[1:]} <= ids
    assert f"deleting export {loaded[0].export_id}" in caplog.text


def test_at_the_cap_jobs_not_in_the_cache_are_never_deleted(
    prolific_emulator: Any, conn: dict[str, Any], tmp_path: Path
) -> None:
    from prolific_ingest import ExportLimitError, list_exports
    from prolific_ingest.testing._routes import EXPORT_CAP

    batch_id = prolific_emulator.add_batch(n_submissions=2)
    kw = {**conn, "max_age": 0}
    for i in range(EXPORT_CAP):
        load_batch_export(batch_id, since=_since(i), **kw)
    elsewhere = {**kw, "cache": str(tmp_path / "another-cache")}
    with pytest.raises(ExportLimitError) as info:
        load_batch_export(batch_id, since=_since(EXPORT_CAP), **elsewhere)
    assert len(info.value.existing_jobs) == EXPORT_CAP
    client_kw = {"client": ProlificClient(conn["client"])}
    assert len(list_exports(ExportRef("batch", batch_id), **client_kw)) == EXPORT_CAP


def test_prune_counts_a_delete_whose_response_was_lost_as_done(
    prolific_emulator: Any, conn: dict[str, Any]
) -> None:
    """The client retries a DELETE whose response was lost; the retry meets 404, which
    means the job is gone: prune_exports goes on and deletes every job it planned."""
    from prolific_ingest import list_exports, prune_exports

    batch_id = prolific_emulator.add_batch(n_submissions=2)
    for i in range(2):
        load_batch_export(batch_id, since=_since(i), max_age=0, **conn)
    rule = prolific_emulator.faults.drop_api_response(method="DELETE")
    client_kw = {"client": ProlificClient(conn["client"])}
    pruned = prune_exports(ExportRef("batch", batch_id), keep=0, cache=conn["cache"], **client_kw)
    assert rule.triggered == 1
    assert len(pruned) == 2
    assert list_exports(ExportRef("batch", batch_id), **client_kw) == []


def test_export_id_with_contradicting_filter_arguments_is_refused(
    prolific_emulator: Any, conn: dict[str, Any], tmp_path: Path
) -> None:
    """An export's filter is fixed when requested: asking for study S2 by the id of a
    study-S1 export must not silently return S1's rows (cache hit or not)."""
    from prolific_ingest import ConfigurationError

    batch_id = prolific_emulator.add_batch(n_submissions=3)
    first = load_batch_export(batch_id, study_id="S1", **conn)
    fresh = {**conn, "cache": str(tmp_path / "fresh")}
    for kw in (conn, fresh):
        with pytest.raises(ConfigurationError, match="S1") as info:
            load_batch_export(batch_id, study_id="S2", export_id=first.export_id, **kw)
        assert "S2" in str(info.value) and first.export_id in str(info.value)
    same = load_batch_export(batch_id, study_id="S1", export_id=first.export_id, **fresh)
    assert same.export_id == first.export_id
    bare = load_batch_export(batch_id, export_id=first.export_id, **conn)
    assert bare.row_counts == first.row_counts


@pytest.fixture
def s3_without_credentials(s3: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """The moto bucket, reached with no credentials anywhere (env, files, metadata)."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    options = {
        "client_kwargs": {"endpoint_url": s3.endpoint},
        "skip_instance_cache": True,
        "use_listings_cache": False,
    }
    return s3, options


def test_missing_s3_credentials_are_typed_errors(
    s3_without_credentials: Any, prolific_emulator: Any, conn: dict[str, Any]
) -> None:
    """botocore's NoCredentialsError is not an OSError: it must still come out as the
    package's SinkError / CacheError (CLI exit 7 / 1), never a raw traceback."""
    from prolific_ingest import CacheError, ExportCache, SinkError, read_dataset
    from prolific_ingest.cli import main as cli_main

    s3, options = s3_without_credentials
    batch_id = prolific_emulator.add_batch(n_submissions=2)
    exp = load_batch_export(batch_id, **conn)
    lake = s3.url("lake")
    with pytest.raises(SinkError, match="NoCredentialsError") as info:
        exp.to_parquet(lake, storage_options=options)
    assert type(info.value.__cause__).__name__ == "NoCredentialsError"
    with pytest.raises(SinkError):
        exp.to_lake(LakeTarget(lake, storage_options=options))
    with pytest.raises(SinkError):
        read_dataset(lake, "answers", storage_options=options)
    with pytest.raises(CacheError, match="NoCredentialsError"):
        ExportCache(s3.url("cache"), storage_options=options).list()
    args = ["batch", batch_id, "--export-id", exp.export_id, "--offline", "--out", lake]
    args += ["--cache", conn["cache"]]
    assert cli_main(args) == 7


@pytest.mark.parametrize(
    ("token", "kind"),
    [
        ("abcdef0123\nXYZSECRET", "a line break"),
        ("abcdef0123 XYZSECRET", "whitespace"),
        ("abcdef0123\x00XYZSECRET", "a control character"),
        ("abcdef0123€XYZSECRET", "a non-ASCII character"),
    ],
)
def test_a_malformed_token_is_a_configuration_error_that_never_shows_it(
    prolific_emulator: Any,
    conn: dict[str, Any],
    token: str,
    kind: str,
    capsys: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pasted token with a line break or a non-ASCII character used to fail inside
    requests (InvalidHeader / UnicodeEncodeError) with the whole token in the cause."""
    from prolific_ingest import ConfigurationError
    from prolific_ingest.cli import main as cli_main

    batch_id = prolific_emulator.add_batch(n_submissions=1)
    bad = Settings.from_env(token=token, base_url=conn["client"].base_url)
    with pytest.raises(ConfigurationError, match=kind) as info:
        load_batch_export(batch_id, **{**conn, "client": bad})
    text = f"{info.value!r} {info.value} {info.value.__cause__!r}"
    assert "XYZSECRET" not in text and "abcdef0123" not in text
    assert "character 11 of 20" in str(info.value)
    if "\x00" in token:
        return  # no environment variable can hold a NUL byte
    monkeypatch.setenv("PROLIFIC_TOKEN", token)
    monkeypatch.setenv("PROLIFIC_API_URL", conn["client"].base_url)
    assert cli_main(["batch", batch_id, "--cache", conn["cache"]]) == 2
    out = capsys.readouterr()
    assert "XYZSECRET" not in out.out + out.err


def _tasks_archive(path: Path, metadata: list[int]) -> Path:
    import json
    import zipfile

    lines = [
        {
            "submission_id": f"s{i}",
            "participant_id": f"p{i}",
            "batch_id": "b1",
            "tasks": [{"task_id": "t1", "metadata": {"m": m}, "responses": []}],
        }
        for i, m in enumerate(metadata)
    ]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("responses-by-submission.jsonl", "\n".join(map(json.dumps, lines)))
    return path


def test_read_dataset_keeps_one_row_per_distinct_task_content(tmp_path: Path) -> None:
    """tasks rows are distinct task contents; read_dataset's de-duplication across
    exports must not collapse two contents of one task_id (it keyed on task_id alone),
    while the same content stored by two exports is kept once."""
    from prolific_ingest import read_dataset, read_export

    lake = str(tmp_path / "lake")
    first = read_export(str(_tasks_archive(tmp_path / "a.zip", [1, 2])))
    second = read_export(str(_tasks_archive(tmp_path / "b.zip", [2, 1, 1])))
    assert len(first.tasks) == 2 and len(second.tasks) == 2
    first.to_lake(lake)
    second.to_lake(lake)
    tasks = read_dataset(lake, "tasks", ExportRef("batch", "b1"))
    assert sorted(tasks["metadata"].tolist()) == ['{"m":1}', '{"m":2}']
    assert set(tasks["task_id"]) == {"t1"}


def test_a_malformed_environment_token_does_not_stop_an_offline_load(
    prolific_emulator: Any, conn: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token is checked when a request is about to be sent, not when settings are
    built: an offline load from the cache sends nothing and must not fail on it."""
    batch_id = prolific_emulator.add_batch(n_submissions=1)
    exp = load_batch_export(batch_id, **conn)
    monkeypatch.setenv("PROLIFIC_TOKEN", "abc\u00e9def")
    offline = {k: v for k, v in conn.items() if k != "client"}
    again = load_batch_export(batch_id, export_id=exp.export_id, offline=True, **offline)
    assert again.row_counts == exp.row_counts


def test_incremental_error_does_not_show_the_output_password(
    prolific_emulator: Any, conn: dict[str, Any]
) -> None:
    from prolific_ingest import ConfigurationError

    batch_id = prolific_emulator.add_batch(n_submissions=2)
    out = "memory://u:SECRETPW@lake-pw/x"  # memory:// takes no credentials: refused up front
    with pytest.raises(ConfigurationError) as info:
        load_batch_export(batch_id, output=LakeTarget(out, incremental=True), **conn)
    assert "SECRETPW" not in str(info.value) and "memory://lake-pw/x" in str(info.value)
