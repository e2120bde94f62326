"""The prolific-ingest command line, in-process and as the installed console script."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from prolific_ingest.cli import build_parser, main

SUBCOMMANDS = ["batch", "collection", "read", "demo", "emulator", "exports", "cache", "lake"]


def test_help_lists_every_subcommand_and_each_has_complete_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in text
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert p.description, name
        for action in p._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.dest} has no help"


def test_console_script_is_installed_and_prints_version():
    exe = shutil.which("prolific-ingest") or str(Path(sys.executable).parent / "prolific-ingest")
    done = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("prolific-ingest ")


def test_batch_json_output_and_parquet(env, tmp_path, capsys):
    batch_id = env.add_batch(seed=2, n_submissions=5)
    out = tmp_path / "lake"
    assert main(["batch", batch_id, "--out", str(out), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    truth = env.ground_truth(batch_id)
    assert payload["id"] == batch_id
    assert payload["rows"]["answers"] == truth.counts["answers"]
    assert (out / "answers" / "_delta_log").is_dir()
    assert (out / "answers" / f"batch_id={batch_id}").is_dir()


def test_several_batches_report_per_batch_and_exit_8_on_partial_failure(env, capsys):
    good = env.add_batch(seed=1, n_submissions=3)
    missing = "11111111-1111-1111-1111-111111111111"
    assert main(["batch", good, missing, "--json"]) == 8
    payload = json.loads(capsys.readouterr().out)
    assert list(payload["results"]) == [good]
    assert "NotFoundError" in payload["errors"][missing]


def test_errors_are_one_line_with_exit_codes_and_no_traceback(env, capsys, monkeypatch):
    assert main(["batch", "22222222-2222-2222-2222-222222222222"]) == 4
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "404" in err and "Traceback" not in err
    monkeypatch.delenv("PROLIFIC_TOKEN")
    assert main(["batch", "x"]) == 2
    assert "PROLIFIC_TOKEN" in capsys.readouterr().err


def test_debug_shows_the_traceback(env):
    from prolific_ingest import NotFoundError

    with pytest.raises(NotFoundError):
        main(["batch", "33333333-3333-3333-3333-333333333333", "--debug"])


def test_offline_cache_miss_exits_4(env, capsys):
    batch_id = env.add_batch(seed=1, n_submissions=2)
    assert main(["batch", batch_id, "--offline"]) == 4
    assert "offline" in capsys.readouterr().err
    assert env.requests == []


def test_read_archive_and_cache_commands(env, tmp_path, capsys):
    from prolific_ingest.testing import ExportSpec, make_batch_export

    path = tmp_path / "export.zip"
    truth = make_batch_export(path, ExportSpec(n_submissions=4, seed=5))
    assert main(["read", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"]["answers"] == truth.counts["answers"]

    batch_id = env.add_batch(seed=3, n_submissions=2)
    assert main(["batch", batch_id, "--json"]) == 0
    capsys.readouterr()
    assert main(["cache", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cache")
    assert main(["cache", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["id"] for e in listed] == [batch_id]
    assert main(["cache", "clear", "--dry-run"]) == 0
    assert "would remove 1" in capsys.readouterr().out
    assert main(["cache", "clear"]) == 0
    assert "removed 1" in capsys.readouterr().out
    assert main(["cache", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_exports_list_delete_prune(env, capsys):
    batch_id = env.add_batch(seed=4, n_submissions=2)
    for _ in range(3):
        assert main(["batch", batch_id, "--max-age", "0", "--json"]) == 0
    capsys.readouterr()
    assert main(["exports", "list", batch_id, "--json"]) == 0
    jobs = json.loads(capsys.readouterr().out)
    assert len(jobs) == 3 and all(j["status"] == "complete" for j in jobs)
    assert all("url" not in j for j in jobs)
    assert main(["exports", "prune", batch_id, "--keep", "1", "--json"]) == 0
    pruned = json.loads(capsys.readouterr().out)
    assert [j["export_id"] for j in pruned] == [j["export_id"] for j in jobs[1:]]
    assert main(["exports", "delete", batch_id, jobs[0]["export_id"]]) == 0
    capsys.readouterr()
    assert main(["exports", "list", batch_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_demo_runs_the_whole_pipeline_without_a_token(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PROLIFIC_TOKEN", raising=False)
    out = tmp_path / "demo-out"
    assert main(["demo", "--out", str(out), "--submissions", "8"]) == 0
    text = capsys.readouterr().out
    for name in ("submissions", "tasks", "responses", "answers", "files", "instructions"):
        assert name in text
        assert (out / name).is_dir()


def test_batch_ids_from_file_and_incremental_flag(env, tmp_path, capsys):
    ids = [env.add_batch(seed=10 + i, n_submissions=2) for i in range(3)]
    listing = tmp_path / "batches.txt"
    listing.write_text("# nightly batches\n" + "\n".join(ids) + "\n\n", encoding="utf-8")
    out = tmp_path / "lake"
    assert (
        main(["batch", "--from-file", str(listing), "--out", str(out), "--incremental", "--json"])
        == 0
    )
    payload = json.loads(capsys.readouterr().out)
    assert sorted(payload["results"]) == sorted(ids)
    assert payload["errors"] == {}
    for batch_id in ids:
        assert (out / "responses" / f"batch_id={batch_id}").is_dir()


def test_emulator_command_prints_url_and_token_then_serves(tmp_path):
    import os
    import signal

    exe = shutil.which("prolific-ingest") or str(Path(sys.executable).parent / "prolific-ingest")
    proc = subprocess.Popen(
        [exe, "emulator", "--port", "0", "--batches", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    with proc:
        try:
            _check_emulator_banner(proc)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)


def _check_emulator_banner(proc):
    """The banner names the API URL, the token and the batches; the API answers."""
    import requests

    lines = []
    while not any(line.strip().startswith("export PROLIFIC_TOKEN=") for line in lines):
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        lines.append(line)
    text = "".join(lines)
    base_url = next(l.split("=", 1)[1].strip() for l in lines if "PROLIFIC_API_URL=" in l)
    token = next(l.split("=", 1)[1].strip() for l in lines if "PROLIFIC_TOKEN=" in l)
    assert base_url.startswith("http://127.0.0.1:")
    assert text.count("batch") >= 2
    batch_id = next(l.split(":", 1)[1].strip() for l in lines if l.strip().startswith("batch"))
    resp = requests.get(
        f"{base_url}/api/v1/data-collection/batches/{batch_id}",
        headers={"Authorization": f"Token {token}"},
        timeout=10,
    )
    assert resp.status_code == 200
    assert resp.json()["id"] == batch_id


# -- parity with the API: options, storage options, messages in CLI terms -----------------------


def _all_parsers(parser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_parsers(sub)


def test_no_parser_accepts_abbreviated_options(env, tmp_path, capsys):
    parsers = list(_all_parsers(build_parser()))
    assert len(parsers) == 1 + len(SUBCOMMANDS)
    assert all(p.allow_abbrev is False for p in parsers)
    batch_id = env.add_batch(seed=1, n_submissions=2)
    out = tmp_path / "lake"
    for argv in (
        ["batch", batch_id, "--out", str(out), "--increment"],
        ["batch", batch_id, "--out", str(out), "--over"],
        ["read", "x.zip", "--storage", "{}"],
        ["cache", "list", "--js"],
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2, argv
        assert "unrecognized arguments" in capsys.readouterr().err
    assert env.requests == [] and not out.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--incremental"], "--incremental needs --out"),
        (["--overwrite"], "--overwrite needs --out"),
        (["--partition-by", "date", "--overwrite"], "--overwrite and --partition-by need --out"),
    ],
)
def test_output_options_without_out_are_usage_errors_in_cli_terms(env, capsys, flags, message):
    with pytest.raises(SystemExit) as info:
        main(["batch", "some-batch", *flags])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "=True" not in err and "output=" not in err
    assert env.requests == []


def test_library_messages_are_phrased_with_cli_options(env, capsys, monkeypatch):
    monkeypatch.delenv("PROLIFIC_TOKEN")
    assert main(["batch", "x"]) == 2
    err = capsys.readouterr().err
    assert "set the PROLIFIC_TOKEN environment variable" in err
    assert "token=" not in err

    monkeypatch.setenv("PROLIFIC_TOKEN", env.token)
    batch_id = env.add_batch(seed=2, n_submissions=2)
    assert main(["batch", batch_id, "--offline"]) == 4
    err = capsys.readouterr().err
    assert "--offline" in err and "--cache" in err
    assert "offline=True" not in err and "cache=" not in err

    env.polls_until_complete = 10**6  # the export keeps generating
    assert main(["batch", batch_id, "--timeout", "0.05"]) == 5
    err = capsys.readouterr().err
    assert "--export-id" in err and "export_id=" not in err


def test_the_failures_of_several_ids_are_worded_in_cli_terms_too(env, capsys):
    first = env.add_batch(seed=3, n_submissions=2)
    second = env.add_batch(seed=4, n_submissions=2)
    env.polls_until_complete = 10**6  # every export keeps generating
    assert main(["batch", first, second, "--timeout", "0.05", "--json"]) == 8
    errors = json.loads(capsys.readouterr().out)["errors"]
    assert sorted(errors) == sorted([first, second])
    for text in errors.values():
        assert text.startswith("ExportTimeoutError: ")
        assert "--export-id" in text and "export_id=" not in text
    assert main(["batch", first, second, "--timeout", "0.05"]) == 8
    out = capsys.readouterr()
    assert "--export-id" in out.out + out.err and "export_id=" not in out.out + out.err


def test_the_cli_reaches_a_custom_s3_endpoint_with_storage_options(env, s3, tmp_path, capsys):
    options = json.dumps({"client_kwargs": {"endpoint_url": s3.endpoint}})
    batch_id = env.add_batch(seed=6, n_submissions=3)
    argv = ["batch", batch_id, "--out", s3.url("lake"), "--cache", s3.url("cache")]
    assert main([*argv, "--storage-options", options, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    s3.fs.invalidate_cache()
    assert s3.fs.find(f"{s3.bucket}/lake/answers/batch_id={batch_id}")
    entry = f"{s3.bucket}/cache/batch/{batch_id}/{payload['export_id']}/archive.zip"
    assert s3.fs.exists(entry)

    # read: the archive in the bucket, written to another prefix of it
    assert (
        main(["read", f"s3://{entry}", "--out", s3.url("copy"), "--storage-options", options]) == 0
    )
    s3.fs.invalidate_cache()
    assert s3.fs.find(f"{s3.bucket}/copy/answers/_delta_log")


def test_storage_options_come_from_the_environment_too(env, s3, monkeypatch, capsys):
    monkeypatch.setenv(
        "PROLIFIC_INGEST_STORAGE_OPTIONS",
        json.dumps({"client_kwargs": {"endpoint_url": s3.endpoint}}),
    )
    batch_id = env.add_batch(seed=7, n_submissions=2)
    assert main(["batch", batch_id, "--cache", s3.url("cache"), "--json"]) == 0
    capsys.readouterr()
    assert main(["cache", "list", "--cache", s3.url("cache"), "--json"]) == 0
    assert [e["id"] for e in json.loads(capsys.readouterr().out)] == [batch_id]


@pytest.mark.parametrize("text", ['{"secret": "hunter2-abc"', '["hunter2-abc"]', "hunter2-abc"])
def test_storage_options_that_are_not_a_json_object_are_refused_without_echoing_them(
    text, monkeypatch, capsys
):
    with pytest.raises(SystemExit) as info:
        main(["cache", "path", "--storage-options", text])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--storage-options" in err and "hunter2" not in err
    monkeypatch.setenv("PROLIFIC_INGEST_STORAGE_OPTIONS", text)
    with pytest.raises(SystemExit) as info:
        main(["cache", "path"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "PROLIFIC_INGEST_STORAGE_OPTIONS" in err and "hunter2" not in err


def test_partition_by_and_overwrite_reach_the_writer(env, tmp_path, capsys):
    batch_id = env.add_batch(seed=8, n_submissions=4)
    out = tmp_path / "lake"
    argv = ["batch", batch_id, "--out", str(out), "--json"]
    first = json.loads(_ok(capsys, [*argv, "--partition-by", "date"]))
    dates = list((out / "responses").glob(f"batch_id={batch_id}/date=*"))
    assert dates, "responses are partitioned by date"
    again = json.loads(_ok(capsys, [*argv, "--partition-by", "date"]))
    assert again["export_id"] == first["export_id"] and again["output_skipped"] is True
    replaced = json.loads(_ok(capsys, [*argv, "--partition-by", "date", "--overwrite"]))
    assert replaced["export_id"] == first["export_id"] and replaced["output_skipped"] is False


def _ok(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


@pytest.mark.parametrize("url", ["sss3://lake/x", "s3:/lake", "s3://"])
def test_a_bad_out_url_is_one_error_line_before_anything_happens(
    env, tmp_path, monkeypatch, capsys, url
):
    monkeypatch.chdir(tmp_path)
    assert main(["batch", "some-batch", "--out", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: output location {url!r}") and "Traceback" not in err
    assert env.requests == [] and list(tmp_path.iterdir()) == []


def test_a_missing_archive_exits_4_with_one_line(tmp_path, capsys):
    assert main(["read", str(tmp_path / "nope.zip")]) == 4
    err = capsys.readouterr().err
    assert err.startswith("error: read location") and "does not exist" in err


def test_verbose_s3_logs_of_the_console_script_hold_no_url_credentials(env, s3, tmp_path):
    import os

    secret = "s3cr3t-Pa55word-cli"
    batch_id = env.add_batch(seed=9, n_submissions=2)
    exe = shutil.which("prolific-ingest") or str(Path(sys.executable).parent / "prolific-ingest")
    options = json.dumps({"client_kwargs": {"endpoint_url": s3.endpoint}})
    done = subprocess.run(
        [
            exe,
            "batch",
            batch_id,
            "--out",
            f"s3://AKIDEXAMPLE:{secret}@{s3.bucket}/lake",
            "--storage-options",
            options,
            "-vv",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "DEBUG s3fs" in done.stderr  # s3fs's own DEBUG log was on
    assert secret not in done.stderr and secret not in done.stdout
    s3.fs.invalidate_cache()
    assert s3.fs.find(f"{s3.bucket}/lake/answers/batch_id={batch_id}")
