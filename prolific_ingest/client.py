"""ProlificClient: the only code that talks to the API host and sees the token.

It attaches ``Authorization: Token <token>`` to requests for the API host only,
applies default timeouts and a ``User-Agent``, retries transient failures
(see :mod:`prolific_ingest._http.retry`) and turns error responses into the typed
exceptions of :mod:`prolific_ingest.errors`.

Every attempt is bounded as a whole (``Settings.request_timeout``, and the deadline of
the operation it serves), not only per socket read: see :mod:`prolific_ingest._http.watchdog`.
Server text that goes into an exception passes through
:func:`~prolific_ingest._http.scrub.scrub_secrets` first, so a host that echoes the token
(or a presigned URL) in an error body cannot put it in a message or a log line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import requests

from ._http.api_errors import api_error, request_id, response_json
from ._http.retry import RetryPolicy, RetryState, is_retriable, parse_retry_after
from ._http.scrub import scrub_secrets
from ._http.watchdog import Watchdog, guarded_session
from ._urls import is_https_or_loopback, url_secrets
from ._version import __version__
from .config import Secret, Settings, normalize_base_url
from .errors import (
    ConfigurationError,
    TransportError,
    redact_url,
)

__all__ = ["API_PREFIX", "USER_AGENT", "ProlificClient", "check_base_url", "response_json"]

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1/data-collection/"
USER_AGENT = f"prolific-ingest/{__version__}"

Params = Mapping[str, str | int | float | None]


def check_base_url(base_url: str) -> str:
    """Validate an API base URL and return it without a trailing slash or ``/api/v1``.

    Parameters
    ----------
    base_url : str
        The API root; a trailing ``/api/v1`` (or ``/api/v1/data-collection``) is
        dropped, since requests add it themselves.

    Returns
    -------
    str
        The normalised API root.

    Raises
    ------
    ConfigurationError
        The URL is not ``https`` (plain ``http`` is allowed for loopback hosts only)
        or has no host.
    """
    parts = urlsplit(base_url)
    if not parts.hostname:
        msg = f"Invalid Prolific API URL {redact_url(base_url)!r}: no host"
        raise ConfigurationError(msg)
    if is_https_or_loopback(base_url):
        return normalize_base_url(base_url)
    msg = (
        f"Refusing Prolific API URL {redact_url(base_url)!r}: it must use https "
        "(plain http is only allowed for loopback hosts such as 127.0.0.1)"
    )
    raise ConfigurationError(msg)


class _TimedOut(requests.Timeout):
    """An attempt ended by the watchdog (``whole_call``: the caller's deadline passed)."""

    def __init__(self, message: str, *, limit: float, whole_call: bool) -> None:
        super().__init__(message)
        self.limit = limit
        self.whole_call = whole_call


class ProlificClient:
    """A connection to the Prolific API.

    Parameters
    ----------
    settings : Settings, optional
        Defaults to :meth:`Settings.from_env`.
    token : str or Secret, optional
        Overrides the settings' token.
    base_url : str, optional
        Overrides the settings' API root; ``https`` unless the host is loopback.
    session : requests.Session, optional
        A session to use (not closed by :meth:`close`). No auth is set on it:
        the token is attached per request, only for the API host. Unless it has
        :class:`~prolific_ingest._http.watchdog.GuardedAdapter` mounted, the time limits
        bound its bodies but not a host that drips the status line and headers.
    retry : RetryPolicy, optional
        Retry policy for transient failures (default :class:`RetryPolicy`).
    sleep, clock : callable
        Injectable ``time.sleep`` / ``time.monotonic`` (tests).

    Notes
    -----
    A missing token is reported by the first API call (:class:`MissingTokenError`),
    not by the constructor.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        token: str | Secret | None = None,
        base_url: str | None = None,
        session: requests.Session | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], object] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if settings is None:
            settings = Settings.from_env(token=token, base_url=base_url)
        else:
            changes: dict[str, Any] = {}
            if token is not None:
                changes["token"] = token if isinstance(token, Secret) else Secret(token.strip())
            if base_url is not None:
                changes["base_url"] = base_url
            if changes:
                settings = settings.replace(**changes)
        clean_url = check_base_url(settings.base_url)
        if clean_url != settings.base_url:
            settings = settings.replace(base_url=clean_url)
        self._settings = settings
        self._api_host = urlsplit(clean_url).netloc.lower()
        self._owns_session = session is None
        self._session = session if session is not None else guarded_session()
        self.retry = retry if retry is not None else RetryPolicy()
        self._sleep = sleep
        self._clock = clock

    @property
    def settings(self) -> Settings:
        """The :class:`Settings` in use (its token is a redacting :class:`Secret`)."""
        return self._settings

    def __repr__(self) -> str:
        return (
            f"ProlificClient(base_url={redact_url(self._settings.base_url)!r}, "
            f"token={'set' if self._settings.token is not None else 'missing'})"
        )

    def _secrets(self) -> list[str]:
        held = url_secrets(self._settings.base_url)
        if self._settings.token is not None:
            held.append(self._settings.token.get_secret_value())
        return held

    def scrub(self, text: str) -> str:
        """Return server ``text`` without any secret this client holds.

        See :func:`~prolific_ingest._http.scrub.scrub_secrets`: the token, URL passwords,
        query strings and credential-looking ``key=value`` pairs are removed.
        """
        return scrub_secrets(text, self._secrets())

    def url_for(self, path: str) -> str:
        """Return the absolute URL of an API ``path`` (relative to ``/api/v1/data-collection/``)."""
        return self._settings.base_url + API_PREFIX + path.lstrip("/")

    def _headers_for(self, url: str) -> tuple[dict[str, str], bool]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if urlsplit(url).netloc.lower() == self._api_host:
            token = self._settings.require_token()
            headers["Authorization"] = f"Token {token.get_secret_value()}"
            return headers, True
        return headers, False

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        expect: Collection[int] = (200,),
        timeout: float | None = None,
    ) -> requests.Response:
        """Send one API request, with retries, and return the response.

        Parameters
        ----------
        method : str
            HTTP method.
        path : str
            Path relative to ``/api/v1/data-collection/`` (e.g. ``"batches/<id>/export"``).
        params : mapping, optional
            Query parameters; ``None`` values are dropped.
        expect : collection of int
            Statuses that count as success.
        timeout : float, optional
            Seconds this call may take in total, retries included (the deadline of
            the operation it serves). Each attempt is also limited to
            ``settings.request_timeout``, however slowly the host sends.

        Returns
        -------
        requests.Response
            The (fully read) response.

        Raises
        ------
        MissingTokenError
            No token is configured.
        APIError
            A typed subclass for error statuses (after retries for 429/5xx); its
            ``request_id`` is the server's id of the last response, when it sent one.
        TransportError
            The connection kept failing or timing out, or ``timeout`` passed.
        """
        method = method.upper()
        url = self.url_for(path)
        headers, authed = self._headers_for(url)
        query = {k: v for k, v in (params or {}).items() if v is not None}
        log_path = API_PREFIX + path.lstrip("/")
        state = RetryState(self.retry, sleep=self._sleep, clock=self._clock)
        deadline = None if timeout is None else self._clock() + max(0.0, timeout)
        while True:
            started = self._clock()
            try:
                resp = self._attempt(method, url, query, headers, deadline)
            except requests.RequestException as exc:
                elapsed = self._clock() - started
                logger.info(
                    "%s %s -> %s after %.3fs (authenticated=%s)",
                    method,
                    log_path,
                    type(exc).__name__,
                    elapsed,
                    authed,
                )
                self._retry_after_failure(exc, state, f"{method} {log_path}", deadline)
                continue
            elapsed = self._clock() - started
            rid = request_id(resp, self._secrets())
            logger.info(
                "%s %s -> %d in %.3fs (authenticated=%s%s)",
                method,
                log_path,
                resp.status_code,
                elapsed,
                authed,
                "" if rid is None else f", request id {rid}",
            )
            if resp.status_code in expect:
                return resp
            if resp.status_code in self.retry.retry_statuses:
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                delay = self._delay_within(state, deadline, retry_after)
                if delay is not None:
                    logger.info(
                        "%s %s: retrying in %.2fs (attempt %d of %d)",
                        method,
                        log_path,
                        delay,
                        state.attempts + 1,
                        self.retry.max_attempts,
                    )
                    resp.close()
                    state.wait(delay)
                    continue
            raise api_error(method, log_path, url, resp, self._secrets())

    def _attempt(
        self,
        method: str,
        url: str,
        query: Mapping[str, Any],
        headers: Mapping[str, str],
        deadline: float | None,
    ) -> requests.Response:
        """One request, read to the end within ``request_timeout`` and the deadline."""
        settings = self._settings
        limit = settings.request_timeout
        if deadline is not None:
            limit = min(limit, max(deadline - self._clock(), 0.0))
        if limit <= 0:
            msg = "no time left before the deadline"
            raise _TimedOut(msg, limit=0.0, whole_call=True)
        timeout = (min(settings.connect_timeout, limit), min(settings.read_timeout, limit))
        verify: bool | str = settings.ca_bundle or True
        with Watchdog(timeout=limit) as dog:
            try:
                resp = self._session.request(
                    method,
                    url,
                    params=query,
                    headers=headers,
                    timeout=timeout,
                    verify=verify,
                    stream=True,
                )
                dog.attach_response(resp)
                resp.content  # noqa: B018 - read the body while the watchdog runs
            except requests.RequestException as exc:
                if dog.reason is None and not self._reached_limit(exc, limit):
                    raise
                raise self._timed_out(limit, deadline) from exc
            if dog.reason is not None:
                # Cut mid-headers, http.client takes the EOF for their end: a truncated
                # reply that looks whole. Whatever arrived is not the answer.
                resp.close()
                raise self._timed_out(limit, deadline)
        return resp

    def _reached_limit(self, exc: requests.RequestException, limit: float) -> bool:
        """Whether ``exc`` is a socket timeout cut down to ``limit``: it fired because the
        exchange's limit passed (one wait of ``limit`` seconds), just before the watchdog."""
        settings = self._settings
        if isinstance(exc, requests.ConnectTimeout):
            return limit < settings.connect_timeout
        return isinstance(exc, requests.ReadTimeout) and limit < settings.read_timeout

    def _timed_out(self, limit: float, deadline: float | None) -> _TimedOut:
        whole = deadline is not None and limit < self._settings.request_timeout
        return _TimedOut(f"no complete answer within {limit:g}s", limit=limit, whole_call=whole)

    def _delay_within(
        self, state: RetryState, deadline: float | None, retry_after: float | None = None
    ) -> float | None:
        delay = state.next_delay(retry_after)
        if delay is not None and deadline is not None and self._clock() + delay >= deadline:
            return None
        return delay

    def _retry_after_failure(
        self,
        exc: requests.RequestException,
        state: RetryState,
        what: str,
        deadline: float | None,
    ) -> None:
        """Wait before the next attempt, or raise :class:`TransportError`."""
        final = isinstance(exc, _TimedOut) and exc.whole_call
        retriable = not final and is_retriable(exc, self.retry)
        delay = self._delay_within(state, deadline) if retriable else None
        if delay is not None:
            state.wait(delay)
            return
        if isinstance(exc, _TimedOut):
            limit = "the deadline" if exc.whole_call else "request_timeout"
            msg = (
                f"{what}: no complete answer within {exc.limit:g}s ({limit}) after "
                f"{state.attempts} attempt(s); the host is not answering or sends too slowly"
            )
        else:
            msg = f"{what}: connection failed after {state.attempts} attempt(s) ({type(exc).__name__})"
        raise TransportError(msg) from exc

    def get_json(
        self, path: str, params: Params | None = None, *, timeout: float | None = None
    ) -> Any:
        """``GET`` an API path and return the decoded JSON body (``timeout`` as in :meth:`request`)."""
        return response_json(self.request("GET", path, params=params, timeout=timeout))

    def close(self) -> None:
        """Close the HTTP session if the client created it."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
