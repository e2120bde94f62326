"""The parsed-table cache's background writer: file encoding on a thread, behind the parse.

:class:`~prolific_ingest.cache._tables.TableCache` hands it a function opening one
table's writer, the export's table names and the shared buffer budget; it knows
nothing else about the cache.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Sequence

import pyarrow as pa

from .._parquet import BufferBudget, RowGroupWriter

__all__ = ["QUEUED_BATCHES", "BackgroundWriter"]

#: Batches that may wait for the background writer.
QUEUED_BATCHES = 4


class BackgroundWriter:
    """Writes a parsed-table cache's batches on a thread, behind the parse.

    Encoding and compression release the GIL, so they overlap with the parse. At most
    :data:`QUEUED_BATCHES` batches wait; every wait is bounded by the thread's progress,
    and an error on the thread is raised in the caller at the next :meth:`put` or at
    :meth:`finish`.
    """

    def __init__(
        self,
        open_writer: Callable[[str, BufferBudget], RowGroupWriter],
        names: Sequence[str],
        budget: BufferBudget,
    ) -> None:
        self.open_writer = open_writer
        self.names = names
        self.queue: queue.Queue[tuple[str, pa.RecordBatch] | None] = queue.Queue(QUEUED_BATCHES)
        self.error: BaseException | None = None
        self.writers: dict[str, RowGroupWriter] = {}
        self.budget = budget
        self.thread = threading.Thread(
            target=self._run, name="prolific-ingest-table-cache", daemon=True
        )
        self.thread.start()

    def _run(self) -> None:
        try:
            while (item := self.queue.get()) is not None:
                if self.error is not None:
                    continue  # keep draining so that the producer never waits in vain
                name, batch = item
                try:
                    if name not in self.writers:
                        self.writers[name] = self.open_writer(name, self.budget)
                    self.writers[name].write(batch)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the producer
                    self.error = exc
            if self.error is None:
                for name in self.names:
                    if name not in self.writers:  # every table always exists, even empty
                        self.writers[name] = self.open_writer(name, self.budget)
                for writer in self.writers.values():
                    writer.close()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the producer
            self.error = exc

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, item: tuple[str, pa.RecordBatch] | None) -> None:
        """Queue ``item`` (``None``: no more), waiting while the thread makes progress."""
        while True:
            self._check()
            try:
                self.queue.put(item, timeout=1.0)
            except queue.Full:
                if not self.thread.is_alive():
                    self._check()
                    msg = "the parsed-table cache writer stopped"
                    raise OSError(msg) from None
                continue
            return

    def finish(self) -> None:
        """Write what is queued, close every file; raise the thread's error, if any."""
        self.put(None)
        while self.thread.is_alive():
            self.thread.join(timeout=1.0)
        self._check()

    def abort(self) -> None:
        """Stop after a failure: nothing more is written, every file is closed."""
        self.error = self.error or _Aborted()
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(None)
        while self.thread.is_alive():
            with contextlib.suppress(queue.Full):
                self.queue.put_nowait(None)
            self.thread.join(timeout=0.5)
        for writer in self.writers.values():
            writer.abort()


class _Aborted(Exception):
    """The consumer of ``TableCache.tee`` stopped early."""
