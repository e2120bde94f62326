"""Retry policy and pure helpers: what to retry, how long to wait, ``Retry-After``.

Nothing here does I/O. :class:`RetryPolicy` is what users pass as ``retry=``;
:class:`RetryState` is the small bookkeeping object the client and the downloader
use to decide, after each failed attempt, whether and how long to wait.

Retry-After choice: a server-given ``Retry-After`` replaces the computed back-off
(it is not jittered) but is capped at ``backoff_max``; if waiting would exceed the
``max_elapsed`` budget, retrying stops and the error is raised.

Why not ``urllib3.util.Retry``: it has no total time budget (``max_elapsed``), it retries
only inside one ``urlopen`` call (not a body that breaks while streaming, a stalled
download resumed with ``Range``, or a corrupt archive fetched again), and it cannot share
one budget across those; this module is that shared budget, and it stays pure.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

import requests

from ..errors import APIError, TransportError

__all__ = [
    "RetryPolicy",
    "RetryState",
    "backoff_delays",
    "compute_delay",
    "is_retriable",
    "parse_retry_after",
]

Jitter = Literal["full", "equal", "none"]

#: Low-level exceptions that mean "the connection failed or the response was lost".
TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    TransportError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """How failed requests are retried.

    Parameters
    ----------
    max_attempts : int
        Total attempts including the first one (1 = no retries).
    backoff_base : float
        Ceiling of the first back-off delay, in seconds; it doubles per retry.
    backoff_max : float
        Largest single delay, also the cap applied to a server's ``Retry-After``.
    max_elapsed : float
        Total time budget in seconds; no retry is started that would end after it.
    jitter : {"full", "equal", "none"}
        ``"full"``: uniform in ``[0, ceiling]``; ``"equal"``: ``ceiling/2`` plus
        uniform in ``[0, ceiling/2]``; ``"none"``: exactly the ceiling.
    retry_statuses : tuple of int
        HTTP statuses that are retried. Other 4xx statuses are never retried.
    """

    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_elapsed: float = 120.0
    jitter: Jitter = "full"
    retry_statuses: tuple[int, ...] = (429, 500, 502, 503, 504)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            msg = "RetryPolicy.max_attempts must be at least 1"
            raise ValueError(msg)
        if self.backoff_base < 0 or self.backoff_max < 0 or self.max_elapsed < 0:
            msg = "RetryPolicy delays must not be negative"
            raise ValueError(msg)
        if self.jitter not in ("full", "equal", "none"):
            msg = f"RetryPolicy.jitter must be 'full', 'equal' or 'none', not {self.jitter!r}"
            raise ValueError(msg)

    @classmethod
    def none(cls) -> RetryPolicy:
        """Return a policy that never retries."""
        return cls(max_attempts=1)


def is_retriable(exc_or_status: BaseException | int, policy: RetryPolicy | None = None) -> bool:
    """Tell whether a status code or exception is worth retrying.

    Parameters
    ----------
    exc_or_status : BaseException or int
        An HTTP status, a ``requests`` exception or a prolific_ingest error.
    policy : RetryPolicy, optional
        Supplies ``retry_statuses`` (default policy otherwise).

    Returns
    -------
    bool
        ``True`` for the policy's retry statuses (429, 5xx), connection errors and
        timeouts; ``False`` for every other 4xx and any other exception.
    """
    statuses = (policy or RetryPolicy()).retry_statuses
    if isinstance(exc_or_status, bool):
        return False
    if isinstance(exc_or_status, int):
        return exc_or_status in statuses
    if isinstance(exc_or_status, APIError):
        return exc_or_status.status in statuses
    return isinstance(exc_or_status, TRANSIENT_EXCEPTIONS)


def compute_delay(attempt: int, policy: RetryPolicy, rng: random.Random | None = None) -> float:
    """Return the back-off delay before retry number ``attempt`` (1-based).

    The ceiling is ``min(backoff_max, backoff_base * 2 ** (attempt - 1))``; the
    policy's jitter is then applied.
    """
    if attempt < 1:
        msg = "attempt is 1-based"
        raise ValueError(msg)
    exponent = min(attempt - 1, 64)  # avoid float overflow for absurd attempt counts
    ceiling = min(policy.backoff_max, policy.backoff_base * math.pow(2.0, exponent))
    if policy.jitter == "none":
        return ceiling
    r = rng or random
    if policy.jitter == "equal":
        return ceiling / 2 + r.uniform(0.0, ceiling / 2)
    return r.uniform(0.0, ceiling)


def backoff_delays(policy: RetryPolicy, rng: random.Random | None = None) -> Iterator[float]:
    """Yield the ``max_attempts - 1`` delays between attempts (ignoring ``max_elapsed``)."""
    for attempt in range(1, policy.max_attempts):
        yield compute_delay(attempt, policy, rng)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Parse a ``Retry-After`` header into seconds from ``now``.

    Parameters
    ----------
    value : str or None
        Either delta-seconds (``"2"``, ``"1.5"``) or an HTTP date
        (``"Wed, 21 Oct 2026 07:28:00 GMT"``).
    now : datetime, optional
        Aware "current time" for HTTP dates (default: ``datetime.now(UTC)``).

    Returns
    -------
    float or None
        Seconds to wait (never negative), or ``None`` when absent or unparseable.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isnan(seconds) or math.isinf(seconds):
            return None
        return max(0.0, seconds)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    if current.tzinfo is None:
        current = current.replace(tzinfo=UTC)
    return max(0.0, (when - current).total_seconds())


class RetryState:
    """Per-operation retry bookkeeping (attempts made, time spent).

    Parameters
    ----------
    policy : RetryPolicy
        The policy to apply.
    sleep, clock : callable
        Injectable ``time.sleep`` and ``time.monotonic``.
    rng : random.Random, optional
        Source of jitter.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        sleep: Callable[[float], object] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self.attempts = 1
        self._start = clock()

    def reset(self) -> None:
        """Forget past failures (e.g. after a download made progress)."""
        self.attempts = 1
        self._start = self._clock()

    @property
    def elapsed(self) -> float:
        """Seconds since the first attempt (or the last :meth:`reset`)."""
        return self._clock() - self._start

    def next_delay(self, retry_after: float | None = None) -> float | None:
        """Return how long to wait before the next attempt, or ``None`` to give up.

        ``retry_after`` (seconds, from the server) replaces the computed back-off,
        capped at ``backoff_max``.
        """
        if self.attempts >= self.policy.max_attempts:
            return None
        if retry_after is not None:
            delay = min(max(0.0, retry_after), self.policy.backoff_max)
        else:
            delay = compute_delay(self.attempts, self.policy, self._rng)
        if self.elapsed + delay > self.policy.max_elapsed:
            return None
        return delay

    def wait(self, delay: float) -> None:
        """Sleep ``delay`` seconds and count one more attempt."""
        self.attempts += 1
        if delay > 0:
            self._sleep(delay)
