"""ProlificClient over real loopback sockets: auth, URLs, error envelopes, retries, logging.

A tiny scripted ``http.server`` answers exact bodies and statuses (error envelopes,
dropped connections); the emulator (``prolific_emulator`` fixture) checks the
behaviour against the full API.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import requests

from prolific_ingest import __version__
from prolific_ingest import client as client_module
from prolific_ingest._http.api_errors import REQUEST_ID_HEADERS
from prolific_ingest._http.retry import RetryPolicy
from prolific_ingest._http.watchdog import Watchdog
from prolific_ingest.client import ProlificClient, check_base_url
from prolific_ingest.config import Secret, Settings
from prolific_ingest.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConflictError,
    ExportLimitError,
    ExportStillGeneratingError,
    MissingTokenError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from prolific_ingest.exports import ExportFilter, ExportRef, request_export
from prolific_ingest.testing import Emulator
from tests._helpers import FakeClock, QuietHandler, logged, serve

TOKEN = "tok-SUPERSECRET-123"

# -- a scripted loopback server -------------------------------------------------------------

DROP = "drop"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Script:
    responses: list[Any] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def add(
        self, status: int, body: Any = None, headers: dict[str, str] | None = None, times: int = 1
    ) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        for _ in range(times):
            self.responses.append((status, raw, headers or {}))


class _Handler(QuietHandler):
    script: Script

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.script.seen.append(Seen(self.command, self.path, dict(self.headers.items())))
        item = self.script.responses.pop(0) if self.script.responses else (200, b"{}", {})
        if item == DROP:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        status, body, headers = item
        self.send_response(status)
        headers = {"Content-Type": "application/json", **headers}
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer


@pytest.fixture
def stub() -> Iterator[tuple[str, Script]]:
    script = Script()
    with serve(type("Handler", (_Handler,), {"script": script})) as url:
        yield url, script


def make(base_url: str, **kw: Any) -> tuple[ProlificClient, FakeClock]:
    clock = FakeClock(start=1000.0)
    kw.setdefault("token", TOKEN)
    settings = Settings(base_url=base_url, connect_timeout=5.0, read_timeout=10.0)
    return ProlificClient(settings, sleep=clock.sleep, clock=clock, **kw), clock


# -- construction ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["https://api.prolific.com", "http://127.0.0.1:8000", "http://localhost:1", "http://[::1]:9"],
)
def test_accepted_base_urls(url: str) -> None:
    assert check_base_url(url + "/") == url


@pytest.mark.parametrize(
    "url", ["http://api.prolific.com", "http://10.1.2.3", "ftp://127.0.0.1", "https://", "nope"]
)
def test_refused_base_urls(url: str) -> None:
    with pytest.raises(ConfigurationError):
        ProlificClient(token=TOKEN, base_url=url)


def test_repr_and_settings_never_show_the_token() -> None:
    client = ProlificClient(token=TOKEN, base_url="https://api.prolific.com")
    assert TOKEN not in repr(client)
    assert TOKEN not in repr(client.settings)
    assert "token=set" in repr(client)
    assert isinstance(client.settings.token, Secret)
    assert client.settings.token.get_secret_value() == TOKEN
    client.close()


def test_token_and_base_url_override_settings() -> None:
    settings = Settings(base_url="https://api.prolific.com", token=Secret("a"))
    client = ProlificClient(settings, token="b", base_url="http://127.0.0.1:5/")
    assert client.settings.token == Secret("b")
    assert client.settings.base_url == "http://127.0.0.1:5"
    assert client.url_for("batches/x/export") == (
        "http://127.0.0.1:5/api/v1/data-collection/batches/x/export"
    )


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROLIFIC_TOKEN", "envtoken")
    monkeypatch.setenv("PROLIFIC_API_URL", "http://127.0.0.1:7")
    client = ProlificClient()
    assert client.settings.base_url == "http://127.0.0.1:7"
    assert client.settings.token == Secret("envtoken")


def test_missing_token_is_reported_on_first_call(
    stub: tuple[str, Script], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, script = stub
    monkeypatch.delenv("PROLIFIC_TOKEN", raising=False)
    client = ProlificClient(base_url=url)  # no error yet
    with pytest.raises(MissingTokenError, match="PROLIFIC_TOKEN"):
        client.get_json("batches/b/export")
    assert script.seen == []


# -- requests -------------------------------------------------------------------------------


def test_headers_timeout_and_path(stub: tuple[str, Script]) -> None:
    url, script = stub
    script.add(200, [{"export_id": "e"}])
    with make(url)[0] as client:
        body = client.get_json("batches/b1/export", params={"study_id": "s", "from": None})
    assert body == [{"export_id": "e"}]
    seen = script.seen[0]
    assert seen.method == "GET"
    assert seen.path == "/api/v1/data-collection/batches/b1/export?study_id=s"
    assert seen.headers["Authorization"] == f"Token {TOKEN}"
    assert seen.headers["User-Agent"] == f"prolific-ingest/{__version__}"


def test_one_info_line_per_call_without_secrets(
    stub: tuple[str, Script], caplog: pytest.LogCaptureFixture
) -> None:
    url, script = stub
    script.add(202, {"status": "generating", "export_id": "e"})
    client, _ = make(url)
    with caplog.at_level(logging.INFO, logger="prolific_ingest.client"):
        client.request("POST", "batches/b1/export", params={"study_id": "s1"}, expect=(202,))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert "POST /api/v1/data-collection/batches/b1/export -> 202" in lines[0]
    assert "authenticated=True" in lines[0]
    assert TOKEN not in caplog.text


def test_unexpected_success_status_is_an_error(stub: tuple[str, Script]) -> None:
    url, script = stub
    script.add(204, b"")
    with pytest.raises(APIError) as info:
        make(url)[0].request("GET", "x")
    assert info.value.status == 204


def test_non_json_success_body(stub: tuple[str, Script]) -> None:
    url, script = stub
    script.add(200, b"<html>hello</html>")
    with pytest.raises(APIError, match="not JSON"):
        make(url)[0].get_json("x")


def test_ca_bundle_is_used_for_verification(stub: tuple[str, Script]) -> None:
    url, script = stub

    class Recording(requests.Session):
        verify_seen: list[Any] = []

        def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
            self.verify_seen.append(kwargs.get("verify"))
            return super().request(*args, **kwargs)

    session = Recording()
    settings = Settings(base_url=url, token=Secret(TOKEN), ca_bundle="/tmp/ca.pem")
    script.add(200, {})
    ProlificClient(settings, session=session).get_json("x")
    assert Recording.verify_seen == ["/tmp/ca.pem"]
    assert session.auth is None
    assert "Authorization" not in session.headers  # the token is per request, not per session


# -- error envelopes ------------------------------------------------------------------------

ENVELOPE = {
    "error": {
        "status": 404,
        "error_code": 140100,
        "title": "Not found",
        "detail": "Export job not found",
        "additional_information": "/api/v1/errors/140100",
    }
}


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (422, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, ConflictError),
        (429, RateLimitedError),
        (500, ServerError),
        (503, ServerError),
        (405, APIError),
    ],
)
def test_status_to_exception(stub: tuple[str, Script], status: int, cls: type[APIError]) -> None:
    url, script = stub
    body = {"error": {**ENVELOPE["error"], "status": status}}
    script.add(status, body, times=10)
    client, _ = make(url, retry=RetryPolicy.none())
    with pytest.raises(cls) as info:
        client.get_json("batches/b1/export/e1")
    err = info.value
    assert err.status == status
    assert err.error_code == 140100
    assert err.title == "Not found"
    assert err.detail == "Export job not found"
    assert err.method == "GET"
    assert err.url is not None
    assert err.url.endswith("/api/v1/data-collection/batches/b1/export/e1")
    text = str(err)
    assert f"GET /api/v1/data-collection/batches/b1/export/e1 -> {status}" in text
    assert "Not found" in text
    assert "Export job not found" in text
    assert TOKEN not in text
    assert len(script.seen) == 1  # RetryPolicy.none()


def test_builtin_mixins() -> None:
    assert issubclass(AuthenticationError, PermissionError)
    assert issubclass(NotFoundError, LookupError)


def test_message_detail_envelope(stub: tuple[str, Script]) -> None:
    url, script = stub
    script.add(403, {"message": "Forbidden", "detail": "You do not currently have permission"})
    with pytest.raises(PermissionDeniedError) as info:
        make(url)[0].get_json("collections/c/export")
    assert info.value.title == "Forbidden"
    assert "You do not currently have permission" in str(info.value)


def test_field_errors_are_flattened(stub: tuple[str, Script]) -> None:
    url, script = stub
    script.add(400, {"error": {"status": 400, "title": "Bad", "detail": {"from": ["bad date"]}}})
    with pytest.raises(BadRequestError, match=r"from: bad date"):
        make(url)[0].request("POST", "batches/b/export", params={"from": "x"})


def test_non_json_error_body(stub: tuple[str, Script]) -> None:
    url, script = stub
    script.add(502, b"<html>Bad Gateway</html>", headers={"Content-Type": "text/html"})
    with pytest.raises(ServerError, match="Bad Gateway") as info:
        make(url, retry=RetryPolicy.none())[0].get_json("x")
    assert info.value.title is None


def test_409_on_post_is_the_export_limit(stub: tuple[str, Script]) -> None:
    url, script = stub
    script.add(409, {"error": {"status": 409, "title": "Too many exports"}})
    with pytest.raises(ExportLimitError, match="Too many exports"):
        make(url)[0].request("POST", "batches/b/export", expect=(200, 202))


def test_409_on_delete_is_still_generating(stub: tuple[str, Script]) -> None:
    url, script = stub
    script.add(409, {"error": {"status": 409, "title": "Conflict"}})
    with pytest.raises(ExportStillGeneratingError, match="still generating"):
        make(url)[0].request("DELETE", "batches/b/export/e", expect=(204,))


# -- request ids --------------------------------------------------------------------------


@pytest.mark.parametrize("header", REQUEST_ID_HEADERS)
def test_error_carries_and_names_the_request_id(stub: tuple[str, Script], header: str) -> None:
    url, script = stub
    script.add(404, ENVELOPE, headers={header: "req-7f3a9c"})
    with pytest.raises(NotFoundError) as info:
        make(url)[0].get_json("batches/b1/export/e1")
    assert info.value.request_id == "req-7f3a9c"
    assert str(info.value).endswith("[request id req-7f3a9c]")


def test_error_without_a_request_id_header_has_none(stub: tuple[str, Script]) -> None:
    url, script = stub
    script.add(401, ENVELOPE)
    with pytest.raises(AuthenticationError) as info:
        make(url)[0].get_json("batches/b1")
    assert info.value.request_id is None
    assert "request id" not in str(info.value)
    assert str(info.value).endswith("check PROLIFIC_TOKEN")


def test_request_id_of_the_last_retried_answer(stub: tuple[str, Script]) -> None:
    url, script = stub
    script.add(503, ENVELOPE, headers={"X-Request-Id": "first"})
    script.add(503, ENVELOPE, headers={"X-Request-Id": "last"})
    client, _ = make(url, retry=RetryPolicy(max_attempts=2))
    with pytest.raises(ServerError) as info:
        client.get_json("x")
    assert info.value.request_id == "last"
    assert "first" not in str(info.value)


@pytest.mark.parametrize(
    "value",
    [
        f"id-{TOKEN}",  # the token echoed back
        "two words",
        "x" * 129,
        "\u00e9t\u00e9",
    ],
)
def test_request_id_never_carries_a_secret_or_junk(stub: tuple[str, Script], value: str) -> None:
    url, script = stub
    raw = value.encode("utf-8").decode("latin-1")  # http.server sends latin-1 header text
    script.add(400, ENVELOPE, headers={"X-Request-Id": raw})
    with pytest.raises(BadRequestError) as info:
        make(url)[0].get_json("x")
    assert TOKEN not in str(info.value)
    assert TOKEN not in repr(info.value.request_id)
    if value.startswith("id-"):
        assert info.value.request_id is not None
        assert info.value.request_id.startswith("id-")
    else:
        assert info.value.request_id is None
        assert "request id" not in str(info.value)


def test_non_json_success_body_names_the_request_id(stub: tuple[str, Script]) -> None:
    url, script = stub
    script.add(200, b"<html>", headers={"Content-Type": "text/html", "X-Request-Id": "r-42"})
    with pytest.raises(APIError, match=r"not JSON \[request id r-42\]") as info:
        make(url)[0].get_json("x")
    assert info.value.request_id == "r-42"


def test_log_line_names_the_request_id(
    stub: tuple[str, Script], caplog: pytest.LogCaptureFixture
) -> None:
    url, script = stub
    script.add(200, {}, headers={"X-Request-Id": "r-log"})
    with caplog.at_level(logging.INFO, logger="prolific_ingest.client"):
        make(url)[0].get_json("x")
    assert "(authenticated=True, request id r-log)" in caplog.text


def test_emulator_answers_carry_request_ids_that_reach_the_error(
    prolific_emulator: Emulator,
) -> None:
    emu = prolific_emulator
    client = ProlificClient(token=emu.token, base_url=emu.base_url, retry=RetryPolicy.none())
    batch = emu.add_batch(seed=3, n_submissions=1)
    client.get_json(f"batches/{batch}")
    with pytest.raises(NotFoundError) as info:
        client.get_json("batches/no-such-batch")
    first, second = logged(emu, 2)
    assert first.request_id is not None and first.request_id.startswith("emu-req-")
    assert second.request_id is not None and second.request_id != first.request_id
    assert info.value.request_id == second.request_id
    assert f"[request id {second.request_id}]" in str(info.value)


def test_export_limit_keeps_the_request_id(prolific_emulator: Emulator) -> None:
    emu = prolific_emulator
    client = ProlificClient(token=emu.token, base_url=emu.base_url)
    ref = ExportRef("batch", emu.add_batch(seed=4, n_submissions=1))
    for i in range(10):
        request_export(client, ref, ExportFilter(study_id=f"S{i}"))
    emu.clear_requests()
    with pytest.raises(ExportLimitError) as info:
        request_export(client, ref, ExportFilter(study_id="S10"))
    refused = [r for r in logged(emu, 2) if r.status == 409]
    assert len(refused) == 1
    assert info.value.request_id == refused[0].request_id
    assert len(info.value.existing_jobs) == 10


# -- retries --------------------------------------------------------------------------------


def test_429_retry_after_seconds_is_slept(stub: tuple[str, Script]) -> None:
    url, script = stub
    script.add(429, ENVELOPE, headers={"Retry-After": "2"})
    script.add(200, {"ok": 1})
    client, clock = make(url)
    assert client.get_json("x") == {"ok": 1}
    assert clock.sleeps == [2.0]
    assert len(script.seen) == 2


def test_429_retry_after_http_date(stub: tuple[str, Script]) -> None:
    url, script = stub
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    script.add(429, {}, headers={"Retry-After": when})
    script.add(200, {"ok": 1})
    client, clock = make(url)
    assert client.get_json("x") == {"ok": 1}
    assert len(clock.sleeps) == 1
    assert 0.0 < clock.sleeps[0] <= 3.0


def test_429_without_retry_after_backs_off(stub: tuple[str, Script]) -> None:
    url, script = stub
    script.add(429, {}, times=2)
    script.add(200, {"ok": 1})
    client, clock = make(url, retry=RetryPolicy(jitter="none"))
    assert client.get_json("x") == {"ok": 1}
    assert clock.sleeps == [0.5, 1.0]


def test_429_exhausted_raises_with_retry_after(stub: tuple[str, Script]) -> None:
    url, script = stub
    script.add(429, {}, headers={"Retry-After": "1"}, times=3)
    client, clock = make(url, retry=RetryPolicy(max_attempts=3))
    with pytest.raises(RateLimitedError) as info:
        client.get_json("x")
    assert info.value.retry_after == 1.0
    assert clock.sleeps == [1.0, 1.0]
    assert len(script.seen) == 3


def test_5xx_retried_then_succeeds(stub: tuple[str, Script]) -> None:
    url, script = stub
    script.add(503, {})
    script.add(500, {})
    script.add(200, {"ok": 1})
    client, clock = make(url)
    assert client.get_json("x") == {"ok": 1}
    assert len(clock.sleeps) == 2
    assert len(script.seen) == 3


def test_5xx_gives_up_at_max_elapsed(stub: tuple[str, Script]) -> None:
    url, script = stub
    script.add(503, {}, headers={"Retry-After": "30"}, times=10)
    client, clock = make(url, retry=RetryPolicy(max_attempts=10, max_elapsed=45.0))
    with pytest.raises(ServerError):
        client.get_json("x")
    assert clock.sleeps == [30.0]  # a second 30 s wait would pass the 45 s budget


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_other_4xx_never_retried(stub: tuple[str, Script], status: int) -> None:
    url, script = stub
    script.add(status, {}, times=3)
    client, clock = make(url)
    with pytest.raises(APIError):
        client.request("DELETE", "x", expect=(204,))
    assert len(script.seen) == 1
    assert clock.sleeps == []


def test_dropped_connection_is_retried(stub: tuple[str, Script]) -> None:
    url, script = stub
    script.responses.append(DROP)
    script.add(200, {"ok": 1})
    client, clock = make(url)
    assert client.get_json("x") == {"ok": 1}
    assert len(clock.sleeps) == 1
    assert len(script.seen) == 2


def test_dropped_connections_exhaust_into_transport_error(stub: tuple[str, Script]) -> None:
    url, script = stub
    script.responses.extend([DROP] * 3)
    client, clock = make(url, retry=RetryPolicy(max_attempts=3))
    with pytest.raises(TransportError, match="3 attempt") as info:
        client.get_json("x")
    assert isinstance(info.value, ConnectionError)
    assert isinstance(info.value.__cause__, requests.ConnectionError)
    assert len(clock.sleeps) == 2


def test_read_timeout_is_retried() -> None:
    # a listening socket that never answers: read timeout
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        port = silent.getsockname()[1]
        clock = FakeClock(start=1000.0)
        settings = Settings(base_url=f"http://127.0.0.1:{port}", read_timeout=0.2)
        client = ProlificClient(
            settings,
            token=TOKEN,
            retry=RetryPolicy(max_attempts=2),
            sleep=clock.sleep,
            clock=clock,
        )
        with pytest.raises(TransportError) as info:
            client.get_json("x")
        assert isinstance(info.value.__cause__, requests.ReadTimeout)
        assert len(clock.sleeps) == 1
    finally:
        silent.close()


class _LateWatchdog(Watchdog):
    """A watchdog that wakes long after its limit: the socket timeout always fires first."""

    def __init__(self, *, timeout: float | None = None, **kw: Any) -> None:
        super().__init__(timeout=None if timeout is None else timeout * 20, **kw)


def test_a_socket_timeout_at_the_deadline_is_reported_as_the_deadline(
    prolific_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The socket's read timeout is cut down to the time left; when it fires before the
    watchdog (a loaded machine), the call still ends as past its deadline, not retried."""
    emu = prolific_emulator
    batch = emu.add_batch(seed=5, n_submissions=1)
    rule = emu.faults.drip(bytes_per_second=1, host="api")
    monkeypatch.setattr(client_module, "Watchdog", _LateWatchdog)
    settings = Settings(base_url=emu.base_url, token=Secret(emu.token), request_timeout=60.0)
    client = ProlificClient(settings)
    with pytest.raises(TransportError, match=r"\(the deadline\) after 1 attempt") as info:
        client.get_json(f"batches/{batch}", timeout=0.5)
    assert isinstance(info.value.__cause__, requests.Timeout)
    assert rule.triggered == 1
