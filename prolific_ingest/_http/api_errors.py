"""Turn an API error response into the typed exception of :mod:`prolific_ingest.errors`.

This is the choke point where server text (an error envelope's ``title``, ``detail``,
``additional_information``, or a body that is not JSON) enters an exception: all of it
passes through :func:`~prolific_ingest._http.scrub.scrub_secrets` with the secrets the client
holds. The response's request id (see :func:`request_id`) goes into the exception and its
message, so a failure can be quoted to Prolific support.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import requests

from ..errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ExportLimitError,
    ExportStillGeneratingError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
)
from .retry import parse_retry_after
from .scrub import scrub_secrets, scrub_value

__all__ = ["REQUEST_ID_HEADERS", "api_error", "request_id", "response_json"]

#: Response headers that may carry the server's id of a request, first present wins.
#: Prolific's API documentation names none, so these are the usual spellings (a reverse
#: proxy's ``X-Request-Id``, ``Request-Id``, AWS API Gateway's ``X-Amzn-RequestId``,
#: ``X-Correlation-Id``); a response without any of them simply has no id.
REQUEST_ID_HEADERS = ("X-Request-Id", "Request-Id", "X-Amzn-RequestId", "X-Correlation-Id")

#: What a usable id looks like: visible ASCII, no spaces, bounded (it goes into messages).
_REQUEST_ID_RE = re.compile(r"[\x21-\x7e]{1,128}")


def request_id(resp: requests.Response, secrets: Iterable[str] = ()) -> str | None:
    """The server's id of the request ``resp`` answers, or ``None``.

    The value is server text: it is scrubbed of ``secrets`` (and of the token the
    request itself carried) and dropped when it is not a short run of visible ASCII (a
    header stuffed with a body, spaces or control characters is not an id).
    """
    for name in REQUEST_ID_HEADERS:
        raw = resp.headers.get(name)
        if raw is None or not raw.strip():
            continue
        held = list(secrets)
        sent = resp.request.headers.get("Authorization") if resp.request is not None else None
        if sent:
            held.append(sent.partition(" ")[2] or sent)
        value = scrub_secrets(raw.strip(), held)
        return value if _REQUEST_ID_RE.fullmatch(value) else None
    return None


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


def api_error(
    method: str, path: str, url: str, resp: requests.Response, secrets: Iterable[str]
) -> APIError:
    """The typed error for an error response; all server text is scrubbed of ``secrets``."""
    status = resp.status_code
    code, raw_title, raw_detail = _parse_envelope(resp)
    held = list(secrets)
    title = scrub_secrets(raw_title, held) if raw_title is not None else None
    detail = scrub_value(raw_detail, held)
    message = f"{method} {path} -> {status}"
    if title:
        message += f": {title}"
    text = _detail_text(detail)
    if text and text != title:
        message += f" ({text})" if title else f": {text}"
    rid = request_id(resp, held)
    kw: dict[str, Any] = {
        "status": status,
        "error_code": code,
        "title": title,
        "detail": detail,
        "method": method,
        "url": url,
        "request_id": rid,
    }
    cls, hint = _class_for(status, method)
    message += hint + _naming(rid)
    if cls is RateLimitedError:
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        return RateLimitedError(message, retry_after=retry_after, **kw)
    return cls(message, **kw)


def _naming(rid: str | None) -> str:
    return f" [request id {rid}]" if rid is not None else ""


def _class_for(status: int, method: str) -> tuple[type[APIError], str]:
    """The exception class for an error ``status`` and the hint its message ends with."""
    if status in (400, 422):
        return BadRequestError, ""
    if status == 401:
        return AuthenticationError, " - check PROLIFIC_TOKEN"
    if status == 403:
        return PermissionDeniedError, ""
    if status == 404:
        return NotFoundError, ""
    if status == 409:
        if method == "POST":
            hint = " - the export job limit is reached; delete finished jobs to free a slot"
            return ExportLimitError, hint
        if method == "DELETE":
            return ExportStillGeneratingError, " - the export is still generating"
        return ConflictError, ""
    if status == 429:
        return RateLimitedError, ""
    if status >= 500:
        return ServerError, ""
    return APIError, ""


def response_json(resp: requests.Response) -> Any:
    """Decode a response body as JSON, raising :class:`APIError` when it is not JSON."""
    try:
        return resp.json()
    except ValueError as exc:
        method = resp.request.method if resp.request is not None else None
        url = resp.url
        path = urlsplit(url).path
        rid = request_id(resp)
        msg = f"{method} {path} -> {resp.status_code}: response body is not JSON{_naming(rid)}"
        raise APIError(
            msg, status=resp.status_code, method=method, url=url, request_id=rid
        ) from exc
