"""prolific_ingest: Prolific Task Builder exports as Arrow-backed DataFrames and a Delta lake.

The supported surface is exactly what this module (and :mod:`prolific_ingest.testing`)
exports; ``tests/test_public_api.py`` pins it.

>>> from prolific_ingest import load_batch_export
>>> exp = load_batch_export("<batch_id>")          # doctest: +SKIP
>>> exp.answers.head()                             # doctest: +SKIP
"""

import contextlib
import inspect
import logging
import sys
import typing

from ._http.retry import RetryPolicy
from ._version import __version__
from .api import (
    ANY_AGE,
    DEFAULT_MAX_AGE,
    BatchLoadReport,
    LoadOptions,
    download_export,
    load_batch_export,
    load_batch_exports,
    load_collection_export,
    read_export,
)
from .cache import ArchiveFacts, CachedExport, ExportCache
from .client import ProlificClient
from .config import Settings
from .download import DownloadResult, download_archive
from .errors import (
    APIError,
    ArchiveError,
    ArchiveSecurityError,
    AuthenticationError,
    BadRecordError,
    BadRequestError,
    CacheError,
    CacheMissError,
    ConfigurationError,
    ConflictError,
    CorruptArchiveError,
    DownloadError,
    DownloadExpiredError,
    ExportError,
    ExportFailedError,
    ExportLimitError,
    ExportStillGeneratingError,
    ExportTimeoutError,
    IntegrityError,
    LakeNotFoundError,
    LegacyLakeError,
    MissingMemberError,
    MissingPathError,
    MissingTokenError,
    NotFoundError,
    PermissionDeniedError,
    ProlificIngestError,
    RateLimitedError,
    ServerError,
    SinkError,
    TransportError,
)
from .exports import ExportFilter, ExportJob, ExportRef, request_export, wait_for_export
from .lake import (
    WriteResult,
    committed_exports,
    lake_history,
    optimize_lake,
    read_dataset,
    vacuum_lake,
)
from .lake._target import LakeTarget
from .manage import delete_export, list_exports, prune_exports
from .result import Export
from .tables import ExportTables

logging.getLogger("prolific_ingest").addHandler(logging.NullHandler())

__all__ = [
    "ANY_AGE",
    "DEFAULT_MAX_AGE",
    "APIError",
    "ArchiveError",
    "ArchiveFacts",
    "ArchiveSecurityError",
    "AuthenticationError",
    "BadRecordError",
    "BadRequestError",
    "BatchLoadReport",
    "CacheError",
    "CacheMissError",
    "CachedExport",
    "ConfigurationError",
    "ConflictError",
    "CorruptArchiveError",
    "DownloadError",
    "DownloadExpiredError",
    "DownloadResult",
    "Export",
    "ExportCache",
    "ExportError",
    "ExportFailedError",
    "ExportFilter",
    "ExportJob",
    "ExportLimitError",
    "ExportRef",
    "ExportStillGeneratingError",
    "ExportTables",
    "ExportTimeoutError",
    "IntegrityError",
    "LakeNotFoundError",
    "LakeTarget",
    "LegacyLakeError",
    "LoadOptions",
    "MissingMemberError",
    "MissingPathError",
    "MissingTokenError",
    "NotFoundError",
    "PermissionDeniedError",
    "ProlificClient",
    "ProlificIngestError",
    "RateLimitedError",
    "RetryPolicy",
    "ServerError",
    "Settings",
    "SinkError",
    "TransportError",
    "WriteResult",
    "__version__",
    "committed_exports",
    "delete_export",
    "download_archive",
    "download_export",
    "lake_history",
    "list_exports",
    "load_batch_export",
    "load_batch_exports",
    "load_collection_export",
    "optimize_lake",
    "prune_exports",
    "read_dataset",
    "read_export",
    "request_export",
    "vacuum_lake",
    "wait_for_export",
]


def _rehome(namespace: dict[str, object], names: list[str]) -> None:
    """Report this package as the module of every public class and function.

    ``repr``, tracebacks, ``help()`` and pickles then name ``prolific_ingest.RetryPolicy``,
    the spelling users import, not ``prolific_ingest._http.retry.RetryPolicy``, and private
    modules can move without breaking pickles. A class's own annotations are resolved in
    its defining module first (and this package's names), so ``typing.get_type_hints``
    keeps working. The price: ``inspect.getsource`` of a class now looks for it in this
    file and fails (functions keep their source file); docs/internals.md maps names to
    modules.
    """
    for name in names:
        obj = namespace[name]
        if inspect.isclass(obj):
            own = vars(obj).get("__annotations__")
            if own:
                # Names imported for type checkers only are often public names of this package.
                home = vars(sys.modules[obj.__module__])
                with contextlib.suppress(Exception):
                    hints = typing.get_type_hints(obj, home, namespace, include_extras=True)
                    obj.__annotations__ = {key: hints.get(key, own[key]) for key in own}
        elif not inspect.isfunction(obj):
            continue
        obj.__module__ = __name__


_rehome(globals(), __all__)
