"""Deterministic, countable fault injection for the emulator.

Each method of :class:`Faults` adds a :class:`FaultRule` and returns it; the rule
counts how often it fired (``triggered``) and how often it may still fire
(``remaining``, ``None`` for "forever"). Rules of the same kind are consumed in the
order they were added.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FaultRule", "Faults"]

API_ERROR_KINDS = frozenset({"rate_limit", "server_error", "echo_token"})
HOSTS = ("api", "download")


@dataclass
class FaultRule:
    """One fault: what it does, where it applies and how often.

    Attributes
    ----------
    kind : str
        ``rate_limit``, ``server_error``, ``latency``, ``drop_download``,
        ``corrupt_download``, ``bandwidth``, ``fail_job``, ``expired_url``,
        ``complete_then_fail``, ``download_error``, ``drop_api_response``, ``drip``
        or ``echo_token``.
    remaining : int or None
        How many more times the rule fires (``None``: unlimited).
    triggered : int
        How many times it has fired.
    params : dict
        Kind-specific settings (``status``, ``retry_after``, ``seconds`` …).
    """

    kind: str
    remaining: int | None
    params: dict[str, Any] = field(default_factory=dict)
    method: str | None = None
    path_contains: str | None = None
    host: str | None = None
    triggered: int = 0

    def _matches(self, host: str | None, method: str | None, path: str | None) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.host is not None and host is not None and self.host != host:
            return False
        if self.method is not None and method is not None and self.method != method.upper():
            return False
        return self.path_contains is None or path is None or self.path_contains in path


class Faults:
    """The fault configuration of one :class:`~prolific_ingest.testing.Emulator`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._bandwidth: FaultRule | None = None

    @property
    def rules(self) -> list[FaultRule]:
        """The rules, in the order they were added."""
        with self._lock:
            return list(self._rules)

    def _add(self, rule: FaultRule) -> FaultRule:
        if rule.remaining is not None and rule.remaining < 0:
            msg = "times must be >= 0 or None"
            raise ValueError(msg)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        """Remove every rule (and the bandwidth cap)."""
        with self._lock:
            self._rules.clear()
            self._bandwidth = None

    def take(
        self,
        kinds: str | frozenset[str],
        *,
        host: str | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> FaultRule | None:
        """Consume and return the first live rule of ``kinds`` that matches, if any."""
        wanted = frozenset({kinds}) if isinstance(kinds, str) else kinds
        with self._lock:
            for rule in self._rules:
                if rule.kind in wanted and rule._matches(host, method, path):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    rule.triggered += 1
                    return rule
        return None

    # ---- API host --------------------------------------------------------------------

    def rate_limit(
        self,
        times: int | None = 1,
        retry_after: float | str | None = None,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> FaultRule:
        """Answer ``429`` on the API, with ``Retry-After`` when ``retry_after`` is given."""
        return self._add(
            FaultRule(
                "rate_limit",
                times,
                {"status": 429, "retry_after": retry_after},
                method=method.upper() if method else None,
                path_contains=path_contains,
                host="api",
            )
        )

    def server_error(
        self,
        times: int | None = 1,
        status: int = 503,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> FaultRule:
        """Answer a ``5xx`` (``status``) on the API."""
        return self._add(
            FaultRule(
                "server_error",
                times,
                {"status": status},
                method=method.upper() if method else None,
                path_contains=path_contains,
                host="api",
            )
        )

    def drop_api_response(
        self, times: int | None = 1, method: str | None = "POST", path_contains: str | None = None
    ) -> FaultRule:
        """Process an API request, then close the connection without answering."""
        return self._add(
            FaultRule(
                "drop_api_response",
                times,
                method=method.upper() if method else None,
                path_contains=path_contains,
                host="api",
            )
        )

    def echo_token(
        self,
        status: int = 401,
        times: int | None = 1,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> FaultRule:
        """Answer ``status`` on the API with an error that echoes the caller's secrets.

        The envelope's ``title``, ``detail`` and ``additional_information``, and a
        ``WWW-Authenticate`` header, repeat the ``Authorization`` header received, the
        request's query string and a presigned-style URL with a password and a
        signature: what a careless or hostile server might send back.
        """
        if not 400 <= status <= 599:
            msg = "status must be a 4xx or 5xx"
            raise ValueError(msg)
        return self._add(
            FaultRule(
                "echo_token",
                times,
                {"status": status},
                method=method.upper() if method else None,
                path_contains=path_contains,
                host="api",
            )
        )

    def drip(
        self,
        bytes_per_second: float = 1.0,
        *,
        host: str = "download",
        times: int | None = None,
        after_bytes: int = 0,
        max_seconds: float = 120.0,
        path_contains: str | None = None,
    ) -> FaultRule:
        """Send responses of ``host`` at ``bytes_per_second``, status line and headers included.

        The first ``after_bytes`` bytes of the response (headers included) go at full
        speed. Each socket write carries at least one byte, so a client's per-read
        timeout never fires: only a whole-exchange deadline or a stall rule ends it.
        The server gives up after ``max_seconds`` (bounded), or when the client hangs up.
        """
        if host not in HOSTS:
            msg = "host must be 'api' or 'download'"
            raise ValueError(msg)
        if bytes_per_second <= 0 or after_bytes < 0 or max_seconds <= 0:
            msg = "bytes_per_second and max_seconds must be positive, after_bytes >= 0"
            raise ValueError(msg)
        params = {
            "bytes_per_second": float(bytes_per_second),
            "after_bytes": int(after_bytes),
            "max_seconds": float(max_seconds),
        }
        return self._add(FaultRule("drip", times, params, path_contains=path_contains, host=host))

    def latency(self, seconds: float, times: int | None = None, host: str = "api") -> FaultRule:
        """Delay requests to ``host`` (``"api"`` or ``"download"``) by ``seconds``."""
        if host not in HOSTS:
            msg = "host must be 'api' or 'download'"
            raise ValueError(msg)
        return self._add(FaultRule("latency", times, {"seconds": float(seconds)}, host=host))

    # ---- export jobs -----------------------------------------------------------------

    def fail_job(self, times: int | None = 1) -> FaultRule:
        """The next job(s) end ``failed`` instead of ``complete``."""
        return self._add(FaultRule("fail_job", times))

    def complete_then_fail(self, times: int | None = 1) -> FaultRule:
        """The next job(s) complete, then report ``failed`` (archive lost) one poll later."""
        return self._add(FaultRule("complete_then_fail", times))

    def expired_url(self, times: int | None = 1) -> FaultRule:
        """The next presigned URL(s) are already expired when issued."""
        return self._add(FaultRule("expired_url", times))

    # ---- download host ---------------------------------------------------------------

    def download_error(self, status: int = 500, times: int | None = 1) -> FaultRule:
        """The download host answers ``status`` (S3-style XML body)."""
        return self._add(FaultRule("download_error", times, {"status": status}, host="download"))

    def drop_download(self, after_bytes: int, times: int | None = 1) -> FaultRule:
        """Close the connection after ``after_bytes`` bytes of the body."""
        return self._add(
            FaultRule("drop_download", times, {"after_bytes": after_bytes}, host="download")
        )

    def corrupt_download(self, offset: int, times: int | None = 1) -> FaultRule:
        """Flip one byte at ``offset`` of the body served."""
        return self._add(FaultRule("corrupt_download", times, {"offset": offset}, host="download"))

    def bandwidth(self, bytes_per_second: int | None) -> FaultRule | None:
        """Cap the download host's speed (``None`` removes the cap)."""
        with self._lock:
            if self._bandwidth is not None:
                self._rules.remove(self._bandwidth)
                self._bandwidth = None
        if bytes_per_second is None:
            return None
        if bytes_per_second <= 0:
            msg = "bytes_per_second must be positive"
            raise ValueError(msg)
        rule = self._add(
            FaultRule("bandwidth", None, {"bytes_per_second": bytes_per_second}, host="download")
        )
        with self._lock:
            self._bandwidth = rule
        return rule
