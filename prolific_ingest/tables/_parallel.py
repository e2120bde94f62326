"""Parse the blocks of a member on worker processes, in order, Arrow handed back as IPC.

The fast path is pure Python over orjson objects, so threads cannot run it in parallel
(it holds the GIL). Each worker is a fresh interpreter running :mod:`._worker`
(started with ``sys.executable``, so it needs neither ``fork`` nor an importable
``__main__``: the same on Linux, macOS and in notebooks). Blocks go round-robin to
``n`` workers, at most :data:`IN_FLIGHT` each, and results are taken back in block
order, so the rows come out exactly as on one worker; the export-wide state (task
de-duplication, counts) stays in the parent (:func:`~._fast.commit_block`).
The parent also reads the member, to its end through the archive's CRC-checking reader,
so a member failing its CRC fails the parse whatever the number of workers.

Any trouble with the workers (they cannot start, one dies, one stops answering) is
logged (a WARNING the first time in a process) and the remaining blocks are parsed in
this process, so a load never fails for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from typing import IO, Literal

import orjson

from ..errors import ConfigurationError
from . import _worker as wire
from ._builder import RecordBuilder
from ._fast import BlockTables

__all__ = ["ENV_WORKERS", "MIN_PARALLEL_BYTES", "Outcome", "block_outcomes", "parse_workers"]

logger = logging.getLogger(__name__)

#: Environment variable that pins the number of parse workers (``1``: no worker process).
ENV_WORKERS = "PROLIFIC_INGEST_PARSE_WORKERS"
#: A member smaller than this (uncompressed) is parsed in-process when the count is not
#: pinned: starting interpreters would cost more than it saves.
MIN_PARALLEL_BYTES = 16 * 2**20
#: Blocks queued per worker (one being parsed, one waiting).
IN_FLIGHT = 2
#: How long one block may take on a worker: this plus :data:`SECONDS_PER_MIB` per MiB.
BLOCK_SECONDS = 60.0
SECONDS_PER_MIB = 10.0
#: How long a worker may take to exit after ``END`` before it is killed.
EXIT_SECONDS = 5.0

#: What became of a block: its tables from a worker, ``"fallback"`` (a worker found it
#: needs the per-line builder) or ``None`` (parse it in this process).
Outcome = BlockTables | Literal["fallback"] | None

_warned = threading.Event()
#: Set in every worker's environment. numpy (imported with pyarrow) starts OpenBLAS, whose
#: thread pool, one thread per core, spins at start-up: about half the CPU of a worker's
#: imports (0.24 vs 0.13 s of CPU for pyarrow, pyarrow.compute and orjson). A worker
#: never does linear algebra, so one BLAS thread costs it nothing.
WORKER_ENV = {"OPENBLAS_NUM_THREADS": "1"}
_BOOT = (
    "import sys,types,json,os;"
    "sys.path[:0]=json.loads(sys.argv[1]);"
    "t=sys.argv[2];"
    "p=types.ModuleType('prolific_ingest');p.__path__=[os.path.dirname(t)];"
    "q=types.ModuleType('prolific_ingest.tables');q.__path__=[t];p.tables=q;"
    "sys.modules.update({'prolific_ingest':p,'prolific_ingest.tables':q});"
    "from prolific_ingest.tables._worker import main;main()"
)


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def parse_workers(requested: int | None, member_bytes: int, block_bytes: int) -> int:
    """The number of processes to parse a member of ``member_bytes`` with.

    ``requested`` (else :data:`ENV_WORKERS`) pins the count, capped by the number of
    blocks; otherwise ``min(cores, blocks)``, and 1 below :data:`MIN_PARALLEL_BYTES`.
    """
    blocks = max(1, -(-member_bytes // max(1, block_bytes)))
    if requested is None:
        env = os.environ.get(ENV_WORKERS, "").strip()
        if env:
            try:
                requested = int(env)
            except ValueError:
                msg = f"{ENV_WORKERS} must be a whole number of workers, not {env!r}"
                raise ConfigurationError(msg) from None
    if requested is not None:
        if requested < 1:
            msg = f"the number of parse workers must be at least 1, not {requested}"
            raise ConfigurationError(msg)
        return min(requested, blocks)
    if member_bytes < MIN_PARALLEL_BYTES:
        return 1
    return min(_usable_cpus(), blocks)


def block_outcomes(
    blocks: Iterable[tuple[int, bytes]], workers: int, builder: RecordBuilder
) -> Iterator[tuple[int, bytes, Outcome]]:
    """Yield ``(first_line_number, block, outcome)`` for every block, in order."""
    if workers <= 1:
        for start, block in blocks:
            yield start, block, None
        return
    pool = _Pool(workers, builder)
    try:
        yield from pool.outcomes(iter(blocks))
    finally:
        pool.close()


def _fallback_to_one(reason: str) -> None:
    if _warned.is_set():
        logger.info("parsing in this process: %s", reason)
        return
    _warned.set()
    logger.warning("parse workers unavailable (%s); parsing on one worker", reason)


class _Broken(Exception):
    """A worker cannot be used any more (the message says why)."""


class _Worker:
    """One worker process, fed by its own thread (a full pipe never blocks the parse)."""

    def __init__(self, proc: subprocess.Popen[bytes], stderr: IO[bytes]) -> None:
        self.proc = proc
        self.stderr = stderr
        self.results: queue.SimpleQueue[tuple[int, bytes] | None] = queue.SimpleQueue()
        self.inbox: queue.SimpleQueue[tuple[int, bytes] | None] = queue.SimpleQueue()
        assert proc.stdin is not None
        assert proc.stdout is not None
        wire.widen_pipe(proc.stdin)
        wire.widen_pipe(proc.stdout)
        for target, stream in ((_pump, proc.stdout), (_feed, proc.stdin)):
            threading.Thread(
                target=target,
                args=(stream, self.results if target is _pump else self.inbox),
                name="prolific-ingest-parse",
                daemon=True,
            ).start()

    def send(self, tag: int, payload: bytes) -> None:
        """Queue a frame for the worker (written by the feeding thread)."""
        self.inbox.put((tag, payload))

    def stop(self) -> None:
        """Send ``END`` after the queued frames, then close the worker's input."""
        self.inbox.put((wire.END, b""))
        self.inbox.put(None)

    def result(self, timeout: float) -> Outcome:
        try:
            frame = self.results.get(timeout=timeout)
        except queue.Empty:
            msg = f"a worker gave no answer within {timeout:.0f} s"
            raise _Broken(msg) from None
        if frame is None:
            raise _Broken(self._why("a worker exited"))
        tag, body = frame
        if tag == wire.OK:
            return wire.decode_result(body)
        if tag == wire.FALLBACK:
            return "fallback"
        logger.debug("a parse worker failed on a block (re-parsed here):\n%s", body.decode())
        return None

    def _why(self, what: str) -> str:
        try:
            code = self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return what
        self.stderr.seek(0)
        tail = self.stderr.read()[-500:].decode("utf-8", "replace").strip()
        return f"{what} with code {code}" + (f": {tail}" if tail else "")


def _feed(stream: IO[bytes], inbox: queue.SimpleQueue[tuple[int, bytes] | None]) -> None:
    """Write queued frames to a worker; a failed write just ends (its reader sees EOF)."""
    try:
        while (frame := inbox.get()) is not None:
            wire.write_frame(stream, *frame)
    except (OSError, ValueError):
        pass
    finally:
        with contextlib.suppress(OSError):
            stream.close()


def _pump(stream: IO[bytes], results: queue.SimpleQueue[tuple[int, bytes] | None]) -> None:
    try:
        while True:
            try:
                frame = wire.read_frame(stream)
            except (OSError, ValueError):
                frame = None
            results.put(frame)
            if frame is None:
                return
    finally:
        stream.close()


class _Pool:
    """``n`` worker processes fed round-robin; results read back in submission order."""

    def __init__(self, n: int, builder: RecordBuilder) -> None:
        self.workers: list[_Worker] = []
        self.broken = False
        config = orjson.dumps(
            {
                "kind": builder.kind,
                "files_prefix": builder.files_prefix,
                "existing": builder.existing.to_pylist(),
                "batch_rows": builder.batch_rows,
            }
        )
        try:
            for _ in range(n):
                worker = self._start()
                self.workers.append(worker)
                worker.send(wire.INIT, config)
        except (OSError, ValueError) as exc:
            self._break(f"cannot start {sys.executable!r}: {exc}")

    @staticmethod
    def _start() -> _Worker:
        package = os.path.dirname(os.path.abspath(__file__))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROLIFIC_")}
        env.update(WORKER_ENV)
        stderr = tempfile.TemporaryFile()  # noqa: SIM115  (owned by the worker record)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, orjson.dumps(sys.path).decode(), package],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                close_fds=True,
            )
        except BaseException:
            stderr.close()
            raise
        return _Worker(proc, stderr)

    def _break(self, reason: str) -> None:
        if not self.broken:
            self.broken = True
            _fallback_to_one(reason)
        self.close()

    def outcomes(self, blocks: Iterator[tuple[int, bytes]]) -> Iterator[tuple[int, bytes, Outcome]]:
        pending: deque[tuple[int, bytes, _Worker | None]] = deque()
        sent = 0
        more = True
        while True:
            while more and len(pending) < IN_FLIGHT * max(1, len(self.workers)):
                item = next(blocks, None)
                if item is None:
                    more = False
                    break
                start, block = item
                worker = None if self.broken else self.workers[sent % len(self.workers)]
                if worker is not None:
                    worker.send(wire.BLOCK, block)
                    sent += 1
                pending.append((start, block, worker))
            if not pending:
                return
            start, block, worker = pending.popleft()
            outcome: Outcome = None
            if worker is not None and not self.broken:
                timeout = BLOCK_SECONDS + SECONDS_PER_MIB * len(block) / 2**20
                try:
                    outcome = worker.result(timeout)
                except _Broken as exc:
                    self._break(str(exc))
            yield start, block, outcome

    def close(self) -> None:
        """Ask every worker to exit; kill those that do not within :data:`EXIT_SECONDS`."""
        workers, self.workers = self.workers, []
        for worker in workers:
            worker.stop()
        for worker in workers:
            try:
                worker.proc.wait(timeout=EXIT_SECONDS)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait(timeout=EXIT_SECONDS)
            worker.stderr.close()  # stdin and stdout are closed by the worker's threads
