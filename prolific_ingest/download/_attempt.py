"""One download's attempts: the requests, Range resume, URL refresh and the checks.

:class:`Download` is the state of one :func:`~prolific_ingest.download_archive` call; it is
kept out of the public function so that stays short.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import requests
import urllib3

from .._http.retry import RetryState, is_retriable, parse_retry_after
from .._http.watchdog import StallRule, Watchdog
from .._progress import ProgressLike
from .._urls import check_download_url
from .._version import __version__
from ..cache._sink import Sink
from ..errors import DownloadError, DownloadExpiredError, IntegrityError, redact_url

logger = logging.getLogger("prolific_ingest.download")

#: How many times an expired URL is exchanged for a fresh one before giving up.
MAX_REFRESHES = 3
_USER_AGENT = f"prolific-ingest/{__version__}"
_MD5_ETAG = re.compile(r"[0-9a-f]{32}")
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


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


class Download:
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
