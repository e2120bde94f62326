"""The emulated S3-style download host: presigned URL checks, Range, ETag."""

from __future__ import annotations

import re
from collections.abc import Mapping
from email.utils import formatdate
from pathlib import Path
from typing import Literal

from ._core import EmulatorCore
from ._reply import Reply, s3_error
from .state import Job

__all__ = ["download"]

_OBJECT_RE = re.compile(r"^/prolific-exports/(batches|collections)/([^/]+)/([^/]+)\.zip$")
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


def download(
    emu: EmulatorCore, method: str, path: str, query: dict[str, str], headers: Mapping[str, str]
) -> tuple[Reply, tuple[Path, int, int] | None]:
    """Answer one request to the download host.

    Returns the reply and, when the archive is to be streamed, ``(file, start, length)``.
    """
    headers = {k.lower(): v for k, v in headers.items()}
    if method not in ("GET", "HEAD"):
        return s3_error(405, "MethodNotAllowed", "The specified method is not allowed."), None
    rule = emu.faults.take("download_error", host="download", method=method, path=path)
    if rule is not None:
        status = int(rule.params["status"])
        code = "SlowDown" if status == 503 else "InternalError"
        return s3_error(status, code, "Injected download error."), None
    if headers.get("authorization") is not None:
        msg = "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
        msg += "Signature query string parameter or the Authorization header should be specified"
        return s3_error(400, "InvalidArgument", msg), None
    problem = emu._signer.check(path, query, emu._now())
    if problem == "Expired":
        return s3_error(403, "AccessDenied", "Request has expired"), None
    if problem == "SignatureDoesNotMatch":
        msg = "The request signature we calculated does not match the signature you provided."
        return s3_error(403, problem, msg), None
    if problem is not None:
        return s3_error(403, "AccessDenied", "Query-string authentication required."), None
    job = _job_for_path(emu, path)
    if job is None or job.archive is None or not job.archive.exists():
        return s3_error(404, "NoSuchKey", "The specified key does not exist."), None
    return _serve_archive(job, headers.get("range"))


def _job_for_path(emu: EmulatorCore, path: str) -> Job | None:
    m = _OBJECT_RE.match(path)
    if m is None:
        return None
    owner = emu._owner("batch" if m[1] == "batches" else "collection", m[2])
    if owner is None:
        return None
    with emu._lock:
        return next((j for j in owner.jobs if j.export_id == m[3] and not j.deleted), None)


def _serve_archive(
    job: Job, range_header: str | None
) -> tuple[Reply, tuple[Path, int, int] | None]:
    assert job.archive is not None
    size = job.size
    headers = {
        "Content-Type": "application/zip",
        "ETag": job.etag,
        "Accept-Ranges": "bytes",
        "Last-Modified": formatdate(job.created_at, usegmt=True),
    }
    span = parse_range(range_header, size)
    if span is False:
        reply = s3_error(416, "InvalidRange", "The requested range is not satisfiable")
        reply.headers["Content-Range"] = f"bytes */{size}"
        return reply, None
    if span is None:
        headers["Content-Length"] = str(size)
        return Reply(200, None, headers), (job.archive, 0, size)
    start, end = span
    headers["Content-Length"] = str(end - start + 1)
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return Reply(206, None, headers), (job.archive, start, end - start + 1)


def parse_range(header: str | None, size: int) -> tuple[int, int] | Literal[False] | None:
    """``(start, end)`` inclusive; ``None`` to serve everything; ``False`` if unsatisfiable."""
    if not header:
        return None
    m = _RANGE_RE.fullmatch(header.strip())
    if not m or not (m[1] or m[2]):
        return None
    if m[1]:
        start = int(m[1])
        end = int(m[2]) if m[2] else size - 1
        if start >= size:
            return False
        if end < start:
            return None
        return start, min(end, size - 1)
    suffix = int(m[2])
    if suffix == 0 or size == 0:
        return False
    return max(0, size - suffix), size - 1
