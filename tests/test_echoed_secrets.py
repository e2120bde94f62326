"""Server text is scrubbed of every secret the client holds before it goes anywhere.

A server (careless or hostile) that echoes the token, a URL password or a presigned
signature in an error body must not get it into an exception, a log record (every
logger at DEBUG) or the CLI's ``error:`` line.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

import pytest

from prolific_ingest import (
    APIError,
    ProlificClient,
    RetryPolicy,
    Settings,
    load_batch_export,
)
from prolific_ingest._http.scrub import scrub_secrets
from prolific_ingest.cli import main
from prolific_ingest.testing import Emulator

FAST_RETRY = RetryPolicy(max_attempts=2, backoff_base=0.001, backoff_max=0.01, max_elapsed=30)
# what the emulator's echo_token fault puts in its bodies, besides the token
ECHOED = ("hunter2-pass", "0f1e2d3c4b5a")


@pytest.fixture
def everything_at_debug(caplog: pytest.LogCaptureFixture) -> Any:
    """Every logger at DEBUG, all records captured (urllib3's and the emulator's too)."""
    loggers = [logging.getLogger(), *map(logging.getLogger, logging.root.manager.loggerDict)]
    levels = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    yield caplog
    for lg, level in levels:
        lg.setLevel(level)


def _texts_of(exc: BaseException) -> str:
    parts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    if isinstance(exc, APIError):
        parts += [str(exc.title), str(exc.detail), str(exc.url)]
    return "\n".join(parts)


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    lines = []
    for record in caplog.records:
        lines.append(record.getMessage())
        if record.exc_info and record.exc_info[1] is not None:
            lines.append("".join(traceback.format_exception(record.exc_info[1])))
    return "\n".join(lines)


@pytest.mark.parametrize("status", [401, 403, 404, 410, 500])
def test_an_echoed_token_never_reaches_the_exception_or_the_logs(
    prolific_emulator: Emulator, tmp_path: Path, everything_at_debug: Any, status: int
) -> None:
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=21, n_submissions=2)
    emu.faults.echo_token(status=status, times=None)
    client = ProlificClient(
        Settings(base_url=emu.base_url, poll_interval=0.01), token=emu.token, retry=FAST_RETRY
    )
    with pytest.raises(APIError) as info:
        load_batch_export(batch_id, client=client, cache=str(tmp_path / "c"), progress=False)
    assert info.value.status == status
    assert "<redacted>" in str(info.value)  # the server's text is there, minus the secrets
    seen = _texts_of(info.value) + _logged(everything_at_debug)
    assert emu.token not in seen
    for secret in ECHOED:
        assert secret not in seen
    assert everything_at_debug.records  # DEBUG capture really was on


@pytest.mark.parametrize("status", [401, 403, 404, 410, 500])
def test_an_echoed_token_never_reaches_the_cli_error_line(
    env: Emulator, capsys: pytest.CaptureFixture[str], everything_at_debug: Any, status: int
) -> None:
    batch_id = env.add_batch(seed=22, n_submissions=2)
    env.faults.echo_token(status=status, times=None)
    code = main(["batch", batch_id, "-vv"])
    out, err = capsys.readouterr()
    assert code != 0
    assert "error:" in err
    for text in (out, err, _logged(everything_at_debug)):
        assert env.token not in text
        for secret in ECHOED:
            assert secret not in text


def test_scrubbing_removes_held_secrets_url_credentials_and_signatures() -> None:
    token = "tok-9f8e7d6c5b4a"
    text = (
        f"bad header 'Authorization: Token {token}' (urlencoded: tok%2D9f8e7d6c5b4a); "
        "fetch https://alice:s3cr3t-pw@store.example/a/b.zip?X-Amz-Signature=abcdef&X-Amz-Expires=3600 "
        "or reuse X-Amz-Signature=abcdef"
    )
    clean = scrub_secrets(text, [token, "tok-9f8e7d6c5b4a".replace("-", "%2D")])
    for secret in (token, "9f8e7d6c5b4a", "s3cr3t-pw", "abcdef", "alice"):
        assert secret not in clean
    assert "https://store.example/a/b.zip" in clean  # the useful part of the URL stays
    assert "bad header" in clean
