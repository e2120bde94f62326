"""Progress reporting: a tqdm bar in notebooks and terminals, silence elsewhere."""

from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import Any, Protocol, Self

from .config import Settings
from .errors import ConfigurationError

__all__ = ["NullProgress", "ProgressLike", "TqdmProgress", "make_progress", "resolve_progress"]


class ProgressLike(Protocol):
    """What polling and downloading need from a progress display."""

    def update(self, n: float = 1) -> None:
        """Advance by ``n`` units."""

    def set_postfix_str(self, s: str) -> None:
        """Show a short status text."""

    def reset(self, total: float | None = None) -> None:
        """Start again from zero (e.g. a download restarted)."""

    def close(self) -> None:
        """Finish the display."""

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class NullProgress:
    """A progress display that shows nothing (but counts, for tests)."""

    def __init__(self, total: float | None = None) -> None:
        self.total = total
        self.n: float = 0
        self.postfix = ""
        self.closed = False

    def update(self, n: float = 1) -> None:
        """Advance by ``n`` units."""
        self.n += n

    def set_postfix_str(self, s: str) -> None:
        """Remember the status text."""
        self.postfix = s

    def reset(self, total: float | None = None) -> None:
        """Start again from zero."""
        self.n = 0
        if total is not None:
            self.total = total

    def close(self) -> None:
        """Mark as closed."""
        self.closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class TqdmProgress:
    """A thin wrapper around a ``tqdm`` bar with the :class:`ProgressLike` surface."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def update(self, n: float = 1) -> None:
        """Advance by ``n`` units."""
        self.bar.update(n)

    def set_postfix_str(self, s: str) -> None:
        """Show a short status text."""
        self.bar.set_postfix_str(s, refresh=True)

    def reset(self, total: float | None = None) -> None:
        """Start again from zero."""
        self.bar.reset(total=total)

    def close(self) -> None:
        """Close the bar."""
        self.bar.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _in_notebook() -> bool:
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    get_ipython = getattr(ipython, "get_ipython", None)
    shell = get_ipython() if callable(get_ipython) else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _stderr_is_tty() -> bool:
    try:
        return bool(sys.stderr is not None and sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


def resolve_progress(progress: bool | str | None) -> str:
    """Decide how to show progress: ``"notebook"``, ``"tty"``, ``"bar"`` or ``"off"``.

    ``None``/``"auto"`` read ``PROLIFIC_INGEST_PROGRESS`` and otherwise detect a
    notebook or a terminal (``sys.stderr.isatty()``); ``True`` forces a bar and
    ``False`` silences it. The strings ``"1"/"true"/"on"`` and ``"0"/"false"/"off"``
    are accepted too.
    """
    if isinstance(progress, bool):
        return "bar" if progress else "off"
    if isinstance(progress, str) and progress.strip().lower() != "auto":
        word = progress.strip().lower()
        if word in {"1", "true", "yes", "on"}:
            return "bar"
        if word in {"0", "false", "no", "off"}:
            return "off"
        msg = f"progress must be True, False, None or 'auto', not {progress!r}"
        raise ConfigurationError(msg)
    if progress is not None and not isinstance(progress, str):
        msg = f"progress must be True, False, None or 'auto', not {progress!r}"
        raise ConfigurationError(msg)
    env = Settings.progress_from_env()
    if env is not None:
        return "bar" if env else "off"
    if os.environ.get("PROLIFIC_INGEST_PROGRESS", "").strip().lower() not in {"", "auto"}:
        return "off"
    if _in_notebook():
        return "notebook"
    if _stderr_is_tty():
        return "tty"
    return "off"


def make_progress(
    progress: bool | str | None,
    *,
    total: float | None = None,
    desc: str = "",
    unit: str = "B",
) -> ProgressLike:
    """Return a progress display for ``progress`` (see :func:`resolve_progress`).

    Parameters
    ----------
    progress : bool, str or None
        ``None``/``"auto"``, ``True`` or ``False``.
    total : float, optional
        Expected total (bytes for downloads), if known.
    desc : str
        Label shown before the bar.
    unit : str
        ``"B"`` scales by 1024 (bytes); anything else counts plainly.
    """
    mode = resolve_progress(progress)
    if mode == "off":
        return NullProgress(total)
    scale = unit == "B"
    kwargs: dict[str, Any] = {
        "total": total,
        "desc": desc,
        "unit": unit,
        "unit_scale": scale,
        "unit_divisor": 1024 if scale else 1000,
        "leave": False,
        "file": sys.stderr,
    }
    if mode == "tty":
        from tqdm import tqdm as tqdm_std

        return TqdmProgress(tqdm_std(**kwargs))
    from tqdm.auto import tqdm as tqdm_auto

    if mode == "notebook":
        kwargs.pop("file")
    return TqdmProgress(tqdm_auto(**kwargs))
