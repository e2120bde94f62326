"""The package version, and the one wording of a deprecation (it names the version of removal)."""

import warnings
from collections.abc import Iterable

__version__ = "0.1.0"

#: The minor version that removes what is deprecated now.
REMOVED_IN = "0.3"


def warn_deprecated(old: str, instead: str, *, stacklevel: int = 2) -> None:
    """Warn that the spelling ``old`` is deprecated, saying what to write ``instead``.

    ``stacklevel`` counts from the caller of this function (2: the caller's caller).
    """
    msg = f"{old} is deprecated and will be removed in {REMOVED_IN}: {instead}"
    warnings.warn(msg, DeprecationWarning, stacklevel=stacklevel + 1)


def refuse_unknown(func: str, given: Iterable[str], allowed: Iterable[str]) -> None:
    """Raise Python's own ``TypeError`` for a keyword that ``func``'s ``**kwargs`` does not take.

    For the functions whose ``**kwargs`` only keeps deprecated spellings working.
    """
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        msg = f"{func}() got an unexpected keyword argument {unknown[0]!r}"
        raise TypeError(msg)
