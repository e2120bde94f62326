"""The emulator's fault rules themselves: how they match, count, clear and pace; and TLS.

Over real loopback sockets, with raw requests. Each fault's effect on a load, beside what it
puts on the wire, is in ``test_faults.py``.
"""

from __future__ import annotations

import hashlib

import pytest
import requests

from prolific_ingest.testing import Emulator, Faults
from tests._helpers import PREFIX, auth_header, complete_url, post_export


@pytest.fixture
def emu(prolific_emulator: Emulator) -> Emulator:
    prolific_emulator.polls_until_complete = 0
    return prolific_emulator


@pytest.fixture
def batch(emu: Emulator) -> str:
    return emu.add_batch(seed=11, n_submissions=6)


def test_unlimited_rule_and_clear(emu: Emulator, batch: str) -> None:
    rule = emu.faults.server_error(times=None)
    assert [post_export(emu, batch).status_code for _ in range(3)] == [503, 503, 503]
    assert rule.remaining is None
    assert rule.triggered == 3
    emu.faults.clear()
    assert post_export(emu, batch).status_code == 202


def test_latency_is_counted(emu: Emulator, batch: str) -> None:
    api = emu.faults.latency(0.01, times=2)
    download = emu.faults.latency(0.01, times=1, host="download")
    _, url = complete_url(emu, batch)
    assert requests.get(url, timeout=10).status_code == 200
    assert api.triggered == 2
    assert download.triggered == 1
    with pytest.raises(ValueError, match="host"):
        emu.faults.latency(1, host="elsewhere")


def test_bandwidth_cap(emu: Emulator, batch: str) -> None:
    _, url = complete_url(emu, batch)
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
        _, url = complete_url(emu, batch)
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
    _, url = complete_url(emu, batch)
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
    r = requests.get(
        f"{emu.base_url}{PREFIX}/batches/{batch}?k=v", headers=auth_header(emu), timeout=30
    )
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
    _, url = complete_url(emu, batch)
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
