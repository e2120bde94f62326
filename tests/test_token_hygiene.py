"""The token never leaves the API request: not to the download host, logs, reprs, errors or files."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from prolific_ingest import (
    AuthenticationError,
    ExportFailedError,
    ProlificClient,
    Settings,
    load_batch_export,
)
from prolific_ingest.cli import main as cli_main
from prolific_ingest.config import Secret


def _all_bytes_under(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def test_token_is_nowhere_but_the_api_authorization_header(
    prolific_emulator, tmp_path, caplog, capsys
):
    emu = prolific_emulator
    token = emu.token
    caplog.set_level(logging.DEBUG)  # everything, including urllib3 and every library logger
    batch_id = emu.add_batch(seed=3, n_submissions=6, uploads=True)
    cache, out = tmp_path / "cache", tmp_path / "lake"
    settings = Settings.from_env(base_url=emu.base_url, token=token)
    exp = load_batch_export(
        batch_id,
        client=settings,
        cache=str(cache),
        output=str(out),
        progress=False,
    )
    emu.faults.fail_job()
    with pytest.raises(ExportFailedError) as failed:
        load_batch_export(batch_id, client=settings, cache=str(cache), max_age=0)
    wrong = settings.replace(token=Secret(token + "x"))
    with pytest.raises(AuthenticationError) as denied:
        load_batch_export(batch_id, client=wrong, cache=str(cache), max_age=0)

    api_calls = [r for r in emu.requests if r.host == "api"]
    downloads = [r for r in emu.requests if r.host == "download"]
    assert api_calls and downloads
    assert all("authorization" not in {k.lower() for k in r.headers} for r in downloads)
    assert all(token not in repr(r) for r in emu.requests)

    client = ProlificClient(Settings.from_env(token=token, base_url=emu.base_url))
    texts = [
        caplog.text,
        *(r.getMessage() for r in caplog.records),
        *capsys.readouterr(),
        repr(exp),
        str(exp.metadata),
        repr(failed.value),
        str(failed.value),
        repr(denied.value),
        str(denied.value),
        repr(client),
        repr(client.settings),
        str(client.settings),
    ]
    for text in texts:
        assert token not in text
    assert token.encode() not in _all_bytes_under(cache)
    assert token.encode() not in _all_bytes_under(out)


def test_a_presigned_signature_never_reaches_a_log_record_even_urllib3s_at_debug(
    prolific_emulator, tmp_path, caplog
):
    emu = prolific_emulator
    caplog.set_level(logging.DEBUG)  # every logger, urllib3's request lines included
    batch_id = emu.add_batch(seed=4, n_submissions=3)
    settings = Settings.from_env(base_url=emu.base_url, token=emu.token)
    load_batch_export(batch_id, client=settings, cache=str(tmp_path), progress=False)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")]
    downloads = [line for line in lines if "X-Amz-Signature" in line]
    assert downloads, "urllib3 logged no request line of the download"
    for text in [caplog.text, *lines]:
        assert not re.search(r"X-Amz-(Signature|Credential)=(?!<redacted>)", text)


def test_cli_never_prints_the_token(prolific_emulator, tmp_path, capsys, monkeypatch):
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=1, n_submissions=3)
    monkeypatch.setenv("PROLIFIC_TOKEN", emu.token)
    monkeypatch.setenv("PROLIFIC_API_URL", emu.base_url)
    code = cli_main(["batch", batch_id, "--cache", str(tmp_path / "c"), "-vv", "--json"])
    assert code == 0
    monkeypatch.setenv("PROLIFIC_TOKEN", emu.token + "-bad")
    assert (
        cli_main(["batch", batch_id, "--cache", str(tmp_path / "c"), "--max-age", "0", "-vv"]) == 3
    )
    out, err = capsys.readouterr()
    assert emu.token not in out + err
    assert "401" in err
