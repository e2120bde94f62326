"""Scrub secrets out of text that came from a server.

A server may echo the token, a presigned URL (its signature) or a URL with a password in
an error body or a header. :func:`scrub_secrets` is the one function that such text
passes through before it enters an exception, a log record or the CLI's ``error:`` line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

from .._urls import redact_url

__all__ = ["REDACTED", "redact_transport_logs", "scrub_secrets", "scrub_value"]

#: What replaces a secret in text that came from a server.
REDACTED = "<redacted>"

# Any absolute URL inside free text (stops at whitespace, quotes and brackets).
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>()\[\]{}`]+")
# key=value pairs that carry credentials, wherever they appear (a query string echoed
# without its URL, a header dump ...).
_SECRET_PAIR = re.compile(
    r"(?i)\b((?:x-amz-)?(?:signature|credential|security-token)|sig|token|access_token"
    r"|api_key|password|authorization)(\s*[=:]\s*)(?:token\s+|bearer\s+)?[^\s&;,\"'<>]+"
)
# The shortest literal that is scrubbed: shorter values are too likely to be ordinary words.
_MIN_SECRET = 4


def _redact_url_in_text(match: re.Match[str]) -> str:
    text = match.group(0)
    try:
        return redact_url(text) or ""
    except ValueError:  # e.g. an invalid port: drop everything after the scheme
        return text.split("://", 1)[0] + "://" + REDACTED


def scrub_secrets(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Remove every secret from text that came from a server.

    This is the one function through which server text (an error's ``title`` and
    ``detail``, a message body, a header value) passes before it enters an
    exception, a log record or the CLI.

    Parameters
    ----------
    text : str
        The server's text.
    secrets : iterable of str
        Secrets the client holds (the API token, ``_urls.url_secrets`` of its URLs);
        each is replaced, also in its percent-encoded forms.

    Returns
    -------
    str
        ``text`` with each secret replaced by ``<redacted>``, every URL reduced to
        scheme, host and path (no user info, query string or fragment), and
        credential-looking ``key=value`` pairs (``X-Amz-Signature=…``,
        ``token=…``, ``Authorization: Token …``) redacted.
    """
    values = {s for s in secrets if s and len(s) >= _MIN_SECRET}
    forms = {form for s in values for form in (s, quote(s, safe=""), quote_plus(s))}
    for secret in sorted(forms, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _URL_IN_TEXT.sub(_redact_url_in_text, text)
    return _SECRET_PAIR.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)


def scrub_value(value: Any, secrets: Iterable[str | None] = ()) -> Any:
    """:func:`scrub_secrets` applied to every string inside a JSON-like value."""
    held = list(secrets)
    if isinstance(value, str):
        return scrub_secrets(value, held)
    if isinstance(value, list):
        return [scrub_value(v, held) for v in value]
    if isinstance(value, dict):
        return {scrub_secrets(str(k), held): scrub_value(v, held) for k, v in value.items()}
    return value


class _ScrubRecord(logging.Filter):
    """Scrub every string argument of a record (a request line's path and query)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(scrub_secrets(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str) and not record.args:
            record.msg = scrub_secrets(record.msg)
        return True


#: The transport's logger that writes whole request lines at DEBUG (a presigned URL's
#: query string, its signature, included).
_TRANSPORT_LOGGER = "urllib3.connectionpool"
_FILTER = _ScrubRecord()


def redact_transport_logs() -> None:
    """Scrub secrets from urllib3's request lines before any handler sees them (idempotent).

    A logger's filter runs only when a record is made, i.e. only when DEBUG is on for it.
    """
    logger = logging.getLogger(_TRANSPORT_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
