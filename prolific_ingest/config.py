"""Settings: where the API is, the token, timeouts, polling and cache location.

Environment variables (all optional):

``PROLIFIC_TOKEN``
    API token. Sent only to the API host, never logged.
``PROLIFIC_API_URL``
    API base URL (default ``https://api.prolific.com``); the emulator prints one.
``PROLIFIC_INGEST_CACHE``
    Cache location: a local path or an fsspec URL (default: the per-user cache dir).
``PROLIFIC_INGEST_PROGRESS``
    ``auto`` (default), ``1``/``true`` or ``0``/``false``.
``PROLIFIC_CA_BUNDLE``
    A CA bundle (PEM) to trust for the API and the download host, e.g. the emulator's.
``PROLIFIC_POLL_INTERVAL``
    First interval between export status polls, in seconds (default 3; it grows by half
    each poll up to 15). Test suites running against the emulator set it low.
``PROLIFIC_CONNECT_TIMEOUT``, ``PROLIFIC_READ_TIMEOUT``
    Socket timeouts in seconds: to connect, and for each read (defaults 10 and 60).
``PROLIFIC_REQUEST_TIMEOUT``
    Total seconds one API call may take, status line to last body byte (default 60).
``PROLIFIC_WAIT_TIMEOUT``
    Seconds to wait for an export to complete (default 600).
``PROLIFIC_STALL_TIMEOUT``, ``PROLIFIC_STALL_MIN_RATE``
    The download stall rule: a download that receives fewer than ``STALL_MIN_RATE``
    bytes per second (default 1024) over ``STALL_TIMEOUT`` seconds (default 60) is
    abandoned and resumed, within the retry budget.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field, replace
from typing import Any

import platformdirs

from ._version import warn_deprecated
from .errors import ConfigurationError, MissingTokenError

__all__ = ["DEFAULT_BASE_URL", "Secret", "Settings", "default_cache_dir", "normalize_base_url"]

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.prolific.com"

# Paths the client adds itself; a base URL copied with them would double them.
_API_SUFFIXES = ("/api/v1/data-collection", "/api/v1")


def normalize_base_url(base_url: str) -> str:
    """Return an API base URL without trailing slashes or a trailing ``/api/v1``.

    The client adds ``/api/v1/data-collection/`` itself, so a URL copied together with
    ``/api/v1`` (or ``/api/v1/data-collection``) is cut back to the API root; this is
    logged at DEBUG.

    Parameters
    ----------
    base_url : str
        The URL as given (argument, ``PROLIFIC_API_URL`` or settings).

    Returns
    -------
    str
        The API root, for example ``https://api.prolific.com``.
    """
    url = base_url.strip().rstrip("/")
    for suffix in _API_SUFFIXES:
        if url.lower().endswith(suffix):
            root = url[: -len(suffix)].rstrip("/")
            logger.debug("API base URL: dropping %r (the client adds it itself)", suffix)
            return root
    return url


class Secret:
    """A string that never shows itself in ``repr``, ``str`` or f-strings.

    Use :meth:`get_secret_value` to read it (only the API client does).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        """Return the secret itself."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> Any:
        # Pickling would write the token to disk (e.g. multiprocessing, caches): refuse.
        msg = "Secret values cannot be pickled"
        raise TypeError(msg)


def default_cache_dir() -> str:
    """Return ``$PROLIFIC_INGEST_CACHE`` or the per-user cache directory."""
    return os.environ.get("PROLIFIC_INGEST_CACHE") or platformdirs.user_cache_dir(
        "prolific-ingest", appauthor=False
    )


def _character_kind(char: str) -> str:
    """How to name a character no API token holds (never the character itself)."""
    if char in "\r\n":
        return "a line break"
    if char.isspace():
        return "whitespace"
    if char.isascii():
        return "a control character"
    return "a non-ASCII character"


def _check_token(token: Secret) -> None:
    """Refuse a token that cannot be an API token, without ever showing it.

    A token is printable ASCII without spaces. A line break or a non-ASCII character
    (a bad copy-paste) would otherwise fail deep inside ``requests`` with a misleading
    error whose text contains the whole token.
    """
    value = token.get_secret_value()
    for position, char in enumerate(value, start=1):
        if not "!" <= char <= "~":
            kind = _character_kind(char)
            msg = (
                f"the API token contains {kind} at character {position} of {len(value)}: "
                "check how it was copied into PROLIFIC_TOKEN (or token=)"
            )
            raise ConfigurationError(msg)


#: Numeric settings that may come from the environment: variable -> field.
_ENV_SECONDS = {
    "PROLIFIC_POLL_INTERVAL": "poll_interval",
    "PROLIFIC_CONNECT_TIMEOUT": "connect_timeout",
    "PROLIFIC_READ_TIMEOUT": "read_timeout",
    "PROLIFIC_REQUEST_TIMEOUT": "request_timeout",
    "PROLIFIC_WAIT_TIMEOUT": "wait_timeout",
    "PROLIFIC_STALL_TIMEOUT": "stall_timeout",
    "PROLIFIC_STALL_MIN_RATE": "stall_min_rate",
}

#: Fields that must be strictly positive (a zero socket timeout would never wait).
_POSITIVE = ("connect_timeout", "read_timeout", "request_timeout", "stall_timeout")


def _env_number(name: str) -> float | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError as exc:
        msg = f"{name} must be a number, not {raw!r}"
        raise ConfigurationError(msg) from exc
    if not math.isfinite(value):
        msg = f"{name} must be a finite number, not {raw!r}"
        raise ConfigurationError(msg)
    return value


def _env_bool(name: str) -> bool | None:
    raw = os.environ.get(name, "").strip().lower()
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    return None


@dataclass(frozen=True)
class Settings:
    """Connection and behaviour settings.

    Parameters
    ----------
    base_url : str
        API root. A trailing ``/api/v1`` (or ``/api/v1/data-collection``) and trailing
        slashes are removed (see :func:`normalize_base_url`).
    token : Secret or None
        The API token; ``None`` means "not configured" (API calls then raise
        :class:`~prolific_ingest.MissingTokenError`).
    connect_timeout, read_timeout : float
        Socket timeouts in seconds: to connect, and for each read. A host that drips
        bytes never trips them; ``request_timeout`` and the stall rule bound that.
    request_timeout : float
        Total seconds one API call (one attempt) may take, from connecting to the
        last body byte, however slowly the host sends. Each call is also cut short
        by the deadline of the operation it serves (``wait_timeout`` while polling).
    stall_timeout, stall_min_rate : float
        The download stall rule: a download that receives fewer than
        ``stall_min_rate`` bytes per second on average over ``stall_timeout`` seconds
        is abandoned and resumed with ``Range`` within the retry budget, then fails
        with :class:`~prolific_ingest.DownloadError`.
    poll_interval, poll_max_interval : float
        First and largest interval between status polls (seconds); the interval grows
        by half each poll up to the ceiling.
    wait_timeout : float
        How long to wait for an export to complete before ``ExportTimeoutError``.
    cache_dir : str
        Local path or fsspec URL of the export cache.
    ca_bundle : str or None
        CA bundle used to verify TLS (API and download host).
    """

    base_url: str = DEFAULT_BASE_URL
    token: Secret | None = field(default=None, repr=False)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    request_timeout: float = 60.0
    stall_timeout: float = 60.0
    stall_min_rate: float = 1024.0
    poll_interval: float = 3.0
    poll_max_interval: float = 15.0
    wait_timeout: float = 600.0
    cache_dir: str = field(default_factory=default_cache_dir)
    ca_bundle: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.base_url, str):
            object.__setattr__(self, "base_url", normalize_base_url(self.base_url))
        for name in _POSITIVE:
            if not getattr(self, name) > 0:
                msg = f"Settings.{name} must be a positive number of seconds"
                raise ConfigurationError(msg)
        if self.stall_min_rate < 0 or self.wait_timeout < 0:
            msg = "Settings.stall_min_rate and Settings.wait_timeout must not be negative"
            raise ConfigurationError(msg)

    @classmethod
    def from_env(
        cls, *, token: str | Secret | None = None, base_url: str | None = None, **overrides: Any
    ) -> Settings:
        """Build settings from explicit arguments, then ``PROLIFIC_*`` variables, then defaults."""
        raw_token: str | Secret | None = (
            token if token is not None else os.environ.get("PROLIFIC_TOKEN")
        )
        secret = (
            raw_token
            if isinstance(raw_token, Secret) or raw_token is None
            else Secret(raw_token.strip())
        )
        if secret is not None and not secret:
            secret = None
        url = base_url or os.environ.get("PROLIFIC_API_URL") or DEFAULT_BASE_URL
        values: dict[str, Any] = {"base_url": url, "token": secret}
        if os.environ.get("PROLIFIC_CA_BUNDLE"):
            values["ca_bundle"] = os.environ["PROLIFIC_CA_BUNDLE"]
        for variable, name in _ENV_SECONDS.items():
            number = _env_number(variable)
            if number is not None and name in _POSITIVE and number <= 0:
                msg = f"{variable} must be a positive number of seconds, not {number:g}"
                raise ConfigurationError(msg)
            if number is not None:
                values[name] = number
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def require_token(self) -> Secret:
        """Return the token, about to be sent.

        Raises
        ------
        MissingTokenError
            No token is configured.
        ConfigurationError
            The token holds a character no API token has (line break, space, non-ASCII);
            the message gives its position, never the token.
        """
        if self.token is None:
            raise MissingTokenError
        _check_token(self.token)  # here, not at construction: offline loads send nothing
        return self.token

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied."""
        return replace(self, **changes)

    @staticmethod
    def progress_from_env() -> bool | None:
        """``PROLIFIC_INGEST_PROGRESS`` as a bool, or ``None`` for auto."""
        return _env_bool("PROLIFIC_INGEST_PROGRESS")


def deprecated_connection_keyword(
    verb: str, name: str, instead: str, *, beside_client: bool, stacklevel: int = 2
) -> None:
    """Warn that ``verb(name=...)`` is deprecated (say ``instead``); refuse it beside ``client=``.

    Beside ``client=``, the client's own setting would silently win, so that is a
    :class:`~prolific_ingest.ConfigurationError`. ``stacklevel`` counts as in
    :func:`warnings.warn`, from the caller of this function.
    """
    warn_deprecated(f"{verb}({name}=...)", f"pass {instead}", stacklevel=stacklevel + 1)
    if beside_client:
        msg = (
            f"{verb}(): {name}= is ignored when client= is given (the client's own setting "
            f"wins); configure the client instead: {instead}"
        )
        raise ConfigurationError(msg)
