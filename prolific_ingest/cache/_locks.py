"""Per-entry locks of a cache, across the threads and processes of one machine.

A local root keeps its lock files in ``<root>/.locks/``; a remote root's are in the
user's cache directory, under a digest of the root's URL, so they are per machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import filelock
import platformdirs

from ._entry import LOCKS_DIR

__all__ = ["entry_lock", "lock_dir", "locks_for"]

_LOCKS: dict[str, tuple[threading.RLock, filelock.FileLock]] = {}
_GUARD = threading.Lock()


def locks_for(path: str) -> tuple[threading.RLock, filelock.FileLock]:
    """One (thread lock, file lock) pair per lock file for the whole process."""
    with _GUARD:
        pair = _LOCKS.get(path)
        if pair is None:
            pair = (threading.RLock(), filelock.FileLock(path, thread_local=False))
            _LOCKS[path] = pair
        return pair


def lock_dir(fs: Any, base: str, *, local: bool) -> str:
    """Where the lock files of the cache at ``base`` (a path on ``fs``) live."""
    if local:
        return os.path.join(base, LOCKS_DIR)
    digest = hashlib.sha256(fs.unstrip_protocol(base).encode()).hexdigest()
    user = platformdirs.user_cache_dir("prolific-ingest", appauthor=False)
    return os.path.join(user, "locks", digest[:24])


@contextlib.contextmanager
def entry_lock(directory: str, name: str) -> Iterator[None]:
    """Hold the lock called ``name`` (an entry's ``<kind>-<owner>-<export>``) in ``directory``."""
    os.makedirs(directory, exist_ok=True)
    if len(name) > 200:
        name = hashlib.sha256(name.encode()).hexdigest()
    thread_lock, file_lock = locks_for(os.path.join(directory, name + ".lock"))
    with thread_lock, file_lock:
        yield
