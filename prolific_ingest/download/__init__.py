"""Download an export archive from its presigned URL (no token, ever).

The download host is not the API host: requests go through a separate session that
never carries an ``Authorization`` header (S3-style stores reject it, and it would
hand the API token to a storage host). Bytes are streamed in chunks to ``dest``
(any fsspec URL), hashed on the fly, resumed with ``Range`` after a dropped
connection, and checked against ``Content-Length`` and an md5-style ``ETag``.

Socket timeouts only bound each read, so a host that drips bytes would keep a download
going forever. The stall rule bounds it: an attempt that receives fewer than
``stall_min_rate`` bytes per second over ``stall_timeout`` seconds (status line and
headers included) is abandoned by a watchdog and resumed with ``Range`` within the
retry budget; a stalled attempt never renews that budget.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from .._http.retry import RetryPolicy, RetryState
from .._http.scrub import redact_transport_logs
from .._http.watchdog import StallRule, guarded_session
from .._progress import make_progress
from .._urls import check_download_url
from .._version import refuse_unknown, warn_deprecated
from ..cache._sink import Sink
from ..config import Settings
from ..errors import redact_url
from ._attempt import MAX_REFRESHES, Download

__all__ = ["MAX_REFRESHES", "STALL_MIN_RATE", "STALL_TIMEOUT", "DownloadResult", "download_archive"]

logger = logging.getLogger(__name__)
# urllib3 logs each request line at DEBUG, a presigned URL's signature included.
redact_transport_logs()

#: Default stall rule: fewer than STALL_MIN_RATE bytes/s over STALL_TIMEOUT seconds.
STALL_TIMEOUT = Settings.stall_timeout
STALL_MIN_RATE = Settings.stall_min_rate


@dataclass(frozen=True)
class DownloadResult:
    """What was downloaded.

    Attributes
    ----------
    path : str
        The destination (as given).
    size : int
        Bytes written.
    etag : str or None
        The object's ETag (without quotes), if the host sent one.
    sha256 : str
        Hex SHA-256 of the bytes written.
    """

    path: str
    size: int
    etag: str | None
    sha256: str


@dataclass(frozen=True)
class _Transport:
    """What one download takes from :class:`~prolific_ingest.Settings` (never the token)."""

    verify: bool | str
    timeout: tuple[float, float]
    stall_timeout: float
    stall_min_rate: float

    @classmethod
    def of(cls, settings: Settings, deprecated: Mapping[str, Any]) -> _Transport:
        """The transport of ``settings``, with the deprecated keywords applied over it."""
        refuse_unknown("download_archive", deprecated, _DEPRECATED)
        for name in deprecated:
            warn_deprecated(f"download_archive({name}=...)", _DEPRECATED[name], stacklevel=3)
        timeout = deprecated.get("timeout", (settings.connect_timeout, settings.read_timeout))
        return cls(
            verify=deprecated.get("verify", settings.ca_bundle or True),
            timeout=(float(timeout[0]), float(timeout[1])),
            stall_timeout=float(deprecated.get("stall_timeout", settings.stall_timeout)),
            stall_min_rate=float(deprecated.get("stall_min_rate", settings.stall_min_rate)),
        )


_DEPRECATED = {
    "verify": "pass settings=Settings(ca_bundle=...)",
    "timeout": "pass settings=Settings(connect_timeout=..., read_timeout=...)",
    "stall_timeout": "pass settings=Settings(stall_timeout=...)",
    "stall_min_rate": "pass settings=Settings(stall_min_rate=...)",
}


def download_archive(
    url: str,
    dest: str,
    *,
    settings: Settings | None = None,
    session: requests.Session | None = None,
    export_id: str | None = None,
    refresh: Callable[[], str] | None = None,
    retry: RetryPolicy | None = None,
    progress: bool | str | None = None,
    chunk_size: int = 1 << 16,
    storage_options: Mapping[str, Any] | None = None,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    **deprecated: Any,
) -> DownloadResult:
    """Stream a presigned archive URL into ``dest`` and verify it.

    Parameters
    ----------
    url : str
        The presigned URL (``https``; ``http`` only for loopback hosts).
    dest : str
        Local path or fsspec URL to write (usually ``ExportCache.staging(...)``).
    settings : Settings, optional
        The transport settings: ``connect_timeout`` and ``read_timeout`` (the read
        timeout applies to each read), ``ca_bundle`` (TLS verification), and the stall
        rule ``stall_timeout`` / ``stall_min_rate``: an attempt that receives fewer than
        ``stall_min_rate`` bytes per second on average over ``stall_timeout`` seconds
        is abandoned (and resumed with ``Range`` while the retry budget lasts). Its
        status line and headers count as no progress, so a host that drips them is
        abandoned too. Default :class:`~prolific_ingest.Settings` ``()``; the token is
        never read.
    session : requests.Session, optional
        Session to reuse; any ``Authorization`` it would add is stripped. The stall
        rule covers its bodies; its headers only with ``GuardedAdapter`` mounted.
    export_id : str, optional
        Named in errors.
    refresh : callable, optional
        Returns a fresh URL when the host refuses the current one (403, expired);
        called at most :data:`MAX_REFRESHES` times.
    retry : RetryPolicy, optional
        For 5xx, 429 and connection errors (default :class:`RetryPolicy`).
    progress : bool, str or None
        Byte progress bar (see ``make_progress``).
    chunk_size : int
        Bytes per read; the archive is never held in memory.
    storage_options : mapping, optional
        fsspec options for ``dest``.
    sleep, clock : callable
        Injectable ``time.sleep`` / ``time.monotonic``.
    **deprecated
        ``verify=``, ``timeout=(connect, read)``, ``stall_timeout=`` and
        ``stall_min_rate=`` still work and warn (deprecated since 0.2): give them in
        ``settings=``.

    Returns
    -------
    DownloadResult

    Raises
    ------
    DownloadExpiredError
        Refused as expired and no fresh URL.
    IntegrityError
        Size or md5-ETag mismatch.
    DownloadError
        Any other failure, a stall after the retry budget included (``dest`` is
        removed).

    Notes
    -----
    After a dropped connection the download resumes with ``Range: bytes=<n>-`` and
    ``If-Range: <etag>``, appending to the still-open ``dest`` (local or remote); a
    changed object (other ETag, or a ``200``) restarts from byte 0.
    """
    check_download_url(url, export_id)
    transport = _Transport.of(settings or Settings(), deprecated)
    own = session is None
    http = guarded_session() if session is None else session
    stall = StallRule(window=transport.stall_timeout, min_rate=transport.stall_min_rate)
    sink = Sink(dest, storage_options)
    state = RetryState(retry or RetryPolicy(), sleep=sleep, clock=clock)
    try:
        with make_progress(progress, desc=f"download {export_id or ''}".strip()) as bar:
            job = Download(
                url,
                sink,
                session=http,
                export_id=export_id,
                refresh=refresh,
                state=state,
                bar=bar,
                chunk_size=chunk_size,
                verify=transport.verify,
                timeout=transport.timeout,
                stall=stall,
            )
            job.run()
            job.verify_result()
    except BaseException:
        sink.remove()
        raise
    finally:
        if own:
            http.close()
    logger.info("download %s: %d bytes", redact_url(job.url), sink.written)
    return DownloadResult(
        path=dest, size=sink.written, etag=job.etag, sha256=sink.sha256.hexdigest()
    )
