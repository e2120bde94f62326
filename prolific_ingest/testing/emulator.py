"""The Prolific export API emulator: an API host and a presigned-download host on loopback."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from . import _content as c
from ._core import EmulatorCore, RequestRecord
from ._http import EmulatorServer
from ._spec import ExportSpec
from .generator import GroundTruth
from .state import Owner, parse_filter

__all__ = ["Emulator", "RequestRecord", "serve"]

logger = logging.getLogger(__name__)

# Set per export (the filter), per call (keep_rows) or by the emulator (the snapshots).
_NOT_OPTIONS = frozenset({"submissions", "study_id", "since", "until", "keep_rows", "owner_id"})
_BATCH_ONLY = frozenset({"tasks_per_submission", "raters_per_task"})


class Emulator(EmulatorCore):
    """Prolific's export API and its S3-style download host, served on 127.0.0.1.

    Parameters
    ----------
    polls_until_complete : int
        A job answers ``generating`` to this many status polls, then ``complete``.
    tls : bool
        Serve the download host over HTTPS (``https://localhost:<port>``) with a
        throw-away CA; :attr:`ca_bundle` is its PEM path.
    legacy_post : bool
        POST answers ``200`` with the complete body (the older behaviour).
    url_ttl : float
        Lifetime of presigned URLs in seconds (Prolific: one hour).
    token : str or None
        The API token to accept (random ``emu-…`` by default).
    collections_enabled : bool
        ``False``: every collection endpoint answers ``403`` (feature not enabled).
    workdir : str, Path or None
        Where archives are stored (a temporary directory by default).
    port, download_port : int
        Ports of the two hosts (``0``: free ports).
    host : str
        Interface to bind (loopback).
    """

    def __init__(
        self,
        *,
        polls_until_complete: int = 2,
        tls: bool = False,
        legacy_post: bool = False,
        url_ttl: float = 3600.0,
        token: str | None = None,
        collections_enabled: bool = True,
        workdir: str | Path | None = None,
        port: int = 0,
        download_port: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(
            polls_until_complete=polls_until_complete,
            legacy_post=legacy_post,
            url_ttl=url_ttl,
            token=token,
            collections_enabled=collections_enabled,
        )
        self._defaults = {
            "polls_until_complete": polls_until_complete,
            "legacy_post": legacy_post,
            "url_ttl": url_ttl,
            "collections_enabled": collections_enabled,
        }
        self.tls = tls
        self._host, self._ports = host, (port, download_port)
        self._own_workdir = workdir is None
        if workdir is not None:
            self._workdir = Path(workdir)
        self._servers: list[EmulatorServer] = []
        self._threads: list[threading.Thread] = []
        self.ca_bundle: str | None = None
        self.base_url = ""

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> Self:
        """Start both servers (idempotent) and return the emulator."""
        if self._servers:
            return self
        if self._own_workdir:
            self._workdir = Path(tempfile.mkdtemp(prefix="prolific-emulator-"))
        self._workdir.mkdir(parents=True, exist_ok=True)
        context = None
        if self.tls:
            from ._tls import make_tls

            context, self.ca_bundle = make_tls(self._workdir)
        api = EmulatorServer((self._host, self._ports[0]), self, "api", None)
        dl = EmulatorServer((self._host, self._ports[1]), self, "download", context)
        self._servers = [api, dl]
        self.base_url = f"http://{self._host}:{api.server_address[1]}"
        dl_host = "localhost" if self.tls else self._host
        self.download_url = f"{'https' if self.tls else 'http'}://{dl_host}:{dl.server_address[1]}"
        for server in self._servers:
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"prolific-emulator-{server.host_name}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        logger.info("emulator: API at %s, downloads at %s", self.base_url, self.download_url)
        return self

    def stop(self) -> None:
        """Stop both servers and remove the temporary work directory."""
        for server in self._servers:
            server.shutdown()
            server.close_connections()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers, self._threads = [], []
        if self._own_workdir and self._workdir != Path():
            shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget every batch, collection, job, fault and request; undo ``advance_time``."""
        with self._lock:
            for owner in self._owners.values():
                for job in owner.jobs:
                    if job.archive is not None:
                        job.archive.unlink(missing_ok=True)
            self._owners.clear()
            self._offset = 0.0
            for name, value in self._defaults.items():
                setattr(self, name, value)
        self.faults.clear()
        self.clear_requests()

    # ---- clock -----------------------------------------------------------------------

    def now(self) -> float:
        """The emulator's (virtual) time as a POSIX timestamp."""
        return self._now()

    def advance_time(self, seconds: float) -> None:
        """Move the virtual clock forward (URL expiry, ``expires_at``, ``created_at``)."""
        with self._lock:
            self._offset += seconds

    # ---- data ------------------------------------------------------------------------

    def _add(
        self,
        kind: str,
        spec: ExportSpec | None,
        keywords: dict[str, Any],
        access: bool,
        options: dict[str, Any],
    ) -> str:
        if spec is None:
            bad = _NOT_OPTIONS & set(options) | (
                _BATCH_ONLY & set(options) if kind != "batch" else set()
            )
            if bad:
                msg = f"not a generator option here: {', '.join(sorted(bad))}"
                raise TypeError(msg)
            spec = ExportSpec(seed=keywords["seed"] or 0, owner_id=keywords["owner_id"], **options)
        elif options or any(v is not None for v in keywords.values()):
            names = ", ".join(
                sorted({*options, *(k for k, v in keywords.items() if v is not None)})
            )
            msg = f"add_{kind}() takes an ExportSpec or keyword options, not both ({names})"
            raise TypeError(msg)
        with self._lock:
            if spec.owner_id is None:
                n = len(self._owners)
                owner_id = c.uuid_from(c.rng_for(spec.seed, kind, "emulator-id", n))
                spec = replace(spec, owner_id=owner_id)
            if (kind, spec.owner_id) in self._owners:
                msg = f"{kind} {spec.owner_id} already exists"
                raise ValueError(msg)
        owner = Owner.create(kind, spec, access=access)
        with self._lock:
            self._owners[(kind, owner.owner_id)] = owner
        return owner.owner_id

    def add_batch(
        self,
        spec: ExportSpec | None = None,
        *,
        seed: int | None = None,
        batch_id: str | None = None,
        access: bool = True,
        **options: Any,
    ) -> str:
        """Add a batch, described by ``spec`` or by its fields as keywords. Returns its id.

        ``seed`` (default 0), ``batch_id`` (default: derived from the seed) and
        ``options`` are :class:`ExportSpec` fields. ``access=False`` makes every call
        about the batch answer ``403``.
        """
        return self._add("batch", spec, {"seed": seed, "owner_id": batch_id}, access, options)

    def add_collection(
        self,
        spec: ExportSpec | None = None,
        *,
        seed: int | None = None,
        collection_id: str | None = None,
        access: bool = True,
        **options: Any,
    ) -> str:
        """Add a collection, like :meth:`add_batch` (without task options). Returns its id."""
        keywords = {"seed": seed, "owner_id": collection_id}
        return self._add("collection", spec, keywords, access, options)

    def _require(self, owner_id: str) -> Owner:
        owner = self._owner(None, owner_id)
        if owner is None:
            msg = f"unknown batch or collection: {owner_id}"
            raise KeyError(msg)
        return owner

    def add_submissions(
        self, owner_id: str, n: int, *, created_after: datetime | None = None
    ) -> None:
        """Append ``n`` new submissions, all newer than every existing response."""
        owner = self._require(owner_id)
        with self._lock:
            owner.add_submissions(n, created_after)

    def ground_truth(
        self,
        owner_id: str,
        *,
        study_id: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
    ) -> GroundTruth:
        """The truth of an export with that filter, filtered exactly as the server does."""
        owner = self._require(owner_id)
        query = {"study_id": study_id, "from": since, "to": until}
        _, flt = parse_filter(
            {
                k: (v.isoformat() if isinstance(v, datetime) else v)
                for k, v in query.items()
                if v is not None
            }
        )
        with self._lock:
            specs = list(owner.specs)
        truth: GroundTruth = owner.build(None, flt, specs, keep_rows=True)
        return truth

    # ---- jobs ------------------------------------------------------------------------

    def jobs(self, owner_id: str) -> list[dict[str, Any]]:
        """The owner's jobs, newest first, as the list endpoint shows them (deleted excluded)."""
        owner = self._require(owner_id)
        with self._lock:
            return [j.info() for j in owner.jobs if not j.deleted]

    def delete_archive(self, owner_id: str, export_id: str) -> None:
        """Storage loses the archive: the job reports ``failed`` from now on."""
        owner = self._require(owner_id)
        with self._lock:
            for job in owner.jobs:
                if job.export_id == export_id:
                    job.fail = True
                    if job.status != "generating":
                        job.lose_archive()
                    return
        msg = f"unknown export job: {export_id}"
        raise KeyError(msg)

    # ---- request log -----------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request received by either host, oldest first (a copy)."""
        with self._requests_lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Empty the request log."""
        with self._requests_lock:
            self._requests.clear()

    # ---- presentation ----------------------------------------------------------------

    def describe(self) -> str:
        """Multi-line text: URLs, token, owners and the environment to point a client here."""
        with self._lock:
            owners = sorted(self._owners)
        lines = [
            "Prolific API emulator",
            f"  API base URL : {self.base_url}",
            f"  Download host: {self.download_url}",
            f"  Token        : {self.token}",
        ]
        if self.ca_bundle:
            lines.append(f"  CA bundle    : {self.ca_bundle}")
        lines += [f"  {kind:<12} : {owner_id}" for kind, owner_id in owners]
        lines += [
            "Point a client at it with:",
            f"  export PROLIFIC_API_URL={self.base_url}",
            f"  export PROLIFIC_TOKEN={self.token}",
        ]
        if self.ca_bundle:
            lines.append(f"  export PROLIFIC_CA_BUNDLE={self.ca_bundle}")
        return "\n".join(lines)


def serve(
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    seed: int = 0,
    n_batches: int = 1,
    n_collections: int = 0,
    announce: Callable[[str], object] | None = None,
    stop_event: threading.Event | None = None,
    **kw: Any,
) -> None:
    """Run an emulator until Ctrl-C (or until ``stop_event`` is set).

    Adds ``n_batches`` batches and ``n_collections`` collections (seeds ``seed``,
    ``seed + 1`` …), then passes :meth:`Emulator.describe` to ``announce`` (the CLI
    passes ``print``; by default it is logged at INFO). ``kw`` goes to :class:`Emulator`.
    """
    with Emulator(port=port, host=host, **kw) as emu:
        for i in range(n_batches):
            emu.add_batch(seed=seed + i)
        for i in range(n_collections):
            emu.add_collection(seed=seed + i)
        text = emu.describe()
        if announce is not None:
            announce(text)
        else:
            logger.info("%s", text)
        stop = stop_event or threading.Event()
        try:
            while not stop.wait(0.2):
                pass
        except KeyboardInterrupt:
            logger.info("emulator: stopped")
