"""Turn an API error response into the typed exception of :mod:`prolific_ingest.errors`.

This is the choke point where server text (an error envelope's ``title``, ``detail``,
``additional_information``, or a body that is not JSON) enters an exception: all of it
passes through :func:`~prolific_ingest._scrub.scrub_secrets` with the secrets the client
holds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import requests

from ._retry import parse_retry_after
from ._scrub import scrub_secrets, scrub_value
from .errors import (
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

__all__ = ["api_error", "response_json"]


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
