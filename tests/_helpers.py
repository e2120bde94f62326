"""Helpers shared by the test modules: a fake clock, a quiet loopback HTTP stub server, and
raw requests to the emulator (to see a fault on the wire, without the library's client)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from prolific_ingest.archive import open_archive
from prolific_ingest.errors import BadRecordError
from prolific_ingest.tables import ExportTables, build_tables
from prolific_ingest.testing import Emulator


class FakeClock:
    """A monotonic clock whose ``sleep`` only records the delay and advances ``now``."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-request are part of these tests


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on a free 127.0.0.1 port in a thread; yields ``http://127.0.0.1:<port>``."""
    server = QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def logged(emu: Emulator, n: int) -> list[Any]:
    """The request log once it holds ``n`` records (the emulator logs just after answering)."""
    deadline = time.monotonic() + 10.0
    while len(emu.requests) < n and time.monotonic() < deadline:
        time.sleep(0.005)
    return emu.requests


#: The API path prefix the emulator serves.
PREFIX = "/api/v1/data-collection"


def auth_header(emu: Emulator) -> dict[str, str]:
    """The header that authenticates a raw request to the emulator's API host."""
    return {"Authorization": f"Token {emu.token}"}


def export_url(emu: Emulator, batch: str, *parts: str) -> str:
    """The export endpoint of ``batch`` (with ``parts``: ``/<export_id>``)."""
    return "/".join([f"{emu.base_url}{PREFIX}/batches/{batch}/export", *parts])


def post_export(emu: Emulator, batch: str) -> requests.Response:
    """Request an export of ``batch`` with a raw POST."""
    return requests.post(export_url(emu, batch), headers=auth_header(emu), timeout=30)


def poll_export(emu: Emulator, batch: str, export_id: str) -> dict[str, Any]:
    """One raw status poll; it must answer 200."""
    r = requests.get(export_url(emu, batch, export_id), headers=auth_header(emu), timeout=30)
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    return body


def complete_url(emu: Emulator, batch: str) -> tuple[str, str]:
    """Request an export that completes at the first poll; its id and download URL."""
    export_id = post_export(emu, batch).json()["export_id"]
    body = poll_export(emu, batch, export_id)
    assert body["status"] == "complete"
    return export_id, body["url"]


def read_both_ways(
    path: str | Path, *, kind: str | None = None, on_bad_records: str = "raise"
) -> ExportTables:
    """Build ``path``'s tables with the block fast path and with the per-line builder only.

    The two must give identical tables (rows, order and schemas); returns them.
    """
    fast, slow = (
        _build(path, kind=kind, on_bad_records=on_bad_records, fast_path=fast_path)
        for fast_path in (True, False)
    )
    assert fast.kind == slow.kind
    assert fast.tables.keys() == slow.tables.keys()
    for name, table in fast.tables.items():
        assert table.schema == slow[name].schema, name
        assert table.equals(slow[name]), f"the fast path and the per-line builder differ in {name}"
    return slow


def bad_record_both_ways(path: str | Path, *, kind: str | None = None) -> list[BadRecordError]:
    """The :class:`BadRecordError` of each parse path; they must name the same member and line."""
    errors = []
    for fast_path in (True, False):
        try:
            _build(path, kind=kind, on_bad_records="raise", fast_path=fast_path)
        except BadRecordError as exc:
            errors.append(exc)
        else:
            raise AssertionError(f"no BadRecordError with fast_path={fast_path}")
    assert {(e.member, e.line) for e in errors} == {(errors[0].member, errors[0].line)}
    return errors


def _build(
    path: str | Path, *, kind: str | None, on_bad_records: str, fast_path: bool
) -> ExportTables:
    with open_archive(str(path), kind=kind) as archive:  # type: ignore[arg-type]
        return build_tables(archive, on_bad_records=on_bad_records, fast_path=fast_path)  # type: ignore[arg-type]
