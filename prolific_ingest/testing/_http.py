"""HTTP plumbing of the emulator: threaded servers and the two request handlers."""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from . import _routes, _storage
from ._core import EmulatorCore
from ._reply import Reply
from .faults import API_ERROR_KINDS

__all__ = ["REQUEST_ID_HEADER", "EmulatorServer"]

#: The header naming each API answer (Prolific's documentation names none; this is
#: the usual spelling, one of those the client reads).
REQUEST_ID_HEADER = "X-Request-Id"

logger = logging.getLogger(__name__)

_CHUNK = 64 * 1024
_QUERY_RE = re.compile(r"\?\S*")


class _DripWriter:
    """Stands in for a handler's ``wfile``: writes at ``bytes_per_second`` (``Faults.drip``)."""

    def __init__(self, raw: Any, params: dict[str, Any]) -> None:
        self.raw = raw
        self.rate = float(params["bytes_per_second"])
        self.fast_left = int(params["after_bytes"])
        self.until = time.monotonic() + float(params["max_seconds"])
        self.piece = max(1, int(self.rate / 10))

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        if self.fast_left:
            fast = view[: self.fast_left]
            self.raw.write(fast)
            self.fast_left -= len(fast)
            view = view[len(fast) :]
        while len(view):
            if time.monotonic() > self.until:
                msg = "drip fault: max_seconds reached"
                raise ConnectionAbortedError(msg)
            piece = view[: self.piece]
            self.raw.write(piece)
            view = view[len(piece) :]
            time.sleep(len(piece) / self.rate)
        return len(data)

    def flush(self) -> None:
        self.raw.flush()


class EmulatorServer(ThreadingHTTPServer):
    """A threaded HTTP(S) server bound to one emulator host (``api`` or ``download``)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        emulator: EmulatorCore,
        host_name: str,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.emulator = emulator
        self.host_name = host_name
        self.ssl_context = ssl_context
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        handler = _ApiHandler if host_name == "api" else _DownloadHandler
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Handle one connection (TLS handshake in the worker thread)."""
        conn = request
        try:
            if self.ssl_context is not None:
                conn = self.ssl_context.wrap_socket(request, server_side=True)
            with self._conns_lock:
                self._conns.add(conn)
            super().finish_request(conn, client_address)
        except (OSError, ssl.SSLError) as exc:
            logger.debug("emulator %s: connection ended: %s", self.host_name, exc)
        finally:
            with self._conns_lock:
                self._conns.discard(conn)
            if conn is not request:
                conn.close()

    def close_connections(self) -> None:
        """Shut down every open client connection (used on stop)."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _BaseHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ProlificEmulator/1.0"
    timeout = 30
    server: EmulatorServer

    def log_message(self, format: str, *args: Any) -> None:
        """Route http.server's access log to logging (never to stderr), without query strings.

        A presigned URL's query string is its signature: like a client, the emulator
        never logs it.
        """
        line = _QUERY_RE.sub("?<redacted>", format % args)
        logger.debug("emulator %s: %s", self.server.host_name, line)

    def _dripping(self, method: str, path: str) -> Any:
        """Swap ``wfile`` for a dripping one when a drip fault fires; return the original."""
        rule = self.server.emulator.faults.take(
            "drip", host=self.server.host_name, method=method, path=path
        )
        original = self.wfile
        if rule is not None:
            self.wfile = _DripWriter(original, rule.params)  # type: ignore[assignment]
        return original

    def _begin(self) -> tuple[str, dict[str, str], float]:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        return parts.path, query, time.time()

    def _record(
        self,
        path: str,
        query: dict[str, str],
        status: int,
        started: float,
        request_id: str | None = None,
    ) -> bool:
        self.server.emulator._log_request(
            self.server.host_name,
            self.command,
            path,
            query,
            dict(self.headers.items()),
            status,
            started,
            request_id,
        )
        return True

    def _send(self, reply: Reply, *, body: bool = True) -> None:
        data = reply.payload()
        self.send_response(reply.status)
        if reply.body is not None:
            self.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if "Content-Length" not in reply.headers:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body and data:
            self.wfile.write(data)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _latency(self, method: str, path: str) -> None:
        rule = self.server.emulator.faults.take(
            "latency", host=self.server.host_name, method=method, path=path
        )
        if rule is not None:
            time.sleep(float(rule.params["seconds"]))


class _ApiHandler(_BaseHandler):
    def _handle(self) -> None:
        path, query, started = self._begin()
        emu, method, logged = self.server.emulator, self.command, False
        wfile = self._dripping(method, path)
        try:
            self._latency(method, path)
            fault = emu.faults.take(API_ERROR_KINDS, host="api", method=method, path=path)
            if fault is not None:
                auth = self.headers.get("Authorization")
                reply = _routes.fault_reply(emu, fault, auth, self.path)
            else:
                reply = _routes.api(emu, method, path, query, self.headers.get("Authorization"))
                if emu.faults.take("drop_api_response", host="api", method=method, path=path):
                    logged = self._record(path, query, 0, started)
                    self._drop()
                    return
            # Every answer of the API host carries an id, as a production API's would.
            rid = reply.headers.setdefault(REQUEST_ID_HEADER, f"emu-req-{secrets.token_hex(8)}")
            # logged before answering, so a client that got the answer finds it in the log
            logged = self._record(path, query, reply.status, started, rid)
            self._send(reply)
        finally:
            self.wfile = wfile
            if not logged:
                self._record(path, query, 0, started)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _handle


class _DownloadHandler(_BaseHandler):
    def _handle(self) -> None:
        path, query, started = self._begin()
        emu, logged = self.server.emulator, False
        wfile = self._dripping(self.command, path)
        try:
            self._latency(self.command, path)
            headers = dict(self.headers.items())
            reply, served = _storage.download(emu, self.command, path, query, headers)
            logged = self._record(path, query, reply.status, started)
            if served is None:
                self._send(reply, body=self.command != "HEAD")
                return
            archive, start, length = served
            self._send(Reply(reply.status, None, reply.headers))
            if self.command == "GET":
                self._stream(archive, start, length)
        finally:
            self.wfile = wfile
            if not logged:
                self._record(path, query, 0, started)

    def _stream(self, archive: Any, start: int, length: int) -> None:
        faults = self.server.emulator.faults
        drop = faults.take("drop_download", host="download")
        corrupt = faults.take("corrupt_download", host="download")
        cap = faults.take("bandwidth", host="download")
        drop_after = int(drop.params["after_bytes"]) if drop else None
        corrupt_at = int(corrupt.params["offset"]) if corrupt else None
        bps = int(cap.params["bytes_per_second"]) if cap else None
        sent, began = 0, time.monotonic()
        with open(archive, "rb") as fh:
            fh.seek(start)
            while sent < length:
                n = min(_CHUNK, length - sent)
                if bps:
                    n = min(n, max(1, bps // 20))
                if drop_after is not None:
                    n = min(n, drop_after - sent)
                    if n <= 0:
                        break
                chunk = fh.read(n)
                if not chunk:
                    break
                if corrupt_at is not None and sent <= corrupt_at < sent + len(chunk):
                    buf = bytearray(chunk)
                    buf[corrupt_at - sent] ^= 0xFF
                    chunk = bytes(buf)
                self.wfile.write(chunk)
                sent += len(chunk)
                if bps:
                    delay = began + sent / bps - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
        if drop_after is not None and sent < length:
            self._drop()

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _handle
