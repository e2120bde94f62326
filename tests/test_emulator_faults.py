"""Fault injection and TLS of the emulator, over real loopback sockets."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import requests

from prolific_ingest.testing import Emulator, Faults

PREFIX = "/api/v1/data-collection"


def _auth(emu: Emulator) -> dict[str, str]:
    return {"Authorization": f"Token {emu.token}"}


def _export_url(emu: Emulator, batch: str, *parts: str) -> str:
    return "/".join([f"{emu.base_url}{PREFIX}/batches/{batch}/export", *parts])


def _post(emu: Emulator, batch: str) -> requests.Response:
    return requests.post(_export_url(emu, batch), headers=_auth(emu), timeout=30)


def _poll(emu: Emulator, batch: str, export_id: str) -> dict[str, Any]:
    r = requests.get(_export_url(emu, batch, export_id), headers=_auth(emu), timeout=30)
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    return body


def _complete_url(emu: Emulator, batch: str) -> tuple[str, str]:
    export_id = _post(emu, batch).json()["export_id"]
    body = _poll(emu, batch, export_id)
    assert body["status"] == "complete"
    return export_id, body["url"]


@pytest.fixture
def emu(prolific_emulator: Emulator) -> Emulator:
    prolific_emulator.polls_until_complete = 0
    return prolific_emulator


@pytest.fixture
def batch(emu: Emulator) -> str:
    return emu.add_batch(seed=11, n_submissions=6)


def test_rate_limit_with_and_without_retry_after(emu: Emulator, batch: str) -> None:
    with_header = emu.faults.rate_limit(times=1, retry_after=2)
    without = emu.faults.rate_limit(times=1)
    first, second, third = (_post(emu, batch) for _ in range(3))
    assert first.status_code == 429
    assert first.headers["Retry-After"] == "2"
    assert first.json()["error"]["status"] == 429
    assert second.status_code == 429
    assert "Retry-After" not in second.headers
    assert third.status_code == 202
    assert (with_header.triggered, with_header.remaining) == (1, 0)
    assert (without.triggered, without.remaining) == (1, 0)
    assert len(emu.jobs(batch)) == 1  # refused requests did not create jobs


def test_rate_limit_http_date_and_fraction(emu: Emulator, batch: str) -> None:
    emu.faults.rate_limit(retry_after="Wed, 21 Oct 2026 07:28:00 GMT")
    emu.faults.rate_limit(retry_after=0.5)
    assert _post(emu, batch).headers["Retry-After"] == "Wed, 21 Oct 2026 07:28:00 GMT"
    assert _post(emu, batch).headers["Retry-After"] == "0.5"


def test_server_error_filtered_by_method_and_path(emu: Emulator, batch: str) -> None:
    rule = emu.faults.server_error(times=2, status=502, method="GET", path_contains="/export/")
    export_id = _post(emu, batch).json()["export_id"]  # POST is not affected
    url = _export_url(emu, batch, export_id)
    codes = [requests.get(url, headers=_auth(emu), timeout=10).status_code for _ in range(3)]
    assert codes == [502, 502, 200]
    assert rule.triggered == 2
    assert rule.remaining == 0


def test_unlimited_rule_and_clear(emu: Emulator, batch: str) -> None:
    rule = emu.faults.server_error(times=None)
    assert [_post(emu, batch).status_code for _ in range(3)] == [503, 503, 503]
    assert rule.remaining is None
    assert rule.triggered == 3
    emu.faults.clear()
    assert _post(emu, batch).status_code == 202


def test_latency_is_counted(emu: Emulator, batch: str) -> None:
    api = emu.faults.latency(0.01, times=2)
    download = emu.faults.latency(0.01, times=1, host="download")
    _, url = _complete_url(emu, batch)
    assert requests.get(url, timeout=10).status_code == 200
    assert api.triggered == 2
    assert download.triggered == 1
    with pytest.raises(ValueError, match="host"):
        emu.faults.latency(1, host="elsewhere")


def test_drop_api_response_does_not_leak_jobs(emu: Emulator, batch: str) -> None:
    emu.polls_until_complete = 3
    rule = emu.faults.drop_api_response(times=1)
    with pytest.raises(requests.ConnectionError):
        _post(emu, batch)
    assert rule.triggered == 1
    jobs = emu.jobs(batch)
    assert len(jobs) == 1  # the request was processed
    retry = _post(emu, batch)
    assert retry.json()["export_id"] == jobs[0]["export_id"]  # reused, not a second job
    assert len(emu.jobs(batch)) == 1
    assert [r.status for r in emu.requests if r.method == "POST"] == [0, 202]


def test_fail_job(emu: Emulator, batch: str) -> None:
    emu.polls_until_complete = 1
    rule = emu.faults.fail_job()
    export_id = _post(emu, batch).json()["export_id"]
    assert _poll(emu, batch, export_id)["status"] == "generating"
    assert _poll(emu, batch, export_id) == {"status": "failed"}
    assert rule.triggered == 1
    assert emu.jobs(batch)[0]["status"] == "failed"
    second = _post(emu, batch).json()["export_id"]
    _poll(emu, batch, second)
    assert _poll(emu, batch, second)["status"] == "complete"


def test_complete_then_fail(emu: Emulator, batch: str) -> None:
    emu.faults.complete_then_fail()
    export_id = _post(emu, batch).json()["export_id"]
    first = _poll(emu, batch, export_id)
    assert first["status"] == "complete"
    assert _poll(emu, batch, export_id) == {"status": "failed"}
    assert requests.get(first["url"], timeout=10).status_code == 404


def test_expired_url_then_fresh(emu: Emulator, batch: str) -> None:
    rule = emu.faults.expired_url()
    export_id, url = _complete_url(emu, batch)
    refused = requests.get(url, timeout=10)
    assert refused.status_code == 403
    assert "Request has expired" in refused.text
    fresh = _poll(emu, batch, export_id)["url"]
    assert fresh != url
    assert requests.get(fresh, timeout=10).status_code == 200
    assert rule.triggered == 1


def test_download_error(emu: Emulator, batch: str) -> None:
    rule = emu.faults.download_error(status=500, times=1)
    _, url = _complete_url(emu, batch)
    first = requests.get(url, timeout=10)
    assert first.status_code == 500
    assert "<Error>" in first.text
    assert requests.get(url, timeout=10).status_code == 200
    assert rule.triggered == 1


def test_drop_download_part_way(emu: Emulator, batch: str) -> None:
    _, url = _complete_url(emu, batch)
    whole = requests.get(url, timeout=10).content
    rule = emu.faults.drop_download(after_bytes=1000)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url, timeout=10).content  # noqa: B018
    assert rule.triggered == 1
    # a Range request resumes where the drop happened
    rest = requests.get(url, headers={"Range": "bytes=1000-"}, timeout=10)
    assert rest.status_code == 206
    assert whole[:1000] + rest.content == whole


def test_corrupt_download(emu: Emulator, batch: str) -> None:
    _, url = _complete_url(emu, batch)
    good = requests.get(url, timeout=10)
    emu.faults.corrupt_download(offset=123)
    bad = requests.get(url, timeout=10)
    assert bad.status_code == 200
    assert len(bad.content) == len(good.content)
    diff = [i for i, (a, b) in enumerate(zip(good.content, bad.content, strict=True)) if a != b]
    assert diff == [123]
    assert bad.headers["ETag"] == f'"{hashlib.md5(good.content).hexdigest()}"'
    assert hashlib.md5(bad.content).hexdigest() not in bad.headers["ETag"]
    assert requests.get(url, timeout=10).content == good.content


def test_bandwidth_cap(emu: Emulator, batch: str) -> None:
    _, url = _complete_url(emu, batch)
    good = requests.get(url, headers={"Range": "bytes=0-4999"}, timeout=10).content
    rule = emu.faults.bandwidth(1_000_000)
    assert rule is not None
    capped = requests.get(url, headers={"Range": "bytes=0-4999"}, timeout=10)
    assert capped.content == good
    assert rule.triggered == 1
    assert emu.faults.bandwidth(None) is None
    assert all(r.kind != "bandwidth" for r in emu.faults.rules)
    with pytest.raises(ValueError, match="positive"):
        emu.faults.bandwidth(0)


def test_rules_consumed_in_order() -> None:
    faults = Faults()
    a = faults.server_error(times=1, status=500)
    b = faults.rate_limit(times=1)
    assert faults.take(frozenset({"server_error", "rate_limit"}), host="api") is a
    assert faults.take(frozenset({"server_error", "rate_limit"}), host="api") is b
    assert faults.take(frozenset({"server_error", "rate_limit"}), host="api") is None
    with pytest.raises(ValueError, match="times"):
        faults.fail_job(times=-1)


def test_tls_download_host() -> None:
    with Emulator(tls=True, polls_until_complete=0) as emu:
        assert emu.ca_bundle is not None
        assert emu.download_url.startswith("https://localhost:")
        assert emu.base_url.startswith("http://127.0.0.1:")
        batch = emu.add_batch(seed=1, n_submissions=2)
        _, url = _complete_url(emu, batch)
        assert url.startswith("https://localhost:")
        r = requests.get(url, verify=emu.ca_bundle, timeout=10)
        assert r.status_code == 200
        assert r.content[:2] == b"PK"
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(url, timeout=10)
        assert "CA bundle" in emu.describe()


def test_plain_emulator_has_no_ca(emu: Emulator) -> None:
    assert emu.ca_bundle is None
    assert emu.download_url.startswith("http://127.0.0.1:")
    assert emu.download_url != emu.base_url


def test_drip_sends_the_whole_response_slowly_after_the_fast_part(
    emu: Emulator, batch: str
) -> None:
    _, url = _complete_url(emu, batch)
    rule = emu.faults.drip(bytes_per_second=1_000_000, host="download", after_bytes=100, times=1)
    r = requests.get(url, timeout=30)
    assert r.status_code == 200
    assert rule.triggered == 1
    assert hashlib.md5(r.content).hexdigest() == r.headers["ETag"].strip('"')
    assert requests.get(url, timeout=30).status_code == 200  # times=1: the next one is fast
    assert rule.remaining == 0


def test_drip_rejects_bad_settings() -> None:
    faults = Faults()
    with pytest.raises(ValueError, match="host"):
        faults.drip(host="elsewhere")
    with pytest.raises(ValueError, match="positive"):
        faults.drip(bytes_per_second=0)
    with pytest.raises(ValueError, match="positive"):
        faults.drip(after_bytes=-1)


def test_echo_token_repeats_the_callers_secrets(emu: Emulator, batch: str) -> None:
    rule = emu.faults.echo_token(status=410, times=1)
    r = requests.get(f"{emu.base_url}{PREFIX}/batches/{batch}?k=v", headers=_auth(emu), timeout=30)
    assert r.status_code == 410
    error = r.json()["error"]
    assert emu.token in error["title"] and emu.token in error["additional_information"]
    assert "query: k=v" in error["detail"]
    assert emu.token in r.headers["WWW-Authenticate"]
    assert rule.triggered == 1
    with pytest.raises(ValueError, match="4xx or 5xx"):
        emu.faults.echo_token(status=200)


def test_the_emulator_access_log_never_shows_a_query_string(
    emu: Emulator, batch: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="prolific_ingest.testing")
    _, url = _complete_url(emu, batch)
    assert requests.get(url, timeout=30).status_code == 200
    signature = url.partition("?")[2]
    assert signature
    access = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("prolific_ingest.testing") and "HTTP/1.1" in r.getMessage()
    ]
    assert access
    assert all(signature not in line for line in access)
