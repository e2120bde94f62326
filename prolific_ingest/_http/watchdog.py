"""A watchdog that ends an HTTP exchange at a deadline or when it stalls.

Socket timeouts (``requests``' ``timeout=``) apply to each socket operation, so a host
that drips one byte per second never trips them: neither while it sends the status
line and headers nor while it sends the body. :class:`Watchdog` bounds the exchange as
a whole. It runs one small thread per guarded exchange that, when the deadline passes
or the transfer makes too little progress, shuts the connection's socket down; the
blocked read in the calling thread then fails at once, and the caller reads
:attr:`Watchdog.reason` to raise the right typed error.

Connections are found through :class:`GuardedAdapter` (mounted on the sessions this
package creates): every connection taken from its pools while a watchdog is active
in the calling context is attached to it. :meth:`Watchdog.attach_response` covers a
session of the caller's own, from the moment the headers are in.
"""

from __future__ import annotations

import contextlib
import contextvars
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

__all__ = ["GuardedAdapter", "StallRule", "Watchdog", "guarded_session"]

Reason = Literal["deadline", "stall"]

_ACTIVE: contextvars.ContextVar[Watchdog | None] = contextvars.ContextVar(
    "prolific_ingest_watchdog", default=None
)


@dataclass(frozen=True)
class StallRule:
    """ "Stalled": fewer than ``min_rate * window`` bytes arrived in the last ``window`` s.

    Parameters
    ----------
    window : float
        Seconds over which progress is measured (the first check is ``window`` seconds
        after the exchange starts, so slow headers count as no progress).
    min_rate : float
        Minimum average throughput over the window, in bytes per second.
    """

    window: float
    min_rate: float

    def __post_init__(self) -> None:
        if self.window <= 0 or self.min_rate < 0:
            msg = "a stall rule needs window > 0 and min_rate >= 0"
            raise ValueError(msg)

    def describe(self) -> str:
        """Human wording, e.g. ``"fewer than 1024 bytes/s over 60 s"``."""
        return f"fewer than {self.min_rate:g} bytes/s over {self.window:g} s"


class Watchdog:
    """Ends an exchange at ``timeout`` seconds from now, or when ``stall`` says so.

    Use as a context manager around the request and the reading of its body; report
    body bytes with :meth:`progress`. After an abort :attr:`reason` is ``"deadline"``
    or ``"stall"`` (``None`` otherwise).
    """

    def __init__(self, *, timeout: float | None = None, stall: StallRule | None = None) -> None:
        self.timeout = timeout
        self.stall = stall
        self.reason: Reason | None = None
        self._received = 0
        self._conns: list[Any] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._token: contextvars.Token[Watchdog | None] | None = None
        self._start = time.monotonic()

    # -- the calling thread ---------------------------------------------------------------

    def __enter__(self) -> Self:
        self._start = time.monotonic()
        self._token = _ACTIVE.set(self)
        if self.timeout is not None or self.stall is not None:
            self._thread = threading.Thread(
                target=self._watch, name="prolific-ingest-watchdog", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            self._done.set()
            self._conns.clear()
        if self._token is not None:
            _ACTIVE.reset(self._token)
            self._token = None
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def progress(self, nbytes: int) -> None:
        """Count ``nbytes`` of body received."""
        self._received += nbytes

    def attach(self, conn: Any) -> None:
        """Watch an urllib3 connection (its socket is shut down on abort)."""
        with self._lock:
            if not self._done.is_set():
                self._conns.append(conn)
        if self.reason is not None:
            self._abort()

    def attach_response(self, resp: requests.Response) -> None:
        """Watch the connection a streamed ``requests`` response is read from."""
        conn = getattr(resp.raw, "connection", None)
        if conn is not None:
            self.attach(conn)

    @property
    def elapsed(self) -> float:
        """Seconds since the exchange started."""
        return time.monotonic() - self._start

    # -- the watchdog thread --------------------------------------------------------------

    def _tick(self) -> float:
        tick = 0.5
        if self.stall is not None:
            tick = min(tick, self.stall.window / 4)
        if self.timeout is not None:
            tick = min(tick, max(self.timeout / 4, 0.01))
        return max(tick, 0.01)

    def _watch(self) -> None:
        tick = self._tick()
        samples: deque[tuple[float, int]] = deque([(self._start, 0)])
        while not self._done.wait(tick):
            now = time.monotonic()
            if self.reason is None:
                self.reason = self._verdict(now, samples)
            if self.reason is not None:
                self._abort()

    def _verdict(self, now: float, samples: deque[tuple[float, int]]) -> Reason | None:
        if self.timeout is not None and now - self._start >= self.timeout:
            return "deadline"
        rule = self.stall
        if rule is None:
            return None
        received = self._received
        samples.append((now, received))
        # the newest sample at least one window old is the baseline
        while len(samples) > 1 and now - samples[1][0] >= rule.window:
            samples.popleft()
        base_time, base_bytes = samples[0]
        if now - base_time < rule.window:
            return None
        if received - base_bytes < rule.min_rate * rule.window:
            return "stall"
        return None

    def _abort(self) -> None:
        with self._lock:
            if self._done.is_set():
                return
            conns = list(self._conns)
        for conn in conns:
            sock = getattr(conn, "sock", None)
            if isinstance(sock, socket.socket):
                # socket.socket.shutdown, not SSLSocket.shutdown: wake the blocked read
                # in the other thread without touching the TLS object it is using.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _attach_active(conn: Any) -> None:
    dog = _ACTIVE.get()
    if dog is not None:
        dog.attach(conn)


class _GuardedHTTPPool(HTTPConnectionPool):
    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)
        _attach_active(conn)
        return conn


class _GuardedHTTPSPool(HTTPSConnectionPool):
    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)
        _attach_active(conn)
        return conn


class GuardedAdapter(HTTPAdapter):
    """A ``requests`` adapter whose connections an active :class:`Watchdog` can end.

    Proxied requests use urllib3's proxy manager and are watched from the moment
    their headers are in (:meth:`Watchdog.attach_response`).
    """

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """Create the pool manager with watched connection pools."""
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _GuardedHTTPPool,
            "https": _GuardedHTTPSPool,
        }


def guarded_session() -> requests.Session:
    """Return a new ``requests.Session`` with :class:`GuardedAdapter` mounted."""
    session = requests.Session()
    adapter = GuardedAdapter()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
