"""Pure tests of the retry policy, back-off schedule and Retry-After parsing (no sockets)."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests

from prolific_ingest._http.retry import (
    RetryPolicy,
    RetryState,
    backoff_delays,
    compute_delay,
    is_retriable,
    parse_retry_after,
)
from prolific_ingest._urls import is_loopback_host
from prolific_ingest.errors import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    RateLimitedError,
    ServerError,
)
from tests._helpers import FakeClock


def test_policy_defaults_and_frozen() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.backoff_base, policy.backoff_max) == (5, 0.5, 30.0)
    assert policy.max_elapsed == 120.0
    assert policy.jitter == "full"
    assert policy.retry_statuses == (429, 500, 502, 503, 504)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_attempts = 3  # type: ignore[misc]


def test_policy_none_never_retries() -> None:
    policy = RetryPolicy.none()
    assert policy.max_attempts == 1
    assert list(backoff_delays(policy)) == []
    assert RetryState(policy).next_delay() is None


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"backoff_base": -1.0}, {"max_elapsed": -1.0}, {"jitter": "weird"}],
)
def test_policy_rejects_invalid_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_retriable_statuses(status: int) -> None:
    assert is_retriable(status)


@pytest.mark.parametrize("status", [200, 400, 401, 403, 404, 405, 409, 422, 501])
def test_non_retriable_statuses(status: int) -> None:
    assert not is_retriable(status)


def test_custom_policy_statuses() -> None:
    assert is_retriable(501, RetryPolicy(retry_statuses=(501,)))
    assert not is_retriable(503, RetryPolicy(retry_statuses=(501,)))


@pytest.mark.parametrize(
    "exc",
    [
        requests.ConnectionError("reset"),
        requests.ConnectTimeout("slow"),
        requests.ReadTimeout("slow"),
        requests.exceptions.ChunkedEncodingError("cut"),
        RateLimitedError("x", status=429),
        ServerError("x", status=503),
    ],
)
def test_retriable_exceptions(exc: BaseException) -> None:
    assert is_retriable(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("no"),
        BadRequestError("x", status=400),
        AuthenticationError("x", status=401),
        NotFoundError("x", status=404),
        requests.exceptions.InvalidURL("bad"),
    ],
)
def test_non_retriable_exceptions(exc: BaseException) -> None:
    assert not is_retriable(exc)


def test_bool_is_not_a_status() -> None:
    assert not is_retriable(True)


def test_exponential_ceiling_without_jitter() -> None:
    policy = RetryPolicy(jitter="none", backoff_base=0.5, backoff_max=3.0, max_attempts=7)
    assert [compute_delay(a, policy) for a in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert list(backoff_delays(policy)) == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_full_jitter_stays_under_ceiling_and_varies() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_max=8.0)
    rng = random.Random(1234)
    delays = [compute_delay(4, policy, rng) for _ in range(200)]
    assert all(0.0 <= d <= 8.0 for d in delays)
    assert len(set(delays)) > 100  # really random
    assert min(delays) < 2.0
    assert max(delays) > 6.0


def test_equal_jitter_keeps_half_the_ceiling() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_max=8.0, jitter="equal")
    rng = random.Random(5)
    delays = [compute_delay(3, policy, rng) for _ in range(200)]
    assert all(2.0 <= d <= 4.0 for d in delays)


def test_seeded_rng_is_reproducible() -> None:
    policy = RetryPolicy()
    assert list(backoff_delays(policy, random.Random(7))) == list(
        backoff_delays(policy, random.Random(7))
    )


def test_huge_attempt_number_does_not_overflow() -> None:
    assert compute_delay(10_000, RetryPolicy(jitter="none")) == 30.0


def test_attempt_is_one_based() -> None:
    with pytest.raises(ValueError, match="1-based"):
        compute_delay(0, RetryPolicy())


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2", 2.0), (" 3 ", 3.0), ("1.5", 1.5), ("0", 0.0), ("-4", 0.0)],
)
def test_retry_after_seconds(value: str, expected: float) -> None:
    assert parse_retry_after(value) == expected


@pytest.mark.parametrize("value", [None, "", "soon", "nan", "inf", "Mon, 99 Foo"])
def test_retry_after_unparseable(value: str | None) -> None:
    assert parse_retry_after(value) is None


def test_retry_after_http_date() -> None:
    now = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=42), usegmt=True)
    assert parse_retry_after(header, now) == 42.0
    assert parse_retry_after(format_datetime(now - timedelta(hours=1), usegmt=True), now) == 0.0


def test_retry_after_http_date_with_naive_now() -> None:
    now = datetime(2026, 11, 1, 12, 0, 0)
    assert parse_retry_after("Sun, 01 Nov 2026 12:00:10 GMT", now) == 10.0


def test_state_gives_up_after_max_attempts() -> None:
    clock = FakeClock()
    state = RetryState(RetryPolicy(max_attempts=3, jitter="none"), sleep=clock.sleep, clock=clock)
    delays = []
    while (delay := state.next_delay()) is not None:
        delays.append(delay)
        state.wait(delay)
    assert delays == [0.5, 1.0]
    assert clock.sleeps == [0.5, 1.0]
    assert state.attempts == 3


def test_state_honours_retry_after_capped_by_backoff_max() -> None:
    clock = FakeClock()
    state = RetryState(RetryPolicy(backoff_max=5.0), sleep=clock.sleep, clock=clock)
    assert state.next_delay(2.0) == 2.0
    assert state.next_delay(120.0) == 5.0
    assert state.next_delay(-3.0) == 0.0


def test_state_stops_at_max_elapsed() -> None:
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=100, jitter="none", backoff_base=4.0, max_elapsed=10.0)
    state = RetryState(policy, sleep=clock.sleep, clock=clock)
    while (delay := state.next_delay()) is not None:
        state.wait(delay)
    assert clock.sleeps == [4.0]  # 4 + 8 would exceed the 10 s budget
    assert clock.now <= 10.0


def test_state_reset_restores_budget() -> None:
    clock = FakeClock()
    state = RetryState(RetryPolicy(max_attempts=2, jitter="none"), sleep=clock.sleep, clock=clock)
    state.wait(state.next_delay() or 0.0)
    assert state.next_delay() is None
    state.reset()
    assert state.next_delay() == 0.5
    assert state.elapsed == 0.0


def test_wait_of_zero_does_not_sleep() -> None:
    clock = FakeClock()
    state = RetryState(RetryPolicy(), sleep=clock.sleep, clock=clock)
    state.wait(0.0)
    assert clock.sleeps == []
    assert state.attempts == 2


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.5.6.7", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("api.prolific.com", False),
        ("10.0.0.1", False),
        ("128.0.0.1", False),
        ("", False),
        (None, False),
    ],
)
def test_loopback_hosts(host: str | None, expected: bool) -> None:
    assert is_loopback_host(host) is expected
