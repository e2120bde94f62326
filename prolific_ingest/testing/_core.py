"""What the emulator's request handlers share: settings, owners, jobs, clock, request log.

:class:`EmulatorCore` sits below the handlers (``_routes``, ``_storage``, ``_http``),
which take it; :class:`~prolific_ingest.testing.Emulator` extends it with the public
surface (lifecycle, data, presentation). No handler imports the emulator.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .faults import Faults
from .state import Owner, Signer

__all__ = ["EmulatorCore", "RequestRecord"]

_REDACTED = "<redacted>"


@dataclass(frozen=True)
class RequestRecord:
    """One request received by the emulator (secrets redacted).

    ``status`` is the status sent, or ``0`` when the connection was dropped without
    an answer. ``host`` is ``"api"`` or ``"download"``. ``request_id`` is the
    ``X-Request-Id`` the API host answered with (``None`` on the download host and
    for a dropped answer).
    """

    host: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    status: int
    time: float
    request_id: str | None = None


class EmulatorCore:
    """The state behind both hosts; :class:`Emulator` documents the settings."""

    def __init__(
        self,
        *,
        polls_until_complete: int,
        legacy_post: bool,
        url_ttl: float,
        token: str | None,
        collections_enabled: bool,
    ) -> None:
        self.polls_until_complete = polls_until_complete
        self.legacy_post = legacy_post
        self.url_ttl = url_ttl
        self.collections_enabled = collections_enabled
        self.token = token or f"emu-{secrets.token_urlsafe(24)}"
        self.faults = Faults()
        self.download_url = ""
        self._workdir = Path()
        self._lock = threading.RLock()
        self._owners: dict[tuple[str, str], Owner] = {}
        self._requests: list[RequestRecord] = []
        self._requests_lock = threading.Lock()
        self._offset = 0.0
        self._seq = 0
        self._signer = Signer()

    def _now(self) -> float:
        return time.time() + self._offset

    def _owner(self, kind: str | None, owner_id: str) -> Owner | None:
        with self._lock:
            if kind is not None:
                return self._owners.get((kind, owner_id))
            return self._owners.get(("batch", owner_id)) or self._owners.get(
                ("collection", owner_id)
            )

    def _clean(self, key: str, value: str) -> str:
        if key.lower() in ("authorization", "x-amz-signature") or self.token in value:
            return _REDACTED
        return value

    def _log_request(
        self,
        host: str,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        status: int,
        started: float,
        request_id: str | None = None,
    ) -> None:
        record = RequestRecord(
            host,
            method,
            _REDACTED if self.token in path else path,
            {k: self._clean(k, v) for k, v in query.items()},
            {k: self._clean(k, v) for k, v in headers.items()},
            status,
            started,
            request_id,
        )
        with self._requests_lock:
            self._requests.append(record)
