"""The prolific-ingest command line, in-process and as the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from prolific_ingest.cli import build_parser, main

SUBCOMMANDS = ["batch", "collection", "read", "demo", "emulator", "exports", "cache"]


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
    assert (out / "_manifests" / f"batch_id={batch_id}").is_dir()


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
    from prolific_ingest.testing import make_batch_export

    path = tmp_path / "export.zip"
    truth = make_batch_export(path, n_submissions=4, seed=5)
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
        assert (out / "_manifests" / f"batch_id={batch_id}").is_dir()


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
