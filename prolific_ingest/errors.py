"""The whole exception tree of prolific_ingest, drawn once.

Every error the library raises derives from :class:`ProlificIngestError`. Classes
that have a natural builtin counterpart also derive from it, so generic handlers
(``except PermissionError``, ``except TimeoutError``, ``except LookupError``) keep
working. The original low-level exception is always kept as ``__cause__``.

::

    ProlificIngestError
    ├── ConfigurationError                      (also ValueError)
    │   ├── MissingTokenError                   no token: says how to set PROLIFIC_TOKEN
    │   └── MissingPathError                    a local path to read does not exist (also FileNotFoundError)
    ├── APIError(status, error_code, title, detail, method, url, request_id)
    │   ├── BadRequestError          400, 422   (also ValueError)
    │   ├── AuthenticationError      401        (also PermissionError)
    │   ├── PermissionDeniedError    403        (also PermissionError)
    │   ├── NotFoundError            404        (also LookupError)
    │   ├── ConflictError            409
    │   │   ├── ExportLimitError                the 10-job cap; lists the existing jobs
    │   │   └── ExportStillGeneratingError      DELETE of a job still generating
    │   ├── RateLimitedError         429        (retry_after)
    │   └── ServerError              5xx
    ├── TransportError                          connection / read timeout after retries (also ConnectionError)
    ├── ExportError(export_id)
    │   ├── ExportFailedError                   status "failed": request a new export
    │   └── ExportTimeoutError                  (also TimeoutError; elapsed, last_status)
    ├── DownloadError(export_id, url, status)   url is redacted (no query string)
    │   ├── DownloadExpiredError                403 from the download host, no fresh URL to be had
    │   └── IntegrityError                      Content-Length / ETag mismatch
    ├── ArchiveError(source, member, line)
    │   ├── CorruptArchiveError                 not a ZIP, bad CRC, truncated
    │   ├── ArchiveSecurityError                traversal, absolute path, symlink, zip bomb …
    │   ├── MissingMemberError                  (also FileNotFoundError)
    │   └── BadRecordError                      unparseable JSONL line (also ValueError)
    ├── CacheError
    │   └── CacheMissError                      offline=True and nothing cached (also LookupError)
    └── SinkError(url)                          the lake could not be written / read
        ├── LakeNotFoundError                   no Delta table there (also FileNotFoundError)
        └── LegacyLakeError                     the pre-Delta manifest layout: rebuild from the cache
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

__all__ = [
    "APIError",
    "ArchiveError",
    "ArchiveSecurityError",
    "AuthenticationError",
    "BadRecordError",
    "BadRequestError",
    "CacheError",
    "CacheMissError",
    "ConfigurationError",
    "ConflictError",
    "CorruptArchiveError",
    "DownloadError",
    "DownloadExpiredError",
    "ExportError",
    "ExportFailedError",
    "ExportLimitError",
    "ExportStillGeneratingError",
    "ExportTimeoutError",
    "IntegrityError",
    "LakeNotFoundError",
    "LegacyLakeError",
    "MissingMemberError",
    "MissingPathError",
    "MissingTokenError",
    "NotFoundError",
    "PermissionDeniedError",
    "ProlificIngestError",
    "RateLimitedError",
    "ServerError",
    "SinkError",
    "TransportError",
    "redact_url",
    "storage_errors",
]


def url_authority(rest: str) -> tuple[str, str]:
    """Split what follows ``scheme://`` into ``(user info, remainder)``.

    The user info ends at the last ``@`` of the authority. A secret with an unescaped
    ``/`` (``s3://KEY:ab/cd@bucket``) ends the authority early; the ``@`` after it still
    marks where the secret ends, so the whole of it counts as user info.
    """
    end = len(rest)
    for stop in "/?#":
        pos = rest.find(stop)
        if pos != -1:
            end = min(end, pos)
    head = rest[:end]
    if "@" in head:
        cut = head.rfind("@")
        return rest[:cut], rest[cut + 1 :]
    if ":" in head and "@" in rest[end:]:
        port = head.rpartition(":")[2]
        if not port.isdigit():
            cut = rest.find("@", end)
            return rest[:cut], rest[cut + 1 :]
    return "", rest


def _redact_one(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    _, remainder = url_authority(rest)
    for stop in "?#":
        remainder = remainder.partition(stop)[0]
    return f"{scheme}://{remainder}"


def redact_url(url: str | None) -> str | None:
    """Return ``url`` without user info, query string or fragment; a plain path unchanged.

    Presigned URLs carry their signature in the query string and storage URLs may carry
    ``KEY:SECRET@``; neither may reach a log line, an exception message or a manifest.
    Each part of a chained URL (``simplecache::s3://…``) is redacted. (The rule lives
    here, below every module that raises, so nothing imports the URL rules back.)
    """
    if url is None:
        return None
    return "::".join(_redact_one(part) for part in str(url).split("::"))


def _restore(cls: type[ProlificIngestError], args: tuple[Any, ...]) -> ProlificIngestError:
    """Rebuild a pickled error without calling its ``__init__`` (see ``__reduce__``)."""
    # The C-level constructor of the instance layout: OSError's for the classes that
    # also derive from an OSError (PermissionError, FileNotFoundError …).
    new = OSError.__new__ if issubclass(cls, OSError) else BaseException.__new__
    err = new(cls, *args)
    BaseException.__init__(err, *args)
    return err


class ProlificIngestError(Exception):
    """Root of every error raised by prolific_ingest.

    Every error pickles (to cross a process pool, say) with its attributes: it is
    rebuilt from its message and attributes, not by calling ``__init__`` again, whose
    keyword-only arguments (``status=`` …) the default exception pickling cannot pass.
    The cause and traceback are not carried, as for any pickled exception.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return _restore, (type(self), self.args), dict(vars(self))


class ConfigurationError(ProlificIngestError, ValueError):
    """A setting is missing or invalid (URL scheme, token, cache location …)."""


class MissingTokenError(ConfigurationError):
    """No API token was given and ``PROLIFIC_TOKEN`` is not set."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(
            message
            or "No Prolific API token: set the PROLIFIC_TOKEN environment variable "
            "(export PROLIFIC_TOKEN=...) or pass token=... . Create a token in the Prolific "
            "app under Settings > API tokens."
        )


class MissingPathError(ConfigurationError, FileNotFoundError):
    """A local path given to read (an archive, a dataset) does not exist."""


class APIError(ProlificIngestError):
    """The Prolific API answered with an error status.

    Attributes
    ----------
    status : int
        HTTP status code.
    error_code, title, detail
        Fields of Prolific's error envelope, when present.
    method, url
        The request, with the URL's query string removed.
    request_id : str or None
        The request id the server gave the response (``X-Request-Id`` or a similar
        header), to quote to Prolific support; ``None`` when the response had none.
        The message names it too.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error_code: int | None = None,
        title: str | None = None,
        detail: Any = None,
        method: str | None = None,
        url: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.title = title
        self.detail = detail
        self.method = method
        self.url = redact_url(url)
        self.request_id = request_id


class BadRequestError(APIError, ValueError):
    """400 or 422: the request was malformed (e.g. a bad ``from``/``to`` filter)."""


class AuthenticationError(APIError, PermissionError):
    """401: the token is missing, wrong or revoked."""


class PermissionDeniedError(APIError, PermissionError):
    """403: the account has no access to this batch/collection or feature."""


class NotFoundError(APIError, LookupError):
    """404: unknown batch, collection or export job (or no access)."""


class ConflictError(APIError):
    """409: the request conflicts with the state of the resource."""


class ExportLimitError(ConflictError):
    """409 on POST: the batch already has the maximum number of export jobs.

    ``existing_jobs`` lists the jobs (as returned by the list endpoint) when they
    could be fetched; delete finished ones (``prune_exports``) to free a slot.
    """

    def __init__(self, message: str, *, existing_jobs: list[Any] | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.existing_jobs = list(existing_jobs or [])


class ExportStillGeneratingError(ConflictError):
    """409 on DELETE: the job is still generating."""


class RateLimitedError(APIError):
    """429 after retries were exhausted. ``retry_after`` is in seconds, if the server said."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ServerError(APIError):
    """5xx after retries were exhausted."""


class TransportError(ProlificIngestError, ConnectionError):
    """The connection failed or timed out, and retries were exhausted."""


class ExportError(ProlificIngestError):
    """A problem with one export job. ``export_id`` names it."""

    def __init__(self, message: str, *, export_id: str | None = None) -> None:
        super().__init__(message)
        self.export_id = export_id


class ExportFailedError(ExportError):
    """The export job reported ``failed``. Request a new export."""


class ExportTimeoutError(ExportError, TimeoutError):
    """The export did not complete in time. Call again with ``export_id=`` to resume it."""

    def __init__(
        self,
        message: str,
        *,
        export_id: str | None = None,
        elapsed: float = 0.0,
        last_status: str | None = None,
    ) -> None:
        super().__init__(message, export_id=export_id)
        self.elapsed = elapsed
        self.last_status = last_status


class DownloadError(ProlificIngestError):
    """The archive could not be downloaded from its presigned URL."""

    def __init__(
        self,
        message: str,
        *,
        export_id: str | None = None,
        url: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.export_id = export_id
        self.url = redact_url(url)
        self.status = status


class DownloadExpiredError(DownloadError):
    """The presigned URL was refused as expired and no fresh one could be obtained."""


class IntegrityError(DownloadError):
    """The downloaded bytes do not match ``Content-Length`` or ``ETag``."""


class ArchiveError(ProlificIngestError):
    """An export archive could not be read. Names the ``source``, ``member`` and ``line``."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        member: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message)
        self.source = redact_url(source) if source and "://" in source else source
        self.member = member
        self.line = line


class CorruptArchiveError(ArchiveError):
    """The archive is not a valid ZIP, is truncated, or a member fails its CRC."""


class ArchiveSecurityError(ArchiveError):
    """A member name or size is unsafe (path traversal, absolute path, symlink, bomb …)."""


class MissingMemberError(ArchiveError, FileNotFoundError):
    """A member that was asked for is not in the archive."""


class BadRecordError(ArchiveError, ValueError):
    """A JSONL line could not be parsed as a JSON object."""


class CacheError(ProlificIngestError):
    """The local (or remote) export cache could not be read or written."""


class CacheMissError(CacheError, LookupError):
    """``offline=True`` was asked and the export is not in the cache."""


class SinkError(ProlificIngestError):
    """The lake (``output=``) could not be written or read. ``url`` names it, without secrets."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class LakeNotFoundError(SinkError, FileNotFoundError):
    """``read_dataset`` (or a housekeeping command) found no Delta table at ``url``."""


class LegacyLakeError(SinkError):
    """``url`` holds the manifest layout of prolific-ingest 0.1 previews, not Delta tables.

    The message says how to rebuild the lake from the cache (offline re-loads).
    """


#: Exceptions that keep their own type when they come out of a storage backend.
_OWN_TYPES = (ProlificIngestError, OSError, ValueError, TypeError, LookupError)


@contextlib.contextmanager
def storage_errors(make: Callable[[str], ProlificIngestError]) -> Iterator[None]:
    """Turn a storage backend's own exception into a typed error of this package.

    fsspec backends raise ``OSError`` for most failures, but not all: botocore's
    ``NoCredentialsError``, google-auth's ``DefaultCredentialsError``, the
    ``ImportError`` asking to install ``s3fs``/``gcsfs`` ... Those become
    ``make("<Type>: <message>")`` with the original as ``__cause__``; this package's
    errors, ``OSError``, ``ValueError``, ``TypeError`` and ``LookupError`` pass unchanged.
    """
    try:
        yield
    except _OWN_TYPES:
        raise
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}"
        raise make(detail) from exc
