"""Pin the supported surface: exactly what prolific_ingest and prolific_ingest.testing export."""

from __future__ import annotations

import inspect
import pickle
import typing

import pytest

import prolific_ingest
import prolific_ingest.testing

EXPECTED = {
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
        "on_bad_records",
        "progress",
        "client",
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


PUBLIC_DEFS = [
    name
    for name in prolific_ingest.__all__
    if inspect.isclass(getattr(prolific_ingest, name))
    or inspect.isfunction(getattr(prolific_ingest, name))
]
ERRORS = [
    name
    for name in PUBLIC_DEFS
    if inspect.isclass(cls := getattr(prolific_ingest, name)) and issubclass(cls, BaseException)
]


@pytest.mark.parametrize("name", PUBLIC_DEFS)
def test_public_names_report_the_package_as_their_module(name: str) -> None:
    obj = getattr(prolific_ingest, name)
    assert obj.__module__ == "prolific_ingest"
    assert obj.__qualname__ == name
    assert getattr(prolific_ingest, obj.__qualname__) is obj  # what pickle looks up
    if inspect.isclass(obj):
        assert repr(obj) == f"<class 'prolific_ingest.{name}'>"
    typing.get_type_hints(obj)  # annotations still resolve after the move


def test_retry_policy_repr_and_pickle_name_the_package() -> None:
    policy = prolific_ingest.RetryPolicy(max_attempts=2)
    data = pickle.dumps(policy)
    assert b"prolific_ingest._http" not in data
    assert pickle.loads(data) == policy
    ref = prolific_ingest.ExportRef("batch", "b1")
    assert pickle.loads(pickle.dumps(ref)) == ref


def _example(cls: type[BaseException]) -> BaseException:
    if issubclass(cls, prolific_ingest.APIError):
        return cls(
            "GET /x -> 500 [request id r-1]",
            status=500,
            error_code=7,
            title="t",
            detail={"k": ["v"]},
            method="GET",
            url="https://api.example/x?sig=secret",
            request_id="r-1",
        )
    return cls("boom")


@pytest.mark.parametrize("name", ERRORS)
def test_every_error_survives_a_pickle_round_trip(name: str) -> None:
    cls = getattr(prolific_ingest, name)
    err = _example(cls)
    err.add_note("a note")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert back.args == err.args
    assert str(back) == str(err)
    assert vars(back) == vars(err)
    assert b"sig=secret" not in pickle.dumps(err)


def test_rich_errors_keep_their_own_attributes_through_pickle() -> None:
    limit = prolific_ingest.ExportLimitError(
        "full", existing_jobs=["j1"], status=409, request_id="r-9"
    )
    timeout = prolific_ingest.ExportTimeoutError(
        "late", export_id="e1", elapsed=3.5, last_status="generating"
    )
    throttled = prolific_ingest.RateLimitedError("slow down", retry_after=2.0, status=429)
    missing = prolific_ingest.MissingMemberError("gone", source="a.zip", member="m.jsonl")
    for err in (limit, timeout, throttled, missing):
        back = pickle.loads(pickle.dumps(err))
        assert vars(back) == vars(err)
    assert pickle.loads(pickle.dumps(limit)).existing_jobs == ["j1"]
    assert isinstance(pickle.loads(pickle.dumps(missing)), FileNotFoundError)
