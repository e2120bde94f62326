"""Export lifecycle: value objects and reuse policy (pure), then the API over real sockets."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from prolific_ingest.errors import ConfigurationError
from prolific_ingest.exports import (
    ExportFilter,
    ExportJob,
    ExportRef,
    find_reusable_job,
)

REF = ExportRef("batch", "B1")
T0 = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)

# -- ExportRef ------------------------------------------------------------------------------


def test_ref_paths_and_owner_column() -> None:
    assert ExportRef("batch", "b1").path == "batches/b1"
    assert ExportRef("collection", "c1").path == "collections/c1"
    assert ExportRef("batch", "b1").owner_column == "batch_id"
    assert ExportRef("collection", "c1").owner_column == "collection_id"
    with pytest.raises(dataclasses.FrozenInstanceError):
        REF.id = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kind", "owner"), [("study", "x"), ("batch", ""), ("batch", "a/b"), ("batch", "..")]
)
def test_ref_rejects_bad_values(kind: str, owner: str) -> None:
    with pytest.raises(ConfigurationError):
        ExportRef(kind, owner)  # type: ignore[arg-type]


# -- ExportFilter ---------------------------------------------------------------------------


def test_filter_params_use_api_names_and_utc_seconds() -> None:
    flt = ExportFilter(
        study_id="S1",
        since=datetime(2026, 11, 1, 13, 30, 15, 999, tzinfo=timezone(timedelta(hours=1))),
        until=datetime(2026, 11, 2),  # naive = UTC
    )
    assert flt.to_params() == {
        "study_id": "S1",
        "from": "2026-11-01T12:30:15Z",
        "to": "2026-11-02T00:00:00Z",
    }
    assert ExportFilter().to_params() == {}
    assert ExportFilter().is_empty
    assert not flt.is_empty


def test_filter_coerce_accepts_strings_and_overrides() -> None:
    flt = ExportFilter.coerce(study_id="S", since="2026-11-01T00:00:00Z", until="2026-11-02")
    assert flt.since == datetime(2026, 11, 1, tzinfo=UTC)
    assert flt.until == datetime(2026, 11, 2, tzinfo=UTC)
    assert ExportFilter.coerce(flt) is flt
    assert ExportFilter.coerce(None) == ExportFilter()
    assert ExportFilter.coerce(flt, study_id="T").study_id == "T"
    assert ExportFilter.coerce({"study_id": "S", "from": "2026-11-01T00:00:00+00:00"}) == (
        ExportFilter(study_id="S", since=datetime(2026, 11, 1, tzinfo=UTC))
    )


def test_filters_equal_after_normalisation() -> None:
    a = ExportFilter(since=datetime(2026, 11, 1, 12, 0, 0, 500, tzinfo=UTC))
    b = ExportFilter.coerce(since="2026-11-01T13:00:00+01:00")
    assert a == b
    assert ExportFilter(study_id="  ") == ExportFilter()


def test_filter_json_round_trip() -> None:
    flt = ExportFilter(study_id="S", since=T0)
    data = flt.to_json()
    assert data == {"study_id": "S", "from": "2026-11-01T12:00:00Z", "to": None}
    assert ExportFilter.from_json(data) == flt
    assert ExportFilter.from_json(None) == ExportFilter()
    assert ExportFilter.from_json({"since": "2026-11-01T12:00:00Z"}) == ExportFilter(since=T0)


def test_filter_rejects_unparseable_timestamps() -> None:
    with pytest.raises(ConfigurationError, match="since"):
        ExportFilter.coerce(since="yesterday")
    with pytest.raises(ConfigurationError):
        ExportFilter.from_json({"to": 12})
    assert ExportFilter.from_api({"from": "garbage"}) is None


# -- ExportJob ------------------------------------------------------------------------------


def test_job_repr_hides_the_presigned_query() -> None:
    job = ExportJob(
        REF,
        "E1",
        "complete",
        url="https://store.example/a/b.zip?X-Amz-Signature=SECRET&X-Amz-Credential=C",
    )
    text = repr(job)
    assert "SECRET" not in text
    assert "X-Amz" not in text
    assert "https://store.example/a/b.zip" in text
    assert job.is_complete
    assert not job.replace(url=None).is_complete
    assert job.replace(status="generating").status == "generating"


# -- find_reusable_job ---------------------------------------------------------------------


def _job(eid: str, status: str, created: datetime | None, flt: ExportFilter | None = None) -> Any:
    return ExportJob(REF, eid, status, flt or ExportFilter(), created_at=created)  # type: ignore[arg-type]


def test_reuse_picks_newest_complete_with_same_filter() -> None:
    jobs = [
        _job("gen", "generating", T0),
        _job("failed", "failed", T0 - timedelta(minutes=1)),
        _job("other", "complete", T0 - timedelta(minutes=2), ExportFilter(study_id="S")),
        _job("new", "complete", T0 - timedelta(minutes=10)),
        _job("old", "complete", T0 - timedelta(hours=3)),
    ]
    now = T0 + timedelta(minutes=1)
    assert find_reusable_job(jobs, None, timedelta(hours=1), now).export_id == "new"  # type: ignore[union-attr]
    assert find_reusable_job(list(reversed(jobs)), None, None, now).export_id == "new"  # type: ignore[union-attr]
    assert find_reusable_job(jobs, None, timedelta(minutes=5), now) is None
    reused = find_reusable_job(jobs, ExportFilter(study_id="S"), None, now)
    assert reused is not None
    assert reused.export_id == "other"
    assert find_reusable_job(jobs, ExportFilter(study_id="X"), None, now) is None
    assert find_reusable_job([], None, None, now) is None


def test_reuse_needs_created_at_when_age_matters() -> None:
    jobs = [_job("undated", "complete", None)]
    assert find_reusable_job(jobs, None, timedelta(days=1), T0) is None
    assert find_reusable_job(jobs, None, None, T0).export_id == "undated"  # type: ignore[union-attr]


def test_reuse_ties_keep_list_order_and_accept_naive_now() -> None:
    jobs = [_job("first", "complete", T0), _job("second", "complete", T0)]
    hit = find_reusable_job(jobs, None, timedelta(hours=1), datetime(2026, 11, 1, 12, 30))
    assert hit is not None
    assert hit.export_id == "first"
