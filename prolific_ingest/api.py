"""The user-facing verbs: their signatures and docstrings over the pipeline.

``load_batch_export`` / ``load_collection_export`` do everything (request, poll, download,
cache, parse, optionally load into the Delta lake) through one body,
:func:`~prolific_ingest.pipeline._plan.load_export`; ``read_export`` reads an archive already on
disk or in a bucket; ``load_batch_exports`` loads many batches concurrently.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Unpack

from ._read_export import read_export
from .cache import CachedExport, ExportCache
from .cache._entry import ANY_AGE
from .client import ProlificClient
from .errors import ConfigurationError, ProlificIngestError
from .exports import ExportJob, ExportRef
from .pipeline._fetch import download_into_cache
from .pipeline._options import LoadOptions, load_request, verb_signature
from .pipeline._plan import DEFAULT_MAX_AGE, INCREMENTAL_OVERLAP, load_export
from .result import Export

__all__ = [
    "ANY_AGE",
    "DEFAULT_MAX_AGE",
    "INCREMENTAL_OVERLAP",
    "BatchLoadReport",
    "LoadOptions",
    "download_export",
    "load_batch_export",
    "load_batch_exports",
    "load_collection_export",
    "read_export",
]

logger = logging.getLogger(__name__)


def load_batch_export(batch_id: str, **options: Unpack[LoadOptions]) -> Export:
    """Load a Task Builder batch export as tidy DataFrames (and optionally into a Delta lake).

    Requests an export (or reuses a recent one), polls it until ``complete``, streams the
    archive into the cache, parses it into Arrow-backed DataFrames, and with ``output=``
    merges every table into the Delta lake there (one commit per table, then a load record).

    Parameters
    ----------
    batch_id : str
        The Task Builder batch.
    **options
        The options (all keywords, all optional; :class:`~prolific_ingest.LoadOptions`):

        - ``study_id`` (str, optional): only responses of this study (the API's
          ``study_id`` filter).
        - ``since``, ``until`` (datetime or ISO-8601 str, optional): only responses
          created in ``[since, until)`` (the API's ``from``/``to`` filters); naive
          datetimes are taken as UTC.
        - ``export_id`` (str, optional): load this existing export: from the cache if
          present, else via its status URL. Use it to resume after
          :class:`~prolific_ingest.ExportTimeoutError`.
        - ``max_age`` (timedelta or seconds, default 15 minutes): reuse a cached or
          server-side complete export with the same filter younger than this (measured
          from the export's creation). ``0`` means "never reuse": a new export is
          requested (and ``offline=True`` then finds nothing unless ``export_id`` is
          given); :data:`~prolific_ingest.ANY_AGE` reuses one of any age. With no
          explicit value, ``offline=True`` accepts any age and an incremental ``output``
          uses 0. ``None`` is deprecated (it meant 0 here, "any age" in the cache).
        - ``offline`` (bool, default False): use the cache only, with no network call at
          all; raises :class:`~prolific_ingest.CacheMissError` when nothing suitable is
          cached.
        - ``output`` (str, path or LakeTarget, optional): the Delta lake root (local
          path, ``s3://``, ``gs://``, ``abfs://``): each table is merged into the Delta
          table ``<output>/<table>`` on its natural keys, partitioned by ``batch_id``
          (docs: "Data lakes"). A :class:`~prolific_ingest.LakeTarget` adds the sink's
          options: ``storage_options``, ``partition_by``, ``incremental`` (request only
          responses since the last load recorded in the lake) and ``overwrite``.
        - ``cache`` (str, path or ExportCache, optional): cache location (path or fsspec
          URL); default the client's settings (``$PROLIFIC_INGEST_CACHE`` or the
          per-user cache directory). A remote cache that needs options:
          ``cache=ExportCache(url, storage_options=...)``.
        - ``on_bad_records`` ({"raise", "quarantine", "skip"}, default "raise"): what to
          do with an unparseable JSONL line: raise
          :class:`~prolific_ingest.BadRecordError`, keep it whole in the ``rejected``
          table, or skip it with a logged count.
        - ``progress`` (bool or "auto", optional): progress bars for polling and
          download (auto: notebook widget or TTY bar).
        - ``client`` (ProlificClient or Settings, optional): the connection: token, API
          root, timeouts (``Settings.wait_timeout``: how long to wait for the export,
          default 600 s) and retry policy. Default ``Settings.from_env()``
          (``$PROLIFIC_TOKEN``, ``$PROLIFIC_API_URL`` ...). With ``Settings``, a client
          is made only when the load goes online.

    Returns
    -------
    Export
        ``export_id``, ``batch_id``, ``filter``, ``fetched_at``, ``metadata``,
        ``archive_url``, ``tables`` and each table as an attribute.

    Raises
    ------
    AuthenticationError, PermissionDeniedError, NotFoundError
        The API refused the request (401, 403, 404).
    ExportFailedError, ExportTimeoutError
        The export failed, or did not complete within ``Settings.wait_timeout``.
    ProlificIngestError
        The root of every error this library raises.

    Notes
    -----
    Deprecated since 0.2, removed in 0.3 (each warns with :class:`DeprecationWarning`):
    ``token=``, ``base_url=``, ``retry=`` and ``timeout=`` (configure ``client=``), and
    ``incremental=``, ``overwrite=``, ``partition_by=`` and ``storage_options=`` (give them
    in ``output=LakeTarget(...)``; ``storage_options`` also applied to the cache).
    """
    return load_export(ExportRef("batch", batch_id), load_request("load_batch_export", options))


def load_collection_export(collection_id: str, **options: Unpack[LoadOptions]) -> Export:
    """Load a Task Builder collection export; options as :func:`load_batch_export`.

    That includes ``max_age``: ``0`` never reuses an export, ``ANY_AGE`` reuses any.

    A collection export has the tables ``submissions``, ``responses``, ``answers``,
    ``files``, ``instructions`` and ``rejected`` (no ``tasks``), keyed by ``collection_id``.
    """
    request = load_request("load_collection_export", options)
    return load_export(ExportRef("collection", collection_id), request)


def download_export(
    job: ExportJob,
    *,
    client: ProlificClient,
    cache: str | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: bool | str | None = None,
) -> CachedExport:
    """Download a ``complete`` export job into the cache (verified, committed atomically).

    The lower-level step between :func:`~prolific_ingest.wait_for_export` and
    :func:`read_export`; an export already cached is not downloaded again.

    Parameters
    ----------
    job : ExportJob
        A job whose status is ``complete`` (as returned by ``wait_for_export``).
    client : ProlificClient
        Used only to refresh an expired presigned URL; the download itself never
        carries the token.
    cache : str, optional
        Cache location; default the client's settings.
    storage_options : dict, optional
        fsspec options for a remote cache.
    progress : bool or "auto", optional
        Show a download progress bar.

    Returns
    -------
    CachedExport
        The committed entry; ``entry.archive_path`` can be passed to :func:`read_export`.
    """
    if job.status != "complete" or not job.url:
        msg = (
            f"export {job.export_id} is {job.status!r}, not 'complete': call wait_for_export first"
        )
        raise ConfigurationError(msg)
    location = cache or client.settings.cache_dir
    store = ExportCache(location, storage_options=storage_options)
    hit = store.lookup(job.ref, job.export_id)
    if hit is not None:
        return hit
    return download_into_cache(job, store, client, progress=progress)


@dataclass
class BatchLoadReport:
    """The outcome of :func:`load_batch_exports`: one entry per batch id.

    Attributes
    ----------
    results : dict[str, Export]
        Batches that loaded (and, with ``output``, committed).
    errors : dict[str, Exception]
        Batches that failed, with their error (a :class:`~prolific_ingest.ProlificIngestError`
        for every failure the library anticipates; anything else, such as a full disk,
        is recorded too rather than losing the other batches' results).
    """

    results: dict[str, Export] = field(default_factory=dict)
    errors: dict[str, Exception] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every batch loaded."""
        return not self.errors

    def raise_for_errors(self) -> None:
        """Raise the first error (by batch id) if any batch failed."""
        if self.errors:
            first = min(self.errors)
            raise self.errors[first]

    def __repr__(self) -> str:
        return f"<BatchLoadReport ok={len(self.results)} failed={len(self.errors)}>"


def load_batch_exports(
    batch_ids: Iterable[str], *, max_workers: int = 4, **options: Unpack[LoadOptions]
) -> BatchLoadReport:
    """Load many batches concurrently; one failure never loses the others.

    Parameters
    ----------
    batch_ids : iterable of str
        The batches to load (duplicates are loaded once).
    max_workers : int, default 4
        Concurrent loads.
    **options
        The options of :func:`load_batch_export`, the same for every batch (``output=``,
        ``max_age=`` where ``0`` never reuses an export …). One ``client=`` is shared by
        the loads; without one, each load makes its own from the settings.

    Returns
    -------
    BatchLoadReport
        Per-batch results and errors; one batch's failure never loses another's result.
    """
    request = load_request("load_batch_exports", options)
    ids = list(dict.fromkeys(batch_ids))
    report = BatchLoadReport()
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        futures = {bid: pool.submit(load_export, ExportRef("batch", bid), request) for bid in ids}
        for bid, future in futures.items():
            try:
                report.results[bid] = future.result()
            except ProlificIngestError as exc:
                logger.warning("batch %s failed: %s", bid, exc)
                report.errors[bid] = exc
            except Exception as exc:
                logger.exception("batch %s failed unexpectedly", bid)
                report.errors[bid] = exc
    return report


# help() and inspect show each option with its default, not ``**options``.
load_batch_export.__signature__ = verb_signature(load_batch_export, "batch_id")  # type: ignore[attr-defined]
load_collection_export.__signature__ = verb_signature(load_collection_export, "collection_id")  # type: ignore[attr-defined]
load_batch_exports.__signature__ = verb_signature(  # type: ignore[attr-defined]
    load_batch_exports,
    "batch_ids",
    inspect.Parameter("max_workers", inspect.Parameter.KEYWORD_ONLY, default=4, annotation="int"),
)
