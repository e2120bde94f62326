"""ProlificClient: the only code that talks to the API host and sees the token.

It attaches ``Authorization: Token <token>`` to requests for the API host only,
applies default timeouts and a ``User-Agent``, retries transient failures
(see :mod:`prolific_ingest._retry`) and turns error responses into the typed
exceptions of :mod:`prolific_ingest.errors`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection, Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import requests

from ._retry import RetryPolicy, RetryState, is_retriable, parse_retry_after
from ._urls import is_https_or_loopback
from ._version import __version__
from .config import Secret, Settings, normalize_base_url
from .errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConflictError,
    ExportLimitError,
    ExportStillGeneratingError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
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


def _detail_text(detail: Any) -> str:
    if detail is None:
        return ""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        return "; ".join(_detail_text(d) for d in detail)
    if isinstance(detail, dict):
        return "; ".join(f"{k}: {_detail_text(v)}" for k, v in detail.items())
    return str(detail)


def _parse_envelope(resp: requests.Response) -> tuple[int | None, str | None, Any]:
    """Return ``(error_code, title, detail)`` from any of the error body shapes."""
    try:
        body = resp.json()
    except ValueError:
        text = (resp.text or "").strip()
        return None, None, (text[:300] or None)
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code = err.get("error_code")
            title = err.get("title")
            detail = err.get("detail")
            extra = err.get("additional_information")
            if extra and not detail:
                detail = extra
            return (
                code if isinstance(code, int) else None,
                str(title) if title is not None else None,
                detail,
            )
        if isinstance(err, str):
            return None, err, body.get("detail")
        if "message" in body or "detail" in body:
            msg = body.get("message")
            return None, str(msg) if msg is not None else None, body.get("detail")
    return None, None, json.dumps(body)[:300]


def _api_error(method: str, path: str, url: str, resp: requests.Response) -> APIError:
    status = resp.status_code
    code, title, detail = _parse_envelope(resp)
    message = f"{method} {path} -> {status}"
    if title:
        message += f": {title}"
    text = _detail_text(detail)
    if text and text != title:
        message += f" ({text})" if title else f": {text}"
    kw: dict[str, Any] = {
        "status": status,
        "error_code": code,
        "title": title,
        "detail": detail,
        "method": method,
        "url": url,
    }
    if status in (400, 422):
        return BadRequestError(message, **kw)
    if status == 401:
        return AuthenticationError(message + " - check PROLIFIC_TOKEN", **kw)
    if status == 403:
        return PermissionDeniedError(message, **kw)
    if status == 404:
        return NotFoundError(message, **kw)
    if status == 409:
        if method == "POST":
            hint = " - the export job limit is reached; delete finished jobs to free a slot"
            return ExportLimitError(message + hint, **kw)
        if method == "DELETE":
            return ExportStillGeneratingError(message + " - the export is still generating", **kw)
        return ConflictError(message, **kw)
    if status == 429:
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        return RateLimitedError(message, retry_after=retry_after, **kw)
    if status >= 500:
        return ServerError(message, **kw)
    return APIError(message, **kw)


def response_json(resp: requests.Response) -> Any:
    """Decode a response body as JSON, raising :class:`APIError` when it is not JSON."""
    try:
        return resp.json()
    except ValueError as exc:
        method = resp.request.method if resp.request is not None else None
        url = resp.url
        path = urlsplit(url).path
        msg = f"{method} {path} -> {resp.status_code}: response body is not JSON"
        raise APIError(msg, status=resp.status_code, method=method, url=url) from exc


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
        the token is attached per request, only for the API host.
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
        self._session = session if session is not None else requests.Session()
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

        Returns
        -------
        requests.Response
            The (fully read) response.

        Raises
        ------
        MissingTokenError
            No token is configured.
        APIError
            A typed subclass for error statuses (after retries for 429/5xx).
        TransportError
            The connection kept failing.
        """
        method = method.upper()
        url = self.url_for(path)
        headers, authed = self._headers_for(url)
        query = {k: v for k, v in (params or {}).items() if v is not None}
        log_path = API_PREFIX + path.lstrip("/")
        timeout = (self._settings.connect_timeout, self._settings.read_timeout)
        verify: bool | str = self._settings.ca_bundle or True
        state = RetryState(self.retry, sleep=self._sleep, clock=self._clock)
        while True:
            started = self._clock()
            try:
                resp = self._session.request(
                    method, url, params=query, headers=headers, timeout=timeout, verify=verify
                )
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
                delay = state.next_delay() if is_retriable(exc, self.retry) else None
                if delay is None:
                    msg = (
                        f"{method} {log_path}: connection failed after {state.attempts} "
                        f"attempt(s) ({type(exc).__name__})"
                    )
                    raise TransportError(msg) from exc
                state.wait(delay)
                continue
            elapsed = self._clock() - started
            logger.info(
                "%s %s -> %d in %.3fs (authenticated=%s)",
                method,
                log_path,
                resp.status_code,
                elapsed,
                authed,
            )
            if resp.status_code in expect:
                return resp
            if resp.status_code in self.retry.retry_statuses:
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                delay = state.next_delay(retry_after)
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
            raise _api_error(method, log_path, url, resp)

    def get_json(self, path: str, params: Params | None = None) -> Any:
        """``GET`` an API path and return the decoded JSON body."""
        return response_json(self.request("GET", path, params=params))

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
