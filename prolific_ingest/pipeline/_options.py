"""A load verb's keyword arguments: the one list of them, and the deprecated spellings.

:class:`LoadOptions` is the signature the three load verbs share (``load_batch_export``,
``load_collection_export``, ``load_batch_exports``); :func:`load_request` turns a call's
keywords into a :class:`LoadRequest`, translating the spellings deprecated in 0.2 (the
connection settings and the flat sink options) with a :class:`DeprecationWarning`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypedDict

from .._http.retry import RetryPolicy
from .._version import refuse_unknown, warn_deprecated
from ..cache import ExportCache
from ..client import ProlificClient
from ..config import Settings, deprecated_connection_keyword
from ..errors import ConfigurationError
from ..lake._target import LakeTarget
from ._parse import OnBadRecords

__all__ = ["UNSET", "LoadOptions", "LoadRequest", "load_request", "verb_signature"]


class _Unset:
    """The default of ``max_age``: not given (its default depends on ``offline``/``incremental``)."""

    def __repr__(self) -> str:
        return "DEFAULT_MAX_AGE"


UNSET: Any = _Unset()


class LoadOptions(TypedDict, total=False):
    """The keyword arguments of the load verbs (all optional); see :func:`load_batch_export`.

    A mapping of them can be built once and passed to several loads: ``load_batch_export(bid,
    **options)``.
    """

    study_id: str | None
    since: datetime | str | None
    until: datetime | str | None
    export_id: str | None
    max_age: timedelta | float
    offline: bool
    output: str | os.PathLike[str] | LakeTarget | None
    cache: str | os.PathLike[str] | ExportCache | None
    on_bad_records: OnBadRecords
    progress: bool | str | None
    client: ProlificClient | Settings | None


#: Each option's default, in signature order.
DEFAULTS: dict[str, Any] = {
    "study_id": None,
    "since": None,
    "until": None,
    "export_id": None,
    "max_age": UNSET,
    "offline": False,
    "output": None,
    "cache": None,
    "on_bad_records": "raise",
    "progress": None,
    "client": None,
}

#: Deprecated connection keywords -> how to say it now.
_CONNECTION = {
    "token": "client=ProlificClient(token=...)",
    "base_url": "client=ProlificClient(base_url=...)",
    "retry": "client=ProlificClient(retry=...)",
    "timeout": "client=Settings.from_env(wait_timeout=...)",
}
#: Deprecated sink keywords, now fields of LakeTarget.
_SINK = ("incremental", "overwrite", "partition_by", "storage_options")


@dataclass(frozen=True)
class LoadRequest:
    """One call's options, with the deprecated spellings translated (nothing checked yet).

    ``token``, ``base_url``, ``retry`` and ``wait_timeout`` are set only by the deprecated
    keywords; ``cache_options`` only by the deprecated ``storage_options``.
    """

    study_id: str | None = None
    since: datetime | str | None = None
    until: datetime | str | None = None
    export_id: str | None = None
    max_age: Any = UNSET
    offline: bool = False
    output: LakeTarget | None = None
    cache: str | ExportCache | None = None
    on_bad_records: OnBadRecords = "raise"
    progress: bool | str | None = None
    client: ProlificClient | Settings | None = None
    token: str | None = None
    base_url: str | None = None
    retry: RetryPolicy | None = None
    wait_timeout: float | None = None
    cache_options: Mapping[str, Any] | None = None


def _deprecated(verb: str, name: str, instead: str, stacklevel: int) -> None:
    warn_deprecated(f"{verb}({name}=...)", f"pass {instead}", stacklevel=stacklevel + 1)


def load_request(verb: str, options: Mapping[str, Any], *, stacklevel: int = 2) -> LoadRequest:
    """Translate ``verb``'s keyword arguments into a :class:`LoadRequest`.

    ``stacklevel`` points the deprecation warnings at the caller of the verb.

    Raises
    ------
    TypeError
        A keyword the verb does not take.
    ConfigurationError
        A deprecated connection keyword together with ``client=`` (the client's own
        setting would silently win), or a deprecated sink keyword together with
        ``output=LakeTarget(...)``.
    """
    refuse_unknown(verb, options, [*DEFAULTS, *_CONNECTION, *_SINK])
    given = {name: value for name, value in options.items() if name in DEFAULTS}
    if "max_age" in given and given["max_age"] is None:
        # None is "no limit" in the cache (ExportCache.find, clear); here it meant the opposite.
        instead = "pass max_age=0 (never reuse; max_age=ANY_AGE reuses any age)"
        warn_deprecated(f"{verb}(max_age=None)", instead, stacklevel=stacklevel + 1)
        given["max_age"] = 0
    output = given.pop("output", None)
    cache = given.pop("cache", None)
    legacy: dict[str, Any] = {}
    for name, instead in _CONNECTION.items():
        if name not in options:
            continue
        value = options[name]
        beside = value is not None and name != "timeout" and given.get("client") is not None
        deprecated_connection_keyword(
            verb, name, instead, beside_client=beside, stacklevel=stacklevel + 1
        )
        legacy["wait_timeout" if name == "timeout" else name] = value
    sink = {name: options[name] for name in _SINK if name in options}
    if sink:
        fields = ", ".join(f"{name}=..." for name in sink)
        _deprecated(verb, next(iter(sink)), f"output=LakeTarget(url, {fields})", stacklevel + 1)
        if isinstance(output, LakeTarget):
            msg = f"{verb}(): give {', '.join(sink)} in output=LakeTarget(...), not beside it"
            raise ConfigurationError(msg)
        legacy["cache_options"] = sink.get("storage_options")
        if sink.get("incremental") and output is None:
            msg = (
                "incremental=True needs output=: the watermark is read from the lake's load records"
            )
            raise ConfigurationError(msg)
        if output is not None:
            output = LakeTarget(output, **sink)
    return LoadRequest(
        **given,
        output=LakeTarget.coerce(output) if output is not None else None,
        cache=os.fspath(cache) if isinstance(cache, os.PathLike) else cache,
        **legacy,
    )


def verb_signature(
    func: Callable[..., Any], first: str, *extra: inspect.Parameter
) -> inspect.Signature:
    """The signature a load verb shows (``help``, ``inspect``): ``first``, then the options."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    hints = LoadOptions.__annotations__
    params = [
        inspect.Parameter(first, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation="str"),
        *extra,
        *(
            inspect.Parameter(name, keyword, default=default, annotation=hints[name])
            for name, default in DEFAULTS.items()
        ),
    ]
    return inspect.Signature(params, return_annotation=inspect.signature(func).return_annotation)
