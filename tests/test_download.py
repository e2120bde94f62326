"""download_archive over real loopback sockets: no auth, Range resume, verification, refresh.

A small scripted storage host (``http.server`` on 127.0.0.1) serves one object with
``ETag``/``Content-Length``/``Range`` like S3 does; each request can be given a fault.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import fsspec
import pytest
import requests

from prolific_ingest._http.retry import RetryPolicy
from prolific_ingest._progress import NullProgress, TqdmProgress, make_progress, resolve_progress
from prolific_ingest.cache import ArchiveFacts, ExportCache
from prolific_ingest.client import ProlificClient
from prolific_ingest.config import Secret, Settings
from prolific_ingest.download import MAX_REFRESHES, DownloadResult, download_archive
from prolific_ingest.errors import (
    ConfigurationError,
    DownloadError,
    DownloadExpiredError,
    IntegrityError,
)
from prolific_ingest.exports import (
    ExportJob,
    ExportRef,
    refresh_url,
    request_export,
    wait_for_export,
)
from prolific_ingest.testing import Emulator
from tests._helpers import FakeClock, QuietHandler, logged, serve

DATA = os.urandom(300_000)


@dataclass
class Store:
    data: bytes = DATA
    etag: str | None = None
    faults: list[tuple[str, Any]] = field(default_factory=list)  # consumed one per request
    seen: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def current_etag(self) -> str:
        return self.etag or hashlib.md5(self.data).hexdigest()


class _Handler(QuietHandler):
    store: Store
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        store = self.store
        store.seen.append(dict(self.headers.items()))
        store.paths.append(self.path)
        fault, arg = store.faults.pop(0) if store.faults else ("", None)
        if fault == "status":
            body = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
            self.send_response(arg)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if fault == "change":  # the object is replaced before this request is served
            store.data = arg
        data, etag = store.data, f'"{store.current_etag()}"'
        start = 0
        rng = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        partial = rng is not None and (if_range is None or if_range == etag) and fault != "ignore"
        if partial:
            start = int(rng.split("=")[1].split("-")[0])  # type: ignore[union-attr]
        body = data[start:]
        if fault == "corrupt":
            pos = arg - start
            body = body[:pos] + bytes([body[pos] ^ 0xFF]) + body[pos + 1 :]
        self.send_response(206 if partial else 200)
        self.send_header("Content-Length", str(len(body)))
        if store.etag != "none":
            self.send_header("ETag", etag if fault != "etag" else '"other"')
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if fault == "drop":
            self.wfile.write(body[:arg])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def store() -> Iterator[tuple[str, Store]]:
    st = Store()
    with serve(type("Handler", (_Handler,), {"store": st})) as url:
        yield f"{url}/exports/a.zip?X-Amz-Signature=SIG", st


def fetch(url: str, dest: Path | str, **kw: Any) -> DownloadResult:
    clock = kw.pop("clock", FakeClock())
    kw.setdefault("chunk_size", 16_384)
    return download_archive(url, str(dest), sleep=clock.sleep, clock=clock, **kw)


def check(result: DownloadResult, dest: Path, data: bytes = DATA) -> None:
    assert dest.read_bytes() == data
    assert result.size == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()


def test_plain_download(store: tuple[str, Store], tmp_path: Path) -> None:
    url, st = store
    result = fetch(url, tmp_path / "a.zip")
    check(result, tmp_path / "a.zip")
    assert result.etag == hashlib.md5(DATA).hexdigest()
    assert result.path == str(tmp_path / "a.zip")
    assert len(st.seen) == 1
    assert "Range" not in st.seen[0]


def test_never_sends_credentials(store: tuple[str, Store], tmp_path: Path) -> None:
    url, st = store
    session = requests.Session()
    session.headers["Authorization"] = "Token SECRET-TOKEN"
    session.auth = ("user", "password")
    fetch(url, tmp_path / "a.zip", session=session)
    assert "Authorization" not in st.seen[0]
    assert st.seen[0]["User-Agent"].startswith("prolific-ingest/")
    session.close()


@pytest.mark.parametrize(
    "bad", ["http://example.com/a.zip", "ftp://127.0.0.1/a.zip", "file:///etc/passwd"]
)
def test_https_required_except_loopback(tmp_path: Path, bad: str) -> None:
    with pytest.raises(DownloadError, match="https"):
        fetch(bad, tmp_path / "a.zip")
    assert not (tmp_path / "a.zip").exists()


def test_dropped_connection_resumes_with_range(store: tuple[str, Store], tmp_path: Path) -> None:
    url, st = store
    st.faults = [("drop", 100_000)]
    clock = FakeClock()
    result = fetch(url, tmp_path / "a.zip", clock=clock)
    check(result, tmp_path / "a.zip")
    assert len(st.seen) == 2
    resumed = st.seen[1]
    written = int(resumed["Range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < written <= 100_000
    assert resumed["If-Range"] == f'"{hashlib.md5(DATA).hexdigest()}"'
    assert len(clock.sleeps) == 1


def test_repeated_drops_with_progress_keep_going(store: tuple[str, Store], tmp_path: Path) -> None:
    url, st = store
    st.faults = [("drop", 40_000)] * 7  # more drops than max_attempts, each makes progress
    result = fetch(url, tmp_path / "a.zip", retry=RetryPolicy(max_attempts=3))
    check(result, tmp_path / "a.zip")
    assert len(st.seen) == 8


def test_drops_without_progress_give_up(store: tuple[str, Store], tmp_path: Path) -> None:
    url, st = store
    st.faults = [("drop", 0)] * 5
    with pytest.raises(DownloadError, match="3 attempt"):
        fetch(url, tmp_path / "a.zip", retry=RetryPolicy(max_attempts=3))
    assert not (tmp_path / "a.zip").exists()  # partial download removed


def test_changed_object_restarts_from_zero(store: tuple[str, Store], tmp_path: Path) -> None:
    url, st = store
    new = os.urandom(250_000)
    st.faults = [("drop", 50_000), ("change", new)]
    result = fetch(url, tmp_path / "a.zip")
    check(result, tmp_path / "a.zip", new)  # If-Range mismatch: a full 200, no mixed bytes
    assert result.etag == hashlib.md5(new).hexdigest()


def test_206_with_other_etag_restarts(store: tuple[str, Store], tmp_path: Path) -> None:
    url, st = store
    st.faults = [("drop", 50_000), ("etag", None)]
    result = fetch(url, tmp_path / "a.zip")
    check(result, tmp_path / "a.zip")
    assert "Range" in st.seen[1]
    assert "Range" not in st.seen[2]


def test_server_ignoring_range_restarts_cleanly(store: tuple[str, Store], tmp_path: Path) -> None:
    url, st = store
    st.faults = [("drop", 50_000), ("ignore", None)]
    result = fetch(url, tmp_path / "a.zip")
    check(result, tmp_path / "a.zip")
    assert len(st.seen) == 2


def test_corrupt_byte_fails_md5_etag(store: tuple[str, Store], tmp_path: Path) -> None:
    url, st = store
    st.faults = [("corrupt", 12_345)]
    with pytest.raises(IntegrityError, match="md5") as info:
        fetch(url, tmp_path / "a.zip", export_id="E1")
    assert info.value.export_id == "E1"
    assert info.value.url is not None
    assert "SIG" not in str(info.value)
    assert "SIG" not in info.value.url
    assert not (tmp_path / "a.zip").exists()


def test_multipart_etag_is_not_checked_as_md5(store: tuple[str, Store], tmp_path: Path) -> None:
    url, st = store
    st.etag = "0123456789abcdef0123456789abcdef-3"
    result = fetch(url, tmp_path / "a.zip")
    check(result, tmp_path / "a.zip")
    assert result.etag == st.etag


def test_expired_url_is_refreshed(store: tuple[str, Store], tmp_path: Path) -> None:
    url, st = store
    st.faults = [("status", 403)]
    calls: list[int] = []

    def refresh() -> str:
        calls.append(1)
        return url.replace("SIG", "FRESH")

    result = fetch(url, tmp_path / "a.zip", refresh=refresh)
    check(result, tmp_path / "a.zip")
    assert calls == [1]
    assert st.paths[1].endswith("X-Amz-Signature=FRESH")


def test_expired_mid_resume_keeps_bytes(store: tuple[str, Store], tmp_path: Path) -> None:
    url, st = store
    st.faults = [("drop", 100_000), ("status", 403)]
    result = fetch(url, tmp_path / "a.zip", refresh=lambda: url)
    check(result, tmp_path / "a.zip")
    assert "Range" in st.seen[2]


def test_expired_without_refresh(store: tuple[str, Store], tmp_path: Path) -> None:
    url, st = store
    st.faults = [("status", 403)]
    with pytest.raises(DownloadExpiredError) as info:
        fetch(url, tmp_path / "a.zip")
    assert info.value.status == 403
    assert "SIG" not in str(info.value)


def test_refreshes_are_bounded(store: tuple[str, Store], tmp_path: Path) -> None:
    url, st = store
    st.faults = [("status", 403)] * (MAX_REFRESHES + 2)
    with pytest.raises(DownloadExpiredError):
        fetch(url, tmp_path / "a.zip", refresh=lambda: url)
    assert len(st.seen) == MAX_REFRESHES + 1


def test_refresh_to_insecure_url_is_refused(store: tuple[str, Store], tmp_path: Path) -> None:
    url, st = store
    st.faults = [("status", 403)]
    with pytest.raises(DownloadError, match="https"):
        fetch(url, tmp_path / "a.zip", refresh=lambda: "http://example.com/x.zip")


def test_5xx_is_retried(store: tuple[str, Store], tmp_path: Path) -> None:
    url, st = store
    st.faults = [("status", 503), ("status", 500)]
    clock = FakeClock()
    result = fetch(url, tmp_path / "a.zip", clock=clock)
    check(result, tmp_path / "a.zip")
    assert len(clock.sleeps) == 2


def test_5xx_exhausted(store: tuple[str, Store], tmp_path: Path) -> None:
    url, st = store
    st.faults = [("status", 503)] * 5
    with pytest.raises(DownloadError, match="HTTP 503") as info:
        fetch(url, tmp_path / "a.zip", retry=RetryPolicy.none())
    assert info.value.status == 503


def test_404_is_not_retried(store: tuple[str, Store], tmp_path: Path) -> None:
    url, st = store
    st.faults = [("status", 404)]
    with pytest.raises(DownloadError, match="404"):
        fetch(url, tmp_path / "a.zip")
    assert len(st.seen) == 1


def test_connection_refused_is_retried_then_fails(tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    clock = FakeClock()
    with pytest.raises(DownloadError, match="2 attempt"):
        fetch(
            f"http://127.0.0.1:{port}/a.zip",
            tmp_path / "a.zip",
            clock=clock,
            retry=RetryPolicy(max_attempts=2),
        )
    assert len(clock.sleeps) == 1


def _check_resumed_remote(result: DownloadResult, dest: str, st: Store, **options: Any) -> None:
    with fsspec.open(dest, "rb", **options) as fh:
        assert fh.read() == DATA
    assert result.sha256 == hashlib.sha256(DATA).hexdigest()
    assert len(st.seen) == 2
    written = int(st.seen[1]["Range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < written <= 100_000  # appended to the open upload, not restarted


def test_memory_destination_resumes_after_drop(
    store: tuple[str, Store], memory_prefix: str
) -> None:
    url, st = store
    st.faults = [("drop", 100_000)]
    dest = f"{memory_prefix}/staging/a.zip"
    _check_resumed_remote(fetch(url, dest), dest, st)


def test_s3_destination_resumes_after_drop(store: tuple[str, Store], s3: Any) -> None:
    """An object-store destination keeps its upload open across the retry: the download
    resumes with Range (moto's S3 server, through s3fs), and the object is whole."""
    url, st = store
    st.faults = [("drop", 100_000)]
    dest = s3.url("staging/a.zip")
    result = fetch(url, dest, storage_options=s3.storage_options)
    _check_resumed_remote(result, dest, st, **s3.storage_options)


def test_s3_destination_restarts_cleanly_when_the_object_changed(
    store: tuple[str, Store], s3: Any
) -> None:
    url, st = store
    new = os.urandom(250_000)
    st.faults = [("drop", 50_000), ("change", new)]
    dest = s3.url("staging/a.zip")
    result = fetch(url, dest, storage_options=s3.storage_options)
    with fsspec.open(dest, "rb", **s3.storage_options) as fh:
        assert fh.read() == new  # If-Range mismatch: a full 200, no mixed bytes
    assert result.sha256 == hashlib.sha256(new).hexdigest()


def test_logs_never_show_the_query(
    store: tuple[str, Store], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, st = store
    st.faults = [("drop", 10_000), ("status", 403)]
    with caplog.at_level(logging.DEBUG, logger="prolific_ingest"):
        fetch(url, tmp_path / "a.zip", refresh=lambda: url)
    assert "SIG" not in caplog.text
    assert "/exports/a.zip" in caplog.text


def test_progress_counts_bytes(store: tuple[str, Store], tmp_path: Path, monkeypatch: Any) -> None:
    url, st = store
    bars: list[NullProgress] = []

    def fake_make(progress: Any, **kw: Any) -> NullProgress:
        bar = NullProgress(kw.get("total"))
        bars.append(bar)
        return bar

    monkeypatch.setattr("prolific_ingest.download.make_progress", fake_make)
    st.faults = [("drop", 100_000)]
    fetch(url, tmp_path / "a.zip")
    assert bars[0].total == len(DATA)
    assert bars[0].n == len(DATA)
    assert bars[0].closed


# -- _progress ------------------------------------------------------------------------------


def test_progress_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROLIFIC_INGEST_PROGRESS", raising=False)
    assert resolve_progress(False) == "off"
    assert resolve_progress(True) == "bar"
    assert resolve_progress("0") == "off"
    assert resolve_progress("on") == "bar"
    assert resolve_progress(None) == "off"  # pytest captures stderr: not a TTY
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    assert resolve_progress("auto") == "tty"
    monkeypatch.setenv("PROLIFIC_INGEST_PROGRESS", "0")
    assert resolve_progress(None) == "off"
    monkeypatch.setenv("PROLIFIC_INGEST_PROGRESS", "1")
    assert resolve_progress("auto") == "bar"
    assert resolve_progress(False) == "off"  # an explicit argument wins over the environment
    with pytest.raises(ConfigurationError):
        resolve_progress("sometimes")


def test_null_and_tqdm_progress(capsys: pytest.CaptureFixture[str]) -> None:
    with make_progress(False, total=10) as quiet:
        quiet.update(3)
        quiet.set_postfix_str("x")
    assert isinstance(quiet, NullProgress)
    assert (quiet.n, quiet.postfix, quiet.closed) == (3, "x", True)
    with make_progress(True, total=4, desc="dl", unit="poll") as bar:
        bar.update(2)
        bar.set_postfix_str("generating")
        bar.reset(total=5)
        bar.update(1)
    assert isinstance(bar, TqdmProgress)
    assert bar.bar.n == 1
    assert bar.bar.total == 5


# -- against the emulator's presigned-download host ----------------------------------------


@pytest.fixture(scope="module")
def _server() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


@pytest.fixture
def emu(_server: Emulator) -> Emulator:
    _server.reset()
    return _server


def complete_job(emu: Emulator, n: int = 30) -> tuple[ProlificClient, ExportJob]:
    ref = ExportRef("batch", emu.add_batch(seed=3, n_submissions=n))
    clock = FakeClock()
    client = ProlificClient(
        Settings(base_url=emu.base_url, token=Secret(emu.token)), sleep=clock.sleep, clock=clock
    )
    job = request_export(client, ref)
    return client, wait_for_export(client, job, sleep=clock.sleep, clock=clock)


def test_emulator_download_carries_no_token(emu: Emulator, tmp_path: Path) -> None:
    _, job = complete_job(emu)
    assert job.url is not None
    # even a session that was (wrongly) given the API credentials must not send them
    session = requests.Session()
    session.headers["Authorization"] = f"Token {emu.token}"
    result = fetch(job.url, tmp_path / "a.zip", session=session, export_id=job.export_id)
    downloads = [r for r in logged(emu, 5) if r.host == "download"]
    assert [r.status for r in downloads] == [200]
    assert all(k.lower() != "authorization" for k in downloads[0].headers)
    assert any(
        k.lower() == "authorization" for r in emu.requests if r.host == "api" for k in r.headers
    )
    assert result.size == (tmp_path / "a.zip").stat().st_size
    assert zipfile.is_zipfile(tmp_path / "a.zip")
    session.close()


def test_emulator_drop_resumes_with_range(emu: Emulator, tmp_path: Path) -> None:
    _, job = complete_job(emu)
    assert job.url is not None
    reference = fetch(job.url, tmp_path / "ref.zip")
    emu.clear_requests()
    rule = emu.faults.drop_download(after_bytes=reference.size // 2)
    result = fetch(job.url, tmp_path / "a.zip")
    assert rule.triggered == 1
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "ref.zip").read_bytes()
    assert result.sha256 == reference.sha256
    downloads = [r for r in logged(emu, 2) if r.host == "download"]
    assert len(downloads) == 2
    headers = {k.lower(): v for k, v in downloads[1].headers.items()}
    assert headers["range"].startswith("bytes=")
    assert 0 < int(headers["range"][6:].rstrip("-")) <= reference.size // 2
    assert downloads[1].status == 206


def test_emulator_corrupt_byte_is_detected(emu: Emulator, tmp_path: Path) -> None:
    _, job = complete_job(emu)
    assert job.url is not None
    emu.faults.corrupt_download(offset=100)
    with pytest.raises(IntegrityError):
        fetch(job.url, tmp_path / "a.zip", export_id=job.export_id)
    assert not (tmp_path / "a.zip").exists()


def test_emulator_expired_url_is_refreshed(emu: Emulator, tmp_path: Path) -> None:
    client, job = complete_job(emu)
    assert job.url is not None
    emu.advance_time(3700)
    fresh_urls: list[str] = []

    def refresh() -> str:
        fresh = refresh_url(client, job)
        assert fresh.url is not None
        fresh_urls.append(fresh.url)
        return fresh.url

    fetch(job.url, tmp_path / "a.zip", refresh=refresh)
    assert len(fresh_urls) == 1
    assert [r.status for r in logged(emu, 7) if r.host == "download"] == [403, 200]


def test_emulator_expired_without_refresh(emu: Emulator, tmp_path: Path) -> None:
    _, job = complete_job(emu)
    assert job.url is not None
    emu.advance_time(3700)
    with pytest.raises(DownloadExpiredError):
        fetch(job.url, tmp_path / "a.zip")


def test_emulator_download_5xx_is_retried(emu: Emulator, tmp_path: Path) -> None:
    _, job = complete_job(emu)
    assert job.url is not None
    emu.faults.download_error(status=503, times=2)
    clock = FakeClock()
    fetch(job.url, tmp_path / "a.zip", clock=clock)
    assert [r.status for r in logged(emu, 7) if r.host == "download"] == [503, 503, 200]
    assert len(clock.sleeps) == 2


def test_emulator_into_cache_has_no_secrets(emu: Emulator, tmp_path: Path) -> None:
    _, job = complete_job(emu)
    assert job.url is not None
    cache = ExportCache(str(tmp_path / "cache"))
    with cache.lock(job.ref, job.export_id):
        staging = cache.staging(job.ref, job.export_id)
        result = fetch(job.url, staging, export_id=job.export_id)
        entry = cache.commit(
            job.ref,
            job.export_id,
            staging,
            ArchiveFacts(
                filter=job.filter,
                size=result.size,
                sha256=result.sha256,
                etag=result.etag,
                source_url=job.url,
            ),
        )
    assert cache.lookup(job.ref, job.export_id, verify="full") == entry
    signature = parse_qs(urlsplit(job.url).query)
    assert signature  # the URL is presigned ...
    for path in Path(cache.root).rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            assert emu.token.encode() not in blob  # ... but neither token nor query is stored
            assert urlsplit(job.url).query.encode() not in blob
    assert entry.manifest["source_host"] == "127.0.0.1"


def test_emulator_tls_download_with_ca_bundle(tmp_path: Path) -> None:
    pytest.importorskip("trustme")
    with Emulator(tls=True) as emu:
        _, job = complete_job(emu, n=2)
        assert job.url is not None
        assert job.url.startswith("https://localhost:")
        assert emu.ca_bundle is not None
        result = fetch(job.url, tmp_path / "a.zip", settings=Settings(ca_bundle=emu.ca_bundle))
        assert result.size == (tmp_path / "a.zip").stat().st_size
        with pytest.warns(DeprecationWarning, match=r"verify=.*settings=Settings\(ca_bundle"):
            old = fetch(job.url, tmp_path / "old.zip", verify=emu.ca_bundle)
        assert old.sha256 == result.sha256  # the old spelling still verifies with the bundle
        with pytest.raises(DownloadError):  # the system trust store does not know this CA
            fetch(job.url, tmp_path / "b.zip", retry=RetryPolicy.none())


def test_transport_keywords_moved_to_settings_still_work_and_warn(
    store: tuple[str, Store], tmp_path: Path
) -> None:
    url, _ = store
    for old in ({"timeout": (5.0, 30.0)}, {"stall_timeout": 30.0}, {"stall_min_rate": 1.0}):
        with pytest.warns(DeprecationWarning, match="settings=Settings"):
            result = fetch(url, tmp_path / f"{next(iter(old))}.zip", **old)
        assert result.size == (tmp_path / f"{next(iter(old))}.zip").stat().st_size


def test_unknown_keyword_is_a_type_error(store: tuple[str, Store], tmp_path: Path) -> None:
    url, _ = store
    with pytest.raises(TypeError, match="verfy"):
        fetch(url, tmp_path / "a.zip", verfy=False)
    assert not (tmp_path / "a.zip").exists()


def test_settings_stall_rule_abandons_a_dripping_host(tmp_path: Path) -> None:
    """The stall rule comes from ``settings=``: a host sending too slowly is abandoned."""
    with Emulator() as emu:
        _, job = complete_job(emu, n=2)
        assert job.url is not None
        emu.faults.drip(bytes_per_second=64, host="download")
        strict = Settings(stall_timeout=0.5, stall_min_rate=10_000.0)
        with pytest.raises(DownloadError, match="stalled"):
            download_archive(
                job.url, str(tmp_path / "a.zip"), settings=strict, retry=RetryPolicy.none()
            )
        assert not (tmp_path / "a.zip").exists()
