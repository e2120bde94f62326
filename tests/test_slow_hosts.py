"""Time limits against hosts that drip bytes: every load ends, with a typed error.

Socket timeouts apply to each read, so a host that sends one byte a second never trips
them. These tests drive the real client against the emulator's ``drip`` fault over real
sockets, with limits of a second or two; pytest-timeout guards each test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from prolific_ingest import (
    ConfigurationError,
    DownloadError,
    ExportRef,
    ExportTimeoutError,
    ProlificClient,
    RetryPolicy,
    Settings,
    TransportError,
    load_batch_export,
    request_export,
)
from prolific_ingest.testing import Emulator
from tests._truth import assert_matches_truth

pytestmark = pytest.mark.timeout(120)

FAST_RETRY = RetryPolicy(max_attempts=3, backoff_base=0.001, backoff_max=0.01, max_elapsed=60)


def _client(emu: Emulator, **settings: Any) -> ProlificClient:
    base = Settings(base_url=emu.base_url, poll_interval=0.01).replace(**settings)
    return ProlificClient(base, token=emu.token, retry=FAST_RETRY)


def _downloads(emu: Emulator) -> list[Any]:
    return [r for r in emu.requests if r.host == "download" and r.method == "GET"]


def _committed(cache: Path) -> list[Path]:
    return sorted(cache.rglob("manifest.json"))


@pytest.mark.parametrize(
    "after_bytes", [0, 30, 2_000], ids=["status-dripped", "headers-dripped", "body-dripped"]
)
def test_a_download_that_never_progresses_ends_with_download_error(
    prolific_emulator: Emulator, tmp_path: Path, after_bytes: int
) -> None:
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=11, n_submissions=20)
    emu.faults.drip(bytes_per_second=2, host="download", after_bytes=after_bytes)
    client = _client(emu, stall_timeout=1.0, stall_min_rate=10_000)
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="stalled") as info:
        load_batch_export(batch_id, client=client, cache=str(cache), progress=False)
    assert "PROLIFIC_STALL_TIMEOUT" in str(info.value)
    assert len(_downloads(emu)) == FAST_RETRY.max_attempts  # the retry budget, then the error
    assert _committed(cache) == []
    leftovers = [p for p in cache.rglob("*") if p.is_file() and ".lock" not in p.name]
    assert leftovers == []


def test_a_stalled_download_is_resumed_with_range_and_completes(
    prolific_emulator: Emulator, tmp_path: Path
) -> None:
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=12, n_submissions=40)
    emu.faults.drip(bytes_per_second=50, host="download", after_bytes=30_000, times=1)
    client = _client(emu, stall_timeout=1.0, stall_min_rate=10_000)
    exp = load_batch_export(batch_id, client=client, cache=str(tmp_path / "c"), progress=False)
    assert_matches_truth(exp.arrow.tables, emu.ground_truth(batch_id))
    gets = _downloads(emu)
    assert len(gets) == 2
    resumed = {k.lower(): v for k, v in gets[1].headers.items()}.get("range", "")
    assert resumed.startswith("bytes=") and resumed != "bytes=0-"


def test_a_dripped_status_reply_ends_at_the_wait_deadline(
    prolific_emulator: Emulator, tmp_path: Path
) -> None:
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=13, n_submissions=3)
    emu.faults.drip(bytes_per_second=1, host="api", path_contains="/export/")
    # request_timeout stays 60 s: the wait's own deadline cuts the poll
    client = _client(emu, wait_timeout=1.5)
    with pytest.raises(ExportTimeoutError) as info:
        load_batch_export(batch_id, client=client, cache=str(tmp_path / "c"), progress=False)
    assert info.value.export_id
    assert "deadline" in str(info.value)


def test_an_api_host_that_drips_ends_with_transport_error(prolific_emulator: Emulator) -> None:
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=14, n_submissions=2)
    rule = emu.faults.drip(bytes_per_second=1, host="api")
    client = _client(emu, request_timeout=1.0)
    with pytest.raises(TransportError, match="request_timeout") as info:
        request_export(client, ExportRef("batch", batch_id))
    assert "attempt" in str(info.value)
    assert rule.triggered == FAST_RETRY.max_attempts


def test_a_fast_host_is_not_mistaken_for_a_stall(
    prolific_emulator: Emulator, tmp_path: Path
) -> None:
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=15, n_submissions=10)
    client = _client(emu, stall_timeout=0.5, stall_min_rate=1.0, request_timeout=30.0)
    exp = load_batch_export(batch_id, client=client, cache=str(tmp_path / "c"), progress=False)
    assert_matches_truth(exp.arrow.tables, emu.ground_truth(batch_id))
    assert len(_downloads(emu)) == 1


def test_time_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROLIFIC_REQUEST_TIMEOUT", "7.5")
    monkeypatch.setenv("PROLIFIC_STALL_TIMEOUT", "12")
    monkeypatch.setenv("PROLIFIC_STALL_MIN_RATE", "256")
    monkeypatch.setenv("PROLIFIC_CONNECT_TIMEOUT", "3")
    monkeypatch.setenv("PROLIFIC_READ_TIMEOUT", "4")
    monkeypatch.setenv("PROLIFIC_WAIT_TIMEOUT", "90")
    s = Settings.from_env()
    assert (s.request_timeout, s.stall_timeout, s.stall_min_rate) == (7.5, 12.0, 256.0)
    assert (s.connect_timeout, s.read_timeout, s.wait_timeout) == (3.0, 4.0, 90.0)
    assert Settings.from_env(request_timeout=2.0).request_timeout == 2.0  # argument wins


def test_default_time_limits_end_a_hopeless_load_within_five_minutes() -> None:
    s = Settings()
    assert s.stall_timeout <= 60 and s.stall_min_rate > 0
    policy = RetryPolicy()
    # every attempt ends within request_timeout (API) or stall_timeout (download); no retry
    # starts after max_elapsed, so a host that never progresses fails before this bound
    worst = policy.max_elapsed + max(s.request_timeout, s.stall_timeout) + policy.backoff_max
    assert worst <= 300


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PROLIFIC_STALL_TIMEOUT", "soon"),
        ("PROLIFIC_REQUEST_TIMEOUT", "0"),
        ("PROLIFIC_READ_TIMEOUT", "nan"),
    ],
)
def test_bad_time_limits_in_the_environment_are_configuration_errors(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=variable):
        Settings.from_env()


def test_a_stalled_tls_download_is_abandoned_too(tmp_path: Path) -> None:
    pytest.importorskip("trustme")
    with Emulator(tls=True, polls_until_complete=0) as emu:
        batch_id = emu.add_batch(seed=16, n_submissions=10)
        emu.faults.drip(bytes_per_second=2, host="download", after_bytes=1_000)
        client = _client(emu, stall_timeout=1.0, stall_min_rate=10_000, ca_bundle=emu.ca_bundle)
        with pytest.raises(DownloadError, match="stalled"):
            load_batch_export(batch_id, client=client, cache=str(tmp_path / "c"), progress=False)
        assert len(_downloads(emu)) == FAST_RETRY.max_attempts


def test_a_call_given_a_deadline_is_not_retried_past_it(prolific_emulator: Emulator) -> None:
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=17, n_submissions=2)
    rule = emu.faults.drip(bytes_per_second=1, host="api")
    client = _client(emu)  # request_timeout 60 s: the call's own deadline ends it
    with pytest.raises(TransportError, match="the deadline"):
        client.get_json(f"batches/{batch_id}", timeout=1.0)
    assert rule.triggered == 1


def test_a_reply_cut_mid_headers_is_not_taken_for_a_whole_one(prolific_emulator: Emulator) -> None:
    emu = prolific_emulator
    batch_id = emu.add_batch(seed=18, n_submissions=2)
    # the status line arrives at once, the headers drip: cut there, http.client would
    # take the end of the stream for the end of the headers and an empty body
    rule = emu.faults.drip(bytes_per_second=1, host="api", after_bytes=30)
    client = _client(emu, request_timeout=1.0)
    with pytest.raises(TransportError, match="request_timeout"):
        request_export(client, ExportRef("batch", batch_id))
    assert rule.triggered == FAST_RETRY.max_attempts
