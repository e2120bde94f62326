"""User-facing behaviour: identities, messages, CLI options, settings.

Every test drives the real code: the CLI's ``main`` in-process, the library against the
loopback emulator (``prolific_emulator`` / ``conn``) or archives from the generator.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from prolific_ingest import (
    ConfigurationError,
    ExportRef,
    LakeTarget,
    committed_exports,
    load_batch_export,
    read_export,
)
from prolific_ingest.cli import main
from prolific_ingest.testing import ExportSpec, make_batch_export


def _cli_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    assert main([*argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


# -- read_export: an archive is identified by its content, never by its file name -------------


def test_read_a_newer_archive_saved_under_the_same_name_is_written_not_skipped(tmp_path, capsys):
    path = tmp_path / "Downloads" / "export.zip"
    path.parent.mkdir()
    lake = str(tmp_path / "lake")
    make_batch_export(path, ExportSpec(n_submissions=3, seed=1, owner_id="b1"))
    first = _cli_json(capsys, ["read", str(path), "--out", lake])
    assert first["export_id"].startswith("sha256-") and first["output_skipped"] is False
    again = _cli_json(capsys, ["read", str(path), "--out", lake])
    assert again["export_id"] == first["export_id"] and again["output_skipped"] is True

    make_batch_export(
        path, ExportSpec(n_submissions=5, seed=2, owner_id="b1")
    )  # next week's download
    newer = _cli_json(capsys, ["read", str(path), "--out", lake])
    assert newer["export_id"] != first["export_id"]
    assert newer["output_skipped"] is False
    loads = [r["export_id"] for r in committed_exports(lake, ExportRef("batch", "b1"))]
    assert loads == [first["export_id"], newer["export_id"]]


def test_read_an_archive_whose_name_has_spaces_and_parentheses(tmp_path, capsys):
    path = tmp_path / "export (1).zip"
    truth = make_batch_export(path, ExportSpec(n_submissions=2, seed=3))
    payload = _cli_json(capsys, ["read", str(path), "--out", str(tmp_path / "lake")])
    assert payload["export_id"].startswith("sha256-")
    assert payload["rows"]["answers"] == truth.counts["answers"]
    assert payload["output_skipped"] is False


def test_read_with_a_given_export_id(tmp_path, capsys):
    path = tmp_path / "export (1).zip"
    make_batch_export(path, ExportSpec(n_submissions=2, seed=3))
    payload = _cli_json(
        capsys, ["read", str(path), "--out", str(tmp_path / "lake"), "--export-id", "2026-w48"]
    )
    assert payload["export_id"] == "2026-w48"


def test_an_unusable_export_id_is_refused_before_the_archive_is_read(tmp_path, capsys):
    missing = str(tmp_path / "no-such.zip")
    with pytest.raises(ConfigurationError, match="'my export'"):
        read_export(missing, export_id="my export")
    path = tmp_path / "export.zip"
    make_batch_export(path, ExportSpec(n_submissions=2, seed=3))
    assert main(["read", str(path), "--out", str(tmp_path / "lake"), "--export-id", "a/b"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: export id 'a/b'") and "Traceback" not in err
    assert not (tmp_path / "lake").exists()


def test_a_cache_archive_keeps_its_export_id_and_a_copy_of_it_gets_a_checksum(
    prolific_emulator, conn, tmp_path
):
    exp = load_batch_export(prolific_emulator.add_batch(seed=5, n_submissions=2), **conn)
    assert read_export(exp.archive_url).export_id == exp.export_id
    copy = tmp_path / "elsewhere" / "archive.zip"
    copy.parent.mkdir()
    shutil.copyfile(exp.archive_url, copy)
    copied = read_export(str(copy))
    assert copied.export_id.startswith("sha256-")
    assert copied.export_id != "archive"


# -- exports list: readable text ----------------------------------------------------------------


def test_exports_list_text_shows_iso_times_and_compact_json_filters(env, capsys):
    batch_id = env.add_batch(seed=6, n_submissions=2)
    since = "2020-01-02T03:04:05Z"
    assert main(["batch", batch_id, "--json"]) == 0
    assert main(["batch", batch_id, "--since", since, "--study-id", "s1", "--json"]) == 0
    capsys.readouterr()
    jobs = _cli_json(capsys, ["exports", "list", batch_id])
    assert main(["exports", "list", batch_id]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "<25" not in "".join(lines)
    for job, line in zip(jobs, lines, strict=True):
        export_id, status, created, flt = line.split(maxsplit=3)
        assert (export_id, status) == (job["export_id"], "complete")
        assert created.endswith("Z") and created[:19] == job["created_at"][:19]
        assert json.loads(flt) == {k: v for k, v in job["filter"].items() if v is not None}
    assert '{"study_id":"s1","from":"2020-01-02T03:04:05Z"}' in lines[0]
    assert lines[1].endswith("  {}")


# -- storage_options reach a remote cache set by $PROLIFIC_INGEST_CACHE --------------------------


def test_storage_options_apply_to_a_bucket_cache_from_the_environment(
    prolific_emulator, s3, monkeypatch
):
    from prolific_ingest import (
        ExportCache,
        ProlificClient,
        download_export,
        request_export,
        wait_for_export,
    )
    from prolific_ingest.exports import ExportRef

    monkeypatch.setenv("PROLIFIC_INGEST_CACHE", s3.url("cache"))
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=7, n_submissions=2)
    conn = {"client": ProlificClient(base_url=emu.base_url, token=emu.token), "progress": False}
    # The endpoint of the (moto) bucket is only in storage_options.
    cache = ExportCache(storage_options=s3.storage_options)  # at $PROLIFIC_INGEST_CACHE
    exp = load_batch_export(batch_id, cache=cache, **conn)
    assert exp.archive_url.startswith(f"s3://{s3.bucket}/cache/")
    s3.fs.invalidate_cache()
    assert s3.fs.exists(f"{s3.bucket}/cache/batch/{batch_id}/{exp.export_id}/archive.zip")
    again = load_batch_export(batch_id, cache=cache, offline=True)
    assert again.export_id == exp.export_id
    assert len(again.answers) == emu.ground_truth(batch_id).counts["answers"]

    with ProlificClient(base_url=emu.base_url, token=emu.token) as client:
        job = wait_for_export(client, request_export(client, ExportRef("batch", batch_id)))
        entry = download_export(job, client=client, storage_options=s3.storage_options)
    assert entry.archive_path.startswith(f"s3://{s3.bucket}/cache/batch/{batch_id}/")


# -- a base URL copied with /api/v1 -------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["/api/v1", "/api/v1/", "/api/v1/data-collection/"])
def test_a_base_url_ending_in_api_v1_reaches_the_api(prolific_emulator, conn, suffix, caplog):
    import logging

    from prolific_ingest import ProlificClient

    emu = prolific_emulator
    batch_id = emu.add_batch(seed=8, n_submissions=2)
    with caplog.at_level(logging.DEBUG, logger="prolific_ingest.config"):
        client = ProlificClient(base_url=emu.base_url + suffix, token=emu.token)
    assert client.settings.base_url == emu.base_url
    assert "/api/v1" in caplog.text
    exp = load_batch_export(batch_id, **dict(conn, client=client))
    assert len(exp.answers) == emu.ground_truth(batch_id).counts["answers"]
    api_paths = [r.path for r in emu.requests if r.host == "api"]
    assert api_paths and all(p.startswith("/api/v1/data-collection/") for p in api_paths)


def test_the_cli_accepts_prolific_api_url_with_api_v1(env, monkeypatch, capsys):
    monkeypatch.setenv("PROLIFIC_API_URL", env.base_url + "/api/v1")
    batch_id = env.add_batch(seed=9, n_submissions=2)
    payload = _cli_json(capsys, ["batch", batch_id])
    assert payload["rows"]["answers"] == env.ground_truth(batch_id).counts["answers"]


# -- Export repr: one table order and one separator, fresh or cached ------------------------------


def test_export_repr_is_the_same_for_a_fresh_and_a_cached_load(prolific_emulator, conn):
    import re

    from prolific_ingest.tables import TABLE_NAMES

    batch_id = prolific_emulator.add_batch(seed=10, n_submissions=3)
    fresh = load_batch_export(batch_id, **conn)
    cached = load_batch_export(batch_id, **conn)
    offline = load_batch_export(batch_id, **dict(conn, offline=True))
    assert cached.export_id == fresh.export_id
    assert repr(fresh) == repr(cached) == repr(offline)
    for exp in (fresh, cached, offline):
        assert list(exp.row_counts) == list(TABLE_NAMES)
    text = repr(fresh)
    assert re.fullmatch(r"<Export batch \S+( [a-z_]+=\S+)+>", text), text
    names = re.findall(r" ([a-z_]+)=", text)
    assert names == ["export_id", "fetched_at", *TABLE_NAMES[:-1]]  # rejected only if > 0


# -- incremental loads request a fresh export (notebooks/03 §4) ----------------------------------


def test_an_incremental_load_requests_a_new_export_even_with_the_same_filter(
    prolific_emulator, conn, tmp_path
):
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=11, n_submissions=2)
    lake = str(tmp_path / "lake")
    load_batch_export(batch_id, output=LakeTarget(lake, incremental=True), **conn)
    second = load_batch_export(batch_id, output=LakeTarget(lake, incremental=True), **conn)
    third = load_batch_export(batch_id, output=LakeTarget(lake, incremental=True), **conn)
    assert second.filter == third.filter  # same watermark, same request ...
    assert third.export_id != second.export_id  # ... yet a new export, not a reused one
    posts = [r for r in emu.requests if r.host == "api" and r.method == "POST"]
    assert len(posts) == 3


def test_max_age_none_still_never_reuses_an_export_and_warns(prolific_emulator, conn):
    batch_id = prolific_emulator.add_batch(seed=12, n_submissions=2)
    first = load_batch_export(batch_id, **conn)
    assert load_batch_export(batch_id, **conn).export_id == first.export_id  # default: reuse
    with pytest.warns(DeprecationWarning, match=r"max_age=None.*max_age=0"):
        fresh = load_batch_export(batch_id, max_age=None, **conn)
    assert fresh.export_id != first.export_id
    assert "``None`` is deprecated" in (load_batch_export.__doc__ or "")


def test_max_age_any_age_reuses_an_old_export_in_a_load_and_in_the_cache(
    prolific_emulator, conn, monkeypatch
):
    from datetime import timedelta

    from prolific_ingest import ANY_AGE, ExportCache, ExportRef
    from prolific_ingest.cache import _store

    batch_id = prolific_emulator.add_batch(seed=13, n_submissions=2)
    first = load_batch_export(batch_id, **conn)
    later = _store.datetime.now(_store.UTC) + timedelta(days=400)
    clock = type("Later", (_store.datetime,), {"now": classmethod(lambda cls, tz=None: later)})
    monkeypatch.setattr(_store, "datetime", clock)  # the cached export is now 400 days old
    cache = ExportCache(conn["cache"])
    ref = ExportRef("batch", batch_id)
    assert cache.find(ref, max_age=timedelta(days=1)) is None
    assert cache.find(ref, max_age=ANY_AGE).export_id == first.export_id
    assert cache.find(ref, max_age=None).export_id == first.export_id  # None: no limit
    prolific_emulator.clear_requests()
    again = load_batch_export(batch_id, max_age=ANY_AGE, **conn)  # online, yet a cache hit
    assert again.export_id == first.export_id
    assert prolific_emulator.requests == []


# -- CLI: --timeout, and the resume hint of a timeout ---------------------------------------------


@pytest.mark.parametrize("kind", ["batch", "collection"])
def test_timeout_then_resume_with_the_hinted_export_id(env, capsys, kind):
    import re

    owner = env.add_batch(seed=13, n_submissions=2) if kind == "batch" else None
    if owner is None:
        owner = env.add_collection(seed=13, n_submissions=2)
    env.polls_until_complete = 10**6  # the export keeps generating
    assert main([kind, owner, "--timeout", "0.3"]) == 5
    err = capsys.readouterr().err
    found = re.search(r"^hint: .*--export-id (\S+)", err, re.MULTILINE)
    assert found, err
    export_id = found.group(1)

    env.polls_until_complete = 0  # it completes
    payload = _cli_json(capsys, [kind, owner, "--export-id", export_id])
    assert payload["export_id"] == export_id
    posts = [r for r in env.requests if r.host == "api" and r.method == "POST"]
    assert len(posts) == 1, "resuming must not request another export"


def test_the_demo_default_output_is_git_ignored():
    root = Path(__file__).resolve().parents[1]
    source = (root / "prolific_ingest" / "cli" / "_read.py").read_text(encoding="utf-8")
    assert 'Path("prolific-demo-output")' in source  # the demo's default --out
    ignored = (root / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "prolific-demo-output/" in ignored


# -- CLI options that did nothing --------------------------------------------------------------


def test_exports_delete_needs_an_export_id_and_list_takes_none(env, capsys):
    batch_id = env.add_batch(seed=14, n_submissions=2)
    with pytest.raises(SystemExit) as info:
        main(["exports", "delete", batch_id])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: prolific-ingest exports" in err and "at least one EXPORT_ID" in err
    with pytest.raises(SystemExit) as info:
        main(["exports", "list", batch_id, "0f3c"])
    assert info.value.code == 2
    assert "only for delete" in capsys.readouterr().err
    assert env.requests == [], "nothing is sent for a usage error"


def test_collection_has_no_max_workers_option(env, capsys):
    collection_id = env.add_collection(seed=15, n_submissions=2)
    with pytest.raises(SystemExit) as info:
        main(["collection", collection_id, "--max-workers", "2"])
    assert info.value.code == 2
    assert "--max-workers" in capsys.readouterr().err
    assert main(["collection", collection_id, "--json"]) == 0


# -- since later than until: refused locally --------------------------------------------------


def test_since_later_than_until_is_refused_before_any_request(env, capsys):
    from prolific_ingest import ExportFilter

    with pytest.raises(ConfigurationError, match=r"2026-12-01T00:00:00Z.*2026-11-01T00:00:00Z"):
        ExportFilter.coerce(since="2026-12-01", until="2026-11-01")
    assert ExportFilter.coerce(since="2026-11-01", until="2026-12-01").since is not None

    batch_id = env.add_batch(seed=16, n_submissions=2)
    argv = ["batch", batch_id, "--since", "2026-12-01", "--until", "2026-11-01T00:00:00Z"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: since 2026-12-01T00:00:00Z is later than until")
    assert "2026-11-01T00:00:00Z" in err and "Traceback" not in err
    assert env.requests == [], "refused locally, not by the server"


def test_an_incremental_load_past_until_says_why(prolific_emulator, conn, tmp_path):
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=17, n_submissions=2)
    lake = str(tmp_path / "lake")
    load_batch_export(batch_id, output=LakeTarget(lake, incremental=True), **conn)
    emu.clear_requests()
    with pytest.raises(ConfigurationError, match=r"incremental load .* later than until"):
        load_batch_export(
            batch_id,
            output=LakeTarget(lake, incremental=True),
            until="2000-01-01T00:00:00Z",
            **conn,
        )
    assert [r for r in emu.requests if r.host == "api"] == []
