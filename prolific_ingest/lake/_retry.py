"""A bounded, logged back-off around one Delta commit that lost a race to another writer.

delta-rs rebases a commit over concurrent ones that do not conflict; when they do (two
MERGEs into one partition, an append racing the check that the partition was empty),
it raises ``CommitFailedError`` and the whole operation must be re-run on a fresh
snapshot: that is what the callable given to :func:`committing` does.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from deltalake.exceptions import CommitFailedError, DeltaError

__all__ = ["ATTEMPTS", "committing"]

logger = logging.getLogger("prolific_ingest.lake")

T = TypeVar("T")

#: Attempts of one commit before its conflict is raised.
ATTEMPTS = 12
_BASE = 0.05
_CAP = 2.0


def _conflict(exc: BaseException) -> bool:
    if isinstance(exc, CommitFailedError):
        return True
    text = str(exc).lower()
    return isinstance(exc, DeltaError) and (
        "already exists" in text or "concurrent" in text or "version mismatch" in text
    )


def committing(
    operation: Callable[[], T],
    *,
    what: str,
    attempts: int = ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``operation`` until it commits, re-running it after a commit conflict.

    Waits a full-jitter exponential back-off (50 ms doubling, capped at 2 s) between
    attempts and logs each retry at WARNING; after ``attempts`` the conflict is raised.
    """
    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except DeltaError as exc:
            if not _conflict(exc) or attempt == attempts:
                raise
            delay = random.uniform(0, min(_CAP, _BASE * 2 ** (attempt - 1)))
            logger.warning(
                "%s: commit conflict with another writer (attempt %d of %d), retrying in %.2fs",
                what,
                attempt,
                attempts,
                delay,
            )
            sleep(delay)
    msg = "unreachable"  # pragma: no cover
    raise AssertionError(msg)  # pragma: no cover
