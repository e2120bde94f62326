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
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
import urllib3

from ._http.retry import RetryPolicy, RetryState, is_retriable, parse_retry_after
from ._http.scrub import redact_transport_logs
from ._http.watchdog import StallRule, Watchdog, guarded_session
from ._progress import ProgressLike, make_progress
from ._urls import check_download_url
from ._version import __version__
from .cache._sink import Sink
from .errors import DownloadError, DownloadExpiredError, IntegrityError, redact_url

__all__ = ["MAX_REFRESHES", "STALL_MIN_RATE", "STALL_TIMEOUT", "DownloadResult", "download_archive"]

logger = logging.getLogger(__name__)
# urllib3 logs each request line at DEBUG, a presigned URL's signature included.
redact_transport_logs()

#: How many times an expired URL is exchanged for a fresh one before giving up.
MAX_REFRESHES = 3
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
#: Default stall rule: fewer than STALL_MIN_RATE bytes/s over STALL_TIMEOUT seconds.
STALL_TIMEOUT = 60.0
STALL_MIN_RATE = 1024.0
_USER_AGENT = f"prolific-ingest/{__version__}"
_MD5_ETAG = re.compile(r"[0-9a-f]{32}")
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


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


def _strip_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """Request-level auth hook: make sure no credentials leave for the download host."""
    request.headers.pop("Authorization", None)
    return request


def _clean_etag(raw: str | None) -> str | None:
    if not raw:
        return None
    tag = raw.strip()
    tag = tag.removeprefix("W/")
    return tag.strip('"') or None


class _Download:
    """State of one download (kept out of the public function to keep it short)."""

    def __init__(
        self,
        url: str,
        sink: Sink,
        *,
        session: requests.Session,
        export_id: str | None,
        refresh: Callable[[], str] | None,
        state: RetryState,
        bar: ProgressLike,
        chunk_size: int,
        verify: bool | str,
        timeout: tuple[float, float],
        stall: StallRule,
    ) -> None:
        self.url = url
        self.sink = sink
        self.session = session
        self.export_id = export_id
        self.refresh = refresh
        self.state = state
        self.bar = bar
        self.chunk_size = chunk_size
        self.verify = verify
        self.timeout = timeout
        self.stall = stall
        self.refreshes = 0
        self.etag: str | None = None
        self.raw_etag: str | None = None
        self.total: int | None = None

    def _error(
        self, cls: type[DownloadError], msg: str, status: int | None = None
    ) -> DownloadError:
        return cls(msg, export_id=self.export_id, url=self.url, status=status)

    def _retry_or_raise(self, what: str, retry_after: float | None, status: int | None) -> None:
        delay = self.state.next_delay(retry_after)
        if delay is None:
            msg = (
                f"download of {redact_url(self.url)} failed after {self.state.attempts} "
                f"attempt(s): {what}"
            )
            raise self._error(DownloadError, msg, status)
        logger.info("download %s: %s; retrying in %.2fs", redact_url(self.url), what, delay)
        self.state.wait(delay)

    def _refresh_url(self, resp: requests.Response) -> None:
        if self.refresh is None or self.refreshes >= MAX_REFRESHES:
            msg = (
                f"the download URL {redact_url(self.url)} was refused ({resp.status_code}, "
                "expired?) and no fresh URL could be obtained; request the export again"
            )
            raise self._error(DownloadExpiredError, msg, resp.status_code)
        self.refreshes += 1
        logger.info("download %s: URL refused (expired?); refreshing", redact_url(self.url))
        new_url = self.refresh()
        check_download_url(new_url, self.export_id)
        self.url = new_url

    def run(self) -> None:
        while True:
            resume = self.sink.resumable
            # identity: byte ranges and Content-Length must refer to the stored object itself.
            headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
            if resume:
                headers["Range"] = f"bytes={self.sink.written}-"
                if self.raw_etag:
                    headers["If-Range"] = self.raw_etag
            with Watchdog(stall=self.stall) as dog:
                try:
                    resp = self.session.get(
                        self.url,
                        headers=headers,
                        stream=True,
                        timeout=self.timeout,
                        verify=self.verify,
                        auth=_strip_auth,
                    )
                except requests.RequestException as exc:
                    if dog.reason is not None:
                        self._retry_or_raise(self._stalled(), None, None)
                        continue
                    if not is_retriable(exc, self.state.policy):
                        msg = f"download of {redact_url(self.url)} failed: {type(exc).__name__}"
                        raise self._error(DownloadError, msg) from exc
                    self._retry_or_raise(type(exc).__name__, None, None)
                    continue
                dog.attach_response(resp)
                with resp:
                    if dog.reason is not None:  # cut mid-headers: a reply that only looks whole
                        self._retry_or_raise(self._stalled(), None, None)
                        continue
                    if self._handle_response(resp, dog, resume=resume):
                        return

    def _stalled(self) -> str:
        return (
            f"stalled at byte {self.sink.written} ({self.stall.describe()}; "
            "stall_timeout / stall_min_rate, PROLIFIC_STALL_TIMEOUT / PROLIFIC_STALL_MIN_RATE)"
        )

    def _handle_response(self, resp: requests.Response, dog: Watchdog, *, resume: bool) -> bool:
        """Stream one response; return ``True`` when the download is complete."""
        status = resp.status_code
        logger.info("download %s -> %d", redact_url(self.url), status)
        if status == 403:
            self._refresh_url(resp)
            return False
        if status in self.state.policy.retry_statuses:
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            self._retry_or_raise(f"HTTP {status}", retry_after, status)
            return False
        if status == 416 and resume:  # our byte count does not fit the object: start over
            self.sink.open(resume=False)
            return False
        if status not in (200, 206):
            msg = f"download of {redact_url(self.url)} answered HTTP {status}"
            raise self._error(DownloadError, msg, status)
        etag_raw = resp.headers.get("ETag")
        if status == 206:
            if not self._range_ok(resp, etag_raw):
                self.sink.open(resume=False)
                self.sink.close()
                self.raw_etag = None
                self.etag = None
                self._retry_or_raise("the object changed during the download", None, None)
                return False
            logger.info("download %s: resumed at byte %d", redact_url(self.url), self.sink.written)
            self.sink.open(resume=True)
        else:
            if self.sink.written:
                logger.info("download %s: restarting from byte 0", redact_url(self.url))
            self.sink.open(resume=False)
            self.raw_etag = etag_raw
            self.etag = _clean_etag(etag_raw)
            length = resp.headers.get("Content-Length")
            self.total = int(length) if length and length.isdigit() else None
            self.bar.reset(total=self.total)
        before = self.sink.written
        try:
            self._stream_body(resp, dog)
        except (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError) as exc:
            if dog.reason is not None:  # a stalled attempt never renews the budget
                self._retry_or_raise(self._stalled(), None, None)
                return False
            if self.sink.written > before:
                self.state.reset()  # progress was made: a fresh retry budget
            what = f"connection lost at byte {self.sink.written} ({type(exc).__name__})"
            self._retry_or_raise(what, None, None)
            return False
        complete = self.total is not None and self.sink.written == self.total
        if dog.reason is not None and not complete:  # the abort looked like a clean end
            self._retry_or_raise(self._stalled(), None, None)
            return False
        self.sink.close()
        return True

    def _stream_body(self, resp: requests.Response, dog: Watchdog) -> None:
        """Copy the body to the sink; ``read1`` returns what has arrived, so the
        watchdog sees progress byte by byte rather than one full chunk at a time."""
        raw = resp.raw
        while True:
            chunk = raw.read1(self.chunk_size, decode_content=True)
            if not chunk:
                return
            self.sink.write(chunk)
            dog.progress(len(chunk))
            self.bar.update(len(chunk))

    def _range_ok(self, resp: requests.Response, etag_raw: str | None) -> bool:
        match = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
        if match is None or int(match.group(1)) != self.sink.written:
            return False
        if match.group(3) != "*" and self.total is not None and int(match.group(3)) != self.total:
            return False
        return not (self.etag and _clean_etag(etag_raw) != self.etag)

    def verify_result(self) -> None:
        size = self.sink.written
        if self.total is not None and size != self.total:
            msg = (
                f"download of {redact_url(self.url)} is {size} bytes but the host announced "
                f"{self.total}"
            )
            raise self._error(IntegrityError, msg)
        if self.etag and _MD5_ETAG.fullmatch(self.etag.lower()):
            digest = self.sink.md5.hexdigest()
            if digest != self.etag.lower():
                msg = (
                    f"download of {redact_url(self.url)} is corrupt: md5 {digest} does not "
                    f"match the ETag {self.etag}"
                )
                raise self._error(IntegrityError, msg)


def download_archive(
    url: str,
    dest: str,
    *,
    session: requests.Session | None = None,
    export_id: str | None = None,
    refresh: Callable[[], str] | None = None,
    retry: RetryPolicy | None = None,
    progress: bool | str | None = None,
    chunk_size: int = 1 << 16,
    storage_options: Mapping[str, Any] | None = None,
    verify: bool | str = True,
    timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT),
    stall_timeout: float = STALL_TIMEOUT,
    stall_min_rate: float = STALL_MIN_RATE,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> DownloadResult:
    """Stream a presigned archive URL into ``dest`` and verify it.

    Parameters
    ----------
    url : str
        The presigned URL (``https``; ``http`` only for loopback hosts).
    dest : str
        Local path or fsspec URL to write (usually ``ExportCache.staging(...)``).
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
    verify : bool or str
        TLS verification (``True`` or a CA bundle path).
    timeout : tuple of float
        Socket timeouts ``(connect, read)`` in seconds; the read timeout applies to
        each read.
    stall_timeout, stall_min_rate : float
        The stall rule: an attempt that receives fewer than ``stall_min_rate`` bytes
        per second on average over ``stall_timeout`` seconds is abandoned (and
        resumed with ``Range`` while the retry budget lasts). Its status line and
        headers count as no progress, so a host that drips them is abandoned too.
    sleep, clock : callable
        Injectable ``time.sleep`` / ``time.monotonic``.

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
    own = session is None
    http = guarded_session() if session is None else session
    stall = StallRule(window=stall_timeout, min_rate=stall_min_rate)
    sink = Sink(dest, storage_options)
    state = RetryState(retry or RetryPolicy(), sleep=sleep, clock=clock)
    try:
        with make_progress(progress, desc=f"download {export_id or ''}".strip()) as bar:
            job = _Download(
                url,
                sink,
                session=http,
                export_id=export_id,
                refresh=refresh,
                state=state,
                bar=bar,
                chunk_size=chunk_size,
                verify=verify,
                timeout=timeout,
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
