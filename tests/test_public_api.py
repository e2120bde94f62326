"""Pin the supported surface: exactly what prolific_ingest and prolific_ingest.testing export."""

from __future__ import annotations

import inspect

import prolific_ingest
import prolific_ingest.testing

EXPECTED = {
    "DEFAULT_MAX_AGE",
    "APIError",
    "ArchiveError",
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
    "LegacyLakeError",
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
}


def _isort_key(name: str) -> tuple[int, str]:
    # ruff RUF022 order: CONSTANTS, then Classes, then functions/other names.
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


def test_all_is_pinned_and_sorted():
    assert set(prolific_ingest.__all__) == EXPECTED
    assert prolific_ingest.__all__ == sorted(prolific_ingest.__all__, key=_isort_key)
    for name in prolific_ingest.__all__:
        assert hasattr(prolific_ingest, name), name


def test_testing_all_is_sorted_and_importable():
    names = prolific_ingest.testing.__all__
    assert names == sorted(names, key=_isort_key)
    assert {"Emulator", "GroundTruth", "make_batch_export", "make_collection_export"} <= set(names)
    for name in names:
        assert hasattr(prolific_ingest.testing, name), name


def test_every_error_derives_from_the_root_and_keeps_builtin_bases():
    errors = [getattr(prolific_ingest, n) for n in prolific_ingest.__all__ if n.endswith("Error")]
    for cls in errors:
        assert issubclass(cls, prolific_ingest.ProlificIngestError), cls
    assert issubclass(prolific_ingest.AuthenticationError, PermissionError)
    assert issubclass(prolific_ingest.NotFoundError, LookupError)
    assert issubclass(prolific_ingest.ExportTimeoutError, TimeoutError)
    assert issubclass(prolific_ingest.BadRecordError, ValueError)


def test_public_callables_have_numpydoc_docstrings():
    for name in prolific_ingest.__all__:
        obj = getattr(prolific_ingest, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert obj.__doc__ and obj.__doc__.strip(), name
    for name in ("load_batch_export", "read_export", "load_batch_exports"):
        doc = getattr(prolific_ingest, name).__doc__
        assert "Parameters\n    ----------" in doc and "Returns\n    -------" in doc, name


def test_load_signatures_match_the_contract():
    expected = [
        "study_id",
        "since",
        "until",
        "export_id",
        "max_age",
        "offline",
        "output",
        "cache",
        "token",
        "base_url",
        "timeout",
        "progress",
    ]
    for fn in (prolific_ingest.load_batch_export, prolific_ingest.load_collection_export):
        params = inspect.signature(fn).parameters
        assert all(params[p].kind is inspect.Parameter.KEYWORD_ONLY for p in expected)
        assert set(expected) <= set(params)
    assert inspect.signature(prolific_ingest.load_batch_export).parameters.keys() - {
        "batch_id"
    } == (
        inspect.signature(prolific_ingest.load_collection_export).parameters.keys()
        - {"collection_id"}
    )


def test_package_is_typed():
    from importlib.resources import files

    assert files("prolific_ingest").joinpath("py.typed").is_file()
