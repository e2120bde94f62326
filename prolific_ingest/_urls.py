"""Every URL rule of the package, once: storage URLs, transport URLs, redaction.

Storage URLs (an output, the cache, an archive or dataset to read) go through
:func:`parse_storage_url` before anything touches them: it refuses an unknown protocol
(``sss3://``), a malformed URL (``s3:/lake`` with one slash, ``s3://`` with no bucket, an
empty string) and a protocol whose package is missing, with a
:class:`~prolific_ingest.ConfigurationError` naming the URL without its secrets. It moves
credentials written into the URL (``s3://KEY:SECRET@bucket/x``) into the storage options, so
no other library (fsspec, s3fs, delta-rs) ever sees them in a URL or logs them.

API and download URLs must be ``https``, or plain ``http`` to a loopback host
(:func:`is_https_or_loopback`). Every URL shown in a message or log line goes through
:func:`redact_url` (no user info, query string or fragment; the rule sits in ``errors``,
below every module that raises, so nothing imports the URL rules back).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import fsspec

from .errors import ConfigurationError, DownloadError, MissingPathError, redact_url, url_authority

__all__ = [
    "StorageURL",
    "check_download_url",
    "is_https_or_loopback",
    "is_loopback_host",
    "parse_storage_url",
    "redact_url",
    "url_secrets",
]

Purpose = Literal["output", "cache", "read"]

#: Protocols whose URLs name a bucket, container or host right after ``://``.
_NEEDS_HOST = frozenset(
    {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oci", "oss", "tos", "tosfs"}
    | {"http", "https", "ftp", "sftp", "ssh", "smb", "webdav"}
)
#: Protocols whose user info is credentials, and the storage options they become.
_CREDENTIAL_KEYS: dict[str, tuple[str, str]] = {
    "s3": ("key", "secret"),
    "s3a": ("key", "secret"),
    "ftp": ("username", "password"),
    "sftp": ("username", "password"),
    "ssh": ("username", "password"),
    "smb": ("username", "password"),
}
#: Protocols that cannot be written to (refused for an output or a cache).
_READ_ONLY = frozenset(
    {"http", "https", "data", "zip", "tar", "libarchive", "github", "gist", "git", "reference"}
)
_LOCAL = frozenset({"file", "local"})
#: ``name:`` at the start of a string: a URL scheme (two letters or more; ``C:`` is a drive).
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


def is_loopback_host(host: str | None) -> bool:
    """Tell whether ``host`` is a loopback name or address (127.0.0.0/8, ::1, localhost)."""
    if not host:
        return False
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_https_or_loopback(url: str) -> bool:
    """Whether ``url`` may carry API or download traffic: https, or http to loopback only."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return bool(parts.hostname)
    return parts.scheme == "http" and is_loopback_host(parts.hostname)


def check_download_url(url: str, export_id: str | None) -> None:
    """Refuse an archive URL that is neither https nor http to loopback (:class:`DownloadError`)."""
    if is_https_or_loopback(url):
        return
    msg = (
        f"refusing to download {redact_url(url)}: the archive URL must use https "
        "(plain http is only allowed for loopback hosts)"
    )
    raise DownloadError(msg, export_id=export_id, url=url)


def url_secrets(url: str | None) -> list[str]:
    """Return the secret parts of ``url``: passwords, query strings and their values.

    What a text scrubber must remove when another library or a server quotes the URL.
    Unlike ``urlsplit(url).password`` this also finds a secret with an unescaped ``/``,
    and looks into every part of a chained URL.
    """
    found: list[str] = []
    for part in str(url or "").split("::"):
        sep, rest = part.partition("://")[1:]
        if not sep:
            continue
        userinfo, remainder = url_authority(rest)
        if ":" in userinfo:
            found.append(userinfo.partition(":")[2])
        query = remainder.partition("#")[0].partition("?")[2]
        if query:
            found.append(query)
            found += [value for _, value in parse_qsl(query) if value]
    return [s for s in dict.fromkeys(found) if s]


@dataclass(frozen=True)
class StorageURL:
    """A storage location that passed :func:`parse_storage_url`.

    Attributes
    ----------
    url : str
        The location without credentials: a local path (``~`` expanded) or a URL; give
        this, never the original, to fsspec, s3fs or delta-rs.
    protocol : str
        ``"file"`` for a local path, else the URL's scheme (``"s3"``, ``"memory"`` …).
    is_local : bool
        The local filesystem (a plain path or ``file://``).
    storage_options : dict
        The caller's options plus the credentials that were in the URL (``key``/``secret``
        for ``s3://``); empty for a local location.
    display : str
        Safe for messages and logs: no user info, query string or fragment.
    """

    url: str
    protocol: str
    is_local: bool
    storage_options: dict[str, Any] = field(repr=False)
    display: str

    def __str__(self) -> str:
        return self.display


def _fail(purpose: str, shown: str, why: str) -> ConfigurationError:
    return ConfigurationError(f"{purpose} location {shown!r} {why}")


def _check_protocol(protocol: str, purpose: str, shown: str) -> None:
    if protocol not in fsspec.available_protocols():
        some = ", ".join(f"{p}://" for p in ("s3", "gs", "az", "file", "memory"))
        raise _fail(purpose, shown, f"has an unknown protocol {protocol!r} (known: {some} …)")
    if purpose != "read" and protocol in _READ_ONLY:
        raise _fail(purpose, shown, f"cannot be written to ({protocol}:// is read-only)")
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        raise _fail(purpose, shown, f"needs a package that is not installed: {exc}") from exc


def _credentials(
    protocol: str, userinfo: str, options: dict[str, Any], purpose: str, shown: str
) -> dict[str, Any]:
    """Merge the URL's user info into ``options`` (never echoing it in a message)."""
    user, has_password, password = userinfo.partition(":")
    keys = _CREDENTIAL_KEYS.get(protocol)
    if keys is None:
        if has_password:
            why = (
                f"has a password in the URL, which {protocol}:// cannot take: pass the "
                "credentials in the storage options instead"
            )
            raise _fail(purpose, shown, why)
        return options
    merged = dict(options)
    for name, value in zip(keys, (user, password if has_password else ""), strict=True):
        if not value:
            continue
        value = unquote(value)
        if name in merged and merged[name] != value:
            why = f"has a {name!r} in the URL and a different one in the storage options"
            raise _fail(purpose, shown, why)
        merged[name] = value
    return merged


def parse_storage_url(
    url: str | os.PathLike[str],
    storage_options: Mapping[str, Any] | None = None,
    *,
    purpose: Purpose = "output",
) -> StorageURL:
    """Validate a storage location and separate its credentials; nothing is written.

    Parameters
    ----------
    url : str or path-like
        A local path, ``file://`` URL or fsspec URL (``s3://bucket/prefix``,
        ``s3://KEY:SECRET@bucket/prefix``, ``gs://…``, ``memory://…``).
    storage_options : mapping, optional
        fsspec options; credentials from the URL are added to a copy.
    purpose : {"output", "cache", "read"}, default "output"
        What the location is for: outputs and caches must be writable; a local location
        to read must exist.

    Returns
    -------
    StorageURL
        The location without credentials, its protocol, the merged options and a display
        form safe for logs.

    Raises
    ------
    ConfigurationError
        Empty, malformed (``s3:/x``, ``s3://`` without a bucket), an unknown or read-only
        protocol, a missing package, or credentials given twice.
    MissingPathError
        ``purpose="read"`` and the local path does not exist (also ``FileNotFoundError``).
    """
    if isinstance(url, os.PathLike):
        url = os.fspath(url)
    if not isinstance(url, str) or not url.strip():
        msg = f"{purpose} location must be a non-empty path or URL, not {url!r}"
        raise ConfigurationError(msg)
    shown = redact_url(url) or ""
    options = dict(storage_options or {})
    if "::" in url:
        return _chained(url, options, purpose, shown)
    scheme, sep, rest = url.partition("://")
    if not sep:
        match = _SCHEME.match(url)
        if match and (url[match.end() :].startswith("/") or _known(match.group(1))):
            why = (
                f"is not a valid URL: write {match.group(1)}://bucket/path (two slashes), "
                f"or ./{url} for a local folder of that name"
            )
            raise _fail(purpose, shown, why)
        return _local(os.path.expanduser(url), url, purpose)
    protocol = scheme.lower()
    _check_protocol(protocol, purpose, shown)
    if protocol in _LOCAL:
        return _local(f"{protocol}://{rest}", shown, purpose)
    userinfo, remainder = url_authority(rest)
    host = remainder.partition("/")[0].partition("?")[0].partition("#")[0]
    if protocol in _NEEDS_HOST and not host:
        raise _fail(purpose, shown, f"names no bucket or host after {protocol}://")
    merged = _credentials(protocol, userinfo, options, purpose, shown)
    # User info that is no credential (``abfs://container@account…``) stays in the URL.
    kept = f"{userinfo}@" if userinfo and protocol not in _CREDENTIAL_KEYS else ""
    clean = f"{protocol}://{kept}{remainder}"
    return StorageURL(clean, protocol, False, merged, redact_url(clean) or "")


def _known(name: str) -> bool:
    return name.lower() in fsspec.available_protocols()


def _local(path: str, shown: str, purpose: str) -> StorageURL:
    if purpose == "read":
        fs_path = path.partition("://")[2] if "://" in path else path
        if not os.path.exists(fs_path):
            msg = f"read location {shown!r} does not exist"
            raise MissingPathError(msg)
    return StorageURL(path, "file", True, {}, shown)


def _chained(url: str, options: dict[str, Any], purpose: str, shown: str) -> StorageURL:
    """``simplecache::s3://…``: every protocol checked; credentials only in options."""
    if purpose != "read":
        raise _fail(purpose, shown, "is a chained URL (::), which only reading accepts")
    for part in url.split("::"):
        scheme, sep, rest = part.partition("://")
        if sep:
            _check_protocol(scheme.lower(), purpose, shown)
            if url_authority(rest)[0]:
                why = "has credentials inside a chained URL: pass them in the storage options"
                raise _fail(purpose, shown, why)
    last = url.rsplit("::", 1)[1].partition("://")[0].lower() or "file"
    return StorageURL(url, last, False, options, shown)
