"""Named points of a lake write, where the kill tests stop the process.

Nothing happens at a point unless :data:`hook` is set (only the test helper sets it).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["hook", "reached"]

#: Called with the point's name when set; ``None`` in normal use.
hook: Callable[[str], None] | None = None


def reached(point: str) -> None:
    """Call :data:`hook` with ``point`` if one is installed."""
    if hook is not None:
        hook(point)
