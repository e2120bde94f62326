"""pytest plugin (entry point ``prolific_ingest``): emulator fixtures for any test suite.

``prolific_emulator_session``
    One started :class:`~prolific_ingest.testing.Emulator` per test session.
``prolific_emulator``
    The same emulator, :meth:`~prolific_ingest.testing.Emulator.reset` before each test
    (no batches, jobs, faults or logged requests; clock and settings restored).

The emulator module is imported only when a fixture is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .emulator import Emulator

__all__ = ["prolific_emulator", "prolific_emulator_session"]


@pytest.fixture(scope="session")
def prolific_emulator_session() -> Iterator[Emulator]:
    """A started emulator shared by the whole session."""
    from .emulator import Emulator

    with Emulator() as emu:
        yield emu


@pytest.fixture
def prolific_emulator(prolific_emulator_session: Emulator) -> Iterator[Emulator]:
    """The session emulator, reset for this test."""
    prolific_emulator_session.reset()
    yield prolific_emulator_session
    prolific_emulator_session.reset()
