"""Where the lake lives: its URL, a display form without secrets, and delta-rs options.

Users pass the fsspec-style ``storage_options`` they already use for the cache
(``key``/``secret``, ``client_kwargs.endpoint_url``, ``anon``, ``profile`` …);
delta-rs (object_store) takes its own keys. :func:`delta_storage_options` is the one
place that translates between the two.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .._urls import parse_storage_url
from ..errors import ConfigurationError, SinkError

__all__ = ["Lake", "delta_storage_options", "resolve_lake", "scrub"]

_REMOTE = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "azure"}
_LOCAL = {"", "file"}

# fsspec (s3fs / gcsfs / adlfs) option -> delta-rs (object_store) option.
_S3 = {
    "key": "AWS_ACCESS_KEY_ID",
    "secret": "AWS_SECRET_ACCESS_KEY",
    "token": "AWS_SESSION_TOKEN",
    "profile": "AWS_PROFILE",
    "endpoint_url": "AWS_ENDPOINT_URL",
    "region_name": "AWS_REGION",
    "region": "AWS_REGION",
}
_GCS = {"project": None, "endpoint_url": "GOOGLE_BASE_URL"}
_AZURE = {
    "account_name": "AZURE_STORAGE_ACCOUNT_NAME",
    "account_key": "AZURE_STORAGE_ACCOUNT_KEY",
    "sas_token": "AZURE_STORAGE_SAS_KEY",
    "tenant_id": "AZURE_STORAGE_TENANT_ID",
    "client_id": "AZURE_STORAGE_CLIENT_ID",
    "client_secret": "AZURE_STORAGE_CLIENT_SECRET",
}
# fsspec options that tune fsspec's own caching and have no delta-rs meaning.
_FSSPEC_ONLY = {"use_listings_cache", "listings_expiry_time", "skip_instance_cache", "asynchronous"}
_NATIVE_PREFIXES = ("aws_", "google_", "azure_")


@dataclass(frozen=True)
class Lake:
    """A resolved lake root.

    Attributes
    ----------
    uri : str
        What delta-rs is given: an absolute local path or a ``scheme://`` URL.
    display : str
        The URL without user info or query (for messages and logs).
    options : dict[str, str]
        delta-rs storage options.
    fsspec_options : dict
        The caller's options, for the fsspec look-ups (old layout detection).
    """

    uri: str
    display: str
    options: dict[str, str] = field(repr=False)
    fsspec_options: dict[str, Any] = field(repr=False)

    def table(self, name: str) -> str:
        """URI of the Delta table ``name``."""
        return f"{self.uri}/{name}"

    def shown(self, name: str) -> str:
        """Display URL of the Delta table ``name``."""
        return f"{self.display}/{name}"

    @property
    def is_local(self) -> bool:
        """Whether the lake is on the local filesystem."""
        return "://" not in self.uri


def _scheme(url: str) -> str:
    return urlsplit(url).scheme.lower() if "://" in url else ""


def resolve_lake(
    url: str | os.PathLike[str],
    storage_options: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Lake:
    """Resolve ``url`` (a path or URL) and translate ``storage_options`` for delta-rs.

    Raises
    ------
    ConfigurationError
        Not a path or URL, an unsupported protocol (``memory://`` included: delta-rs
        keeps a fresh in-memory store per table handle, so nothing written there could
        be read back), or an option delta-rs has no equivalent for.
    """
    # The one URL rule of the package first: malformed URLs, unknown protocols, and
    # credentials in the URL moved into the options.
    target = parse_storage_url(url, storage_options, purpose="output")
    given = target.url.rstrip("/") or target.url
    scheme = "" if target.is_local else target.protocol
    display = target.display
    storage_options = target.storage_options
    if scheme == "memory":
        msg = (
            f"{display}: memory:// cannot hold a Delta lake (delta-rs keeps a fresh in-memory "
            "store per table handle, so a table written there is gone for the next reader); "
            "use a local folder (a temporary directory in tests) or an object store"
        )
        raise ConfigurationError(msg)
    if scheme not in _REMOTE | _LOCAL:
        msg = (
            f"{display}: unsupported lake protocol {scheme!r}:// (use a local path, file://, "
            "s3://, gs:// or abfs://)"
        )
        raise ConfigurationError(msg)
    if target.is_local:
        path = given.removeprefix("file://")
        uri = str(Path(path).expanduser().absolute())
        display = uri
    else:
        uri = given
    options = delta_storage_options(given, storage_options, environ=environ)
    return Lake(
        uri=uri, display=display, options=options, fsspec_options=dict(storage_options or {})
    )


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def delta_storage_options(
    url: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Translate fsspec-style ``storage_options`` for ``url`` into delta-rs options.

    Parameters
    ----------
    url : str
        The lake URL (its protocol selects the translation table).
    storage_options : Mapping, optional
        s3fs / gcsfs / adlfs options (``key``, ``secret``, ``token``, ``anon``,
        ``profile``, ``client_kwargs={"endpoint_url": …, "region_name": …}``,
        ``endpoint_url``, ``account_name`` …) and/or delta-rs options given as-is
        (``AWS_REGION``, ``aws_allow_http`` …).
    environ : Mapping, optional
        The environment to consult (default ``os.environ``): delta-rs reads ``AWS_*``
        itself, but an ``http://`` endpoint set there also needs ``AWS_ALLOW_HTTP``.

    Returns
    -------
    dict[str, str]
        Options for ``deltalake`` (values are strings).

    Raises
    ------
    ConfigurationError
        An option with no delta-rs equivalent (named; its value is never shown).
    """
    env = os.environ if environ is None else environ
    scheme = _scheme(url)
    given = dict(storage_options or {})
    flat: dict[str, Any] = {}
    client_kwargs = given.pop("client_kwargs", None) or {}
    if not isinstance(client_kwargs, Mapping):
        msg = "storage_options['client_kwargs'] must be a mapping"
        raise ConfigurationError(msg)
    flat.update({k: v for k, v in client_kwargs.items() if k in ("endpoint_url", "region_name")})
    unknown_client = sorted(set(client_kwargs) - {"endpoint_url", "region_name", "verify"})
    if unknown_client:
        msg = f"storage_options client_kwargs {unknown_client} have no Delta Lake equivalent"
        raise ConfigurationError(msg)
    flat.update(given)
    out: dict[str, str] = {}
    table = _S3 if scheme in ("s3", "s3a") else _GCS if scheme in ("gs", "gcs") else _AZURE
    unknown: list[str] = []
    for key, value in flat.items():
        if value is None or key in _FSSPEC_ONLY:
            continue
        if key.lower().startswith(_NATIVE_PREFIXES):
            out[key.upper()] = _text(value)
        elif key == "anon":
            if value:
                prefix = {"s3": "AWS", "s3a": "AWS", "gs": "GOOGLE", "gcs": "GOOGLE"}
                out[f"{prefix.get(scheme, 'AZURE')}_SKIP_SIGNATURE"] = "true"
        elif key == "token" and scheme in ("gs", "gcs"):
            if value == "anon":
                out["GOOGLE_SKIP_SIGNATURE"] = "true"
            elif isinstance(value, str | os.PathLike):
                out["GOOGLE_SERVICE_ACCOUNT"] = os.fspath(value)
            else:
                unknown.append("token (only a path to a service-account file or 'anon')")
        elif key in table:
            target = table[key]
            if target is not None:
                out[target] = _text(value)
        else:
            unknown.append(key)
    if unknown:
        msg = (
            f"storage_options {sorted(unknown)} have no Delta Lake (delta-rs) equivalent for "
            f"{scheme or 'local'} URLs; pass delta-rs options by their own names instead"
        )
        raise ConfigurationError(msg)
    if scheme in ("s3", "s3a"):
        endpoint = (
            out.get("AWS_ENDPOINT_URL")
            or env.get("AWS_ENDPOINT_URL_S3")
            or env.get("AWS_ENDPOINT_URL")
        )
        if endpoint and endpoint.startswith("http://"):
            out.setdefault("AWS_ALLOW_HTTP", "true")
        if "AWS_REGION" not in out and not env.get("AWS_REGION") and env.get("AWS_DEFAULT_REGION"):
            out["AWS_REGION"] = env["AWS_DEFAULT_REGION"]
    return out


def scrub(text: str, lake: Lake) -> str:
    """``text`` with every secret of ``lake`` (option values, URL password) replaced by ``***``."""
    secrets = [
        v
        for k, v in lake.options.items()
        if any(w in k for w in ("SECRET", "KEY", "TOKEN", "SAS", "PASSWORD")) and len(v) >= 4
    ]
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def sink_error(lake: Lake, doing: str, exc: BaseException) -> SinkError:
    """A :class:`SinkError` for a delta-rs / storage failure, secrets removed."""
    detail = scrub(f"{type(exc).__name__}: {exc}", lake)
    return SinkError(f"could not {doing} {lake.display}: {detail}", url=lake.display)


def scan(delta: Any, *, columns: list[str] | None = None, filter: Any = None) -> Any:
    """Read a ``DeltaTable`` as a ``pyarrow.Table`` (file pruning by partition and stats).

    Scans single-threaded: with deltalake 1.6.6 and pyarrow 25, a threaded scan of a
    Delta dataset can leave a thread behind that aborts the interpreter at exit
    ("terminate called without an active exception").
    """
    dataset = delta.to_pyarrow_dataset()
    return dataset.to_table(columns=columns, filter=filter, use_threads=False)


# delta-rs S3 option -> pyarrow.fs.S3FileSystem argument.
_ARROW_S3 = {
    "AWS_ACCESS_KEY_ID": "access_key",
    "AWS_SECRET_ACCESS_KEY": "secret_key",
    "AWS_SESSION_TOKEN": "session_token",
    "AWS_REGION": "region",
}


def arrow_filesystem(lake: Lake, name: str) -> tuple[Any, str] | None:
    """A ``pyarrow.fs`` filesystem and the path of table ``name`` in it, or ``None``.

    For a local lake and ``s3://`` with options pyarrow's S3 client takes the same way
    (keys, token, region, endpoint, also from ``AWS_ENDPOINT_URL[_S3]``, unsigned); ``None`` for other stores and options
    (``AWS_PROFILE`` …), which are written by delta-rs alone.
    """
    import pyarrow.fs as pafs

    if lake.is_local:
        return pafs.LocalFileSystem(), lake.table(name)
    parts = urlsplit(lake.table(name))
    if parts.scheme.lower() not in ("s3", "s3a"):
        return None
    kwargs: dict[str, Any] = {}
    options = dict(lake.options)
    # delta-rs reads the endpoint from the environment too; pyarrow's client does not.
    from_env = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if from_env and "AWS_ENDPOINT_URL" not in options:
        options["AWS_ENDPOINT_URL"] = from_env
    for key, value in options.items():
        if key in _ARROW_S3:
            kwargs[_ARROW_S3[key]] = value
        elif key == "AWS_ENDPOINT_URL":
            endpoint = urlsplit(value)
            if endpoint.scheme not in ("http", "https") or endpoint.path.strip("/"):
                return None
            kwargs["scheme"] = endpoint.scheme
            kwargs["endpoint_override"] = endpoint.netloc
        elif key == "AWS_SKIP_SIGNATURE":
            kwargs["anonymous"] = value.lower() == "true"
        elif key != "AWS_ALLOW_HTTP":
            return None
    return pafs.S3FileSystem(**kwargs), f"{parts.netloc}{parts.path}"
