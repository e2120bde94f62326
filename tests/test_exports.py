"""Export lifecycle: value objects and reuse policy (pure), then the API over real sockets."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import pytest

from prolific_ingest._http.retry import RetryPolicy
from prolific_ingest.client import ProlificClient
from prolific_ingest.config import Secret, Settings
from prolific_ingest.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ExportFailedError,
    ExportLimitError,
    ExportStillGeneratingError,
    ExportTimeoutError,
    NotFoundError,
    PermissionDeniedError,
)
from prolific_ingest.exports import (
    ExportFilter,
    ExportJob,
    ExportRef,
    delete_job,
    find_reusable_job,
    get_export,
    list_jobs,
    refresh_url,
    request_export,
    wait_for_export,
)
from prolific_ingest.testing import Emulator
from tests._helpers import FakeClock, logged

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


# -- the lifecycle against the emulator (real sockets) ---------------------------------------


@pytest.fixture(scope="module")
def _server() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


@pytest.fixture
def emu(_server: Emulator) -> Emulator:
    _server.reset()
    return _server


def connect(emu: Emulator, **kw: Any) -> tuple[ProlificClient, FakeClock]:
    clock = FakeClock()
    settings = Settings(base_url=emu.base_url, token=Secret(emu.token))
    kw.setdefault("retry", RetryPolicy(jitter="none"))
    return ProlificClient(settings, sleep=clock.sleep, clock=clock, **kw), clock


def wait(client: ProlificClient, job: ExportJob, clock: FakeClock, **kw: Any) -> ExportJob:
    return wait_for_export(client, job, sleep=clock.sleep, clock=clock, **kw)


def test_request_then_wait_until_complete(emu: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    ref = ExportRef("batch", emu.add_batch(seed=1, n_submissions=3))
    client, clock = connect(emu)
    job = request_export(client, ref)
    assert job.status == "generating"
    assert job.url is None
    with caplog.at_level(logging.INFO, logger="prolific_ingest.exports"):
        done = wait(client, job, clock, poll_interval=3.0, poll_max_interval=15.0)
    assert done.is_complete
    assert done.export_id == job.export_id
    assert done.expires_at is not None
    assert done.url is not None
    assert done.url.startswith(emu.download_url)
    assert clock.sleeps == [3.0, 4.5]  # two 'generating' polls, then complete
    assert f"export {job.export_id}: generating -> complete after 7.5s" in caplog.text
    assert "Signature" not in caplog.text
    assert wait(client, done, clock) is done  # already complete: no further polling


def test_filter_is_sent_with_api_names(emu: Emulator) -> None:
    ref = ExportRef("batch", emu.add_batch(seed=2, n_submissions=2))
    client, _ = connect(emu)
    flt = ExportFilter.coerce(study_id="S1", since="2026-01-01T00:00:00+01:00")
    job = request_export(client, ref, flt)
    listed = list_jobs(client, ref)
    post = next(r for r in logged(emu, 2) if r.method == "POST")
    assert post.query == {"study_id": "S1", "from": "2025-12-31T23:00:00Z"}
    assert [(j.export_id, j.filter) for j in listed] == [(job.export_id, flt)]
    assert listed[0].created_at is not None


def test_polling_grows_to_the_ceiling_then_times_out(emu: Emulator) -> None:
    emu.polls_until_complete = 1000
    ref = ExportRef("batch", emu.add_batch(seed=3, n_submissions=1))
    client, clock = connect(emu)
    job = request_export(client, ref)
    with pytest.raises(ExportTimeoutError) as info:
        wait(client, job, clock, timeout=60.0, poll_interval=3.0, poll_max_interval=15.0)
    assert clock.sleeps == [3.0, 4.5, 6.75, 10.125, 15.0, 15.0, 5.625]
    err = info.value
    assert isinstance(err, TimeoutError)
    assert err.export_id == job.export_id
    assert err.last_status == "generating"
    assert err.elapsed == 60.0
    assert f"export_id={job.export_id!r}" in str(err)


def test_wait_uses_settings_defaults(emu: Emulator) -> None:
    ref = ExportRef("batch", emu.add_batch(seed=4, n_submissions=1))
    clock = FakeClock()
    settings = Settings(
        base_url=emu.base_url, token=Secret(emu.token), poll_interval=2.0, poll_max_interval=2.5
    )
    client = ProlificClient(settings, sleep=clock.sleep, clock=clock)
    wait(client, request_export(client, ref), clock)
    assert clock.sleeps == [2.0, 2.5]


def test_failed_job(emu: Emulator) -> None:
    emu.faults.fail_job()
    ref = ExportRef("batch", emu.add_batch(seed=5, n_submissions=1))
    client, clock = connect(emu)
    job = request_export(client, ref)
    with pytest.raises(ExportFailedError, match="request a new export") as info:
        wait(client, job, clock)
    assert info.value.export_id == job.export_id


def test_complete_then_failed_on_refresh(emu: Emulator) -> None:
    emu.faults.complete_then_fail()
    ref = ExportRef("batch", emu.add_batch(seed=6, n_submissions=1))
    client, clock = connect(emu)
    done = wait(client, request_export(client, ref), clock)
    assert done.is_complete
    with pytest.raises(ExportFailedError):
        refresh_url(client, done)


def test_archive_deleted_from_storage(emu: Emulator) -> None:
    bid = emu.add_batch(seed=7, n_submissions=1)
    client, clock = connect(emu)
    done = wait(client, request_export(client, ExportRef("batch", bid)), clock)
    emu.delete_archive(bid, done.export_id)
    assert get_export(client, done.ref, done.export_id).status == "failed"
    with pytest.raises(ExportFailedError):
        wait(client, done.replace(status="generating"), clock)


def test_refresh_url_after_expiry(emu: Emulator) -> None:
    ref = ExportRef("batch", emu.add_batch(seed=8, n_submissions=1))
    client, clock = connect(emu)
    done = wait(client, request_export(client, ref), clock)
    emu.advance_time(3700)
    fresh = refresh_url(client, done)
    assert fresh.is_complete
    assert fresh.url != done.url
    assert fresh.expires_at is not None
    assert done.expires_at is not None
    assert fresh.expires_at > done.expires_at


def test_lost_post_response_leaks_no_job(emu: Emulator) -> None:
    bid = emu.add_batch(seed=9, n_submissions=1)
    rule = emu.faults.drop_api_response(method="POST")
    client, clock = connect(emu)
    job = request_export(client, ExportRef("batch", bid))
    assert rule.triggered == 1
    posts = [r for r in logged(emu, 2) if r.method == "POST"]
    assert [r.status for r in posts] == [0, 202]  # the first answer was lost
    assert [j["export_id"] for j in emu.jobs(bid)] == [job.export_id]
    assert len(clock.sleeps) == 1


def test_rate_limited_post_honours_retry_after(emu: Emulator) -> None:
    ref = ExportRef("batch", emu.add_batch(seed=10, n_submissions=1))
    emu.faults.rate_limit(times=1, retry_after=2)
    client, clock = connect(emu)
    request_export(client, ref)
    assert clock.sleeps == [2.0]
    assert [r.status for r in logged(emu, 2)] == [429, 202]


def test_legacy_200_complete_gets_its_id_from_the_list(emu: Emulator) -> None:
    emu.legacy_post = True
    bid = emu.add_batch(seed=11, n_submissions=1)
    client, _ = connect(emu)
    job = request_export(client, ExportRef("batch", bid))
    assert job.is_complete
    assert job.export_id == emu.jobs(bid)[0]["export_id"]
    again = request_export(client, ExportRef("batch", bid))
    assert again.export_id == job.export_id
    assert len(emu.jobs(bid)) == 1


def test_legacy_id_is_synthesised_when_the_list_fails(
    emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    emu.legacy_post = True
    bid = emu.add_batch(seed=12, n_submissions=1)
    emu.faults.server_error(times=1, status=500, method="GET")
    client, _ = connect(emu, retry=RetryPolicy.none())
    with caplog.at_level(logging.INFO, logger="prolific_ingest.exports"):
        job = request_export(client, ExportRef("batch", bid))
    assert job.export_id.startswith("legacy-")
    assert len(job.export_id) == len("legacy-") + 16
    assert job.export_id in caplog.text
    assert job.url is not None
    # stable: derived from the archive's URL path, not its signature
    assert (
        job.export_id
        == "legacy-" + hashlib.sha256(urlsplit(job.url).path.encode()).hexdigest()[:16]
    )
    fresh = refresh_url(client, job)  # refreshed by requesting the export again
    assert fresh.export_id == job.export_id
    assert fresh.is_complete


def test_list_and_delete(emu: Emulator) -> None:
    bid = emu.add_batch(seed=13, n_submissions=1)
    ref = ExportRef("batch", bid)
    client, clock = connect(emu)
    first = wait(client, request_export(client, ref), clock)
    second = request_export(client, ref, ExportFilter(study_id="S"))
    listed = list_jobs(client, ref)
    assert [j.export_id for j in listed] == [second.export_id, first.export_id]
    assert [j.status for j in listed] == ["generating", "complete"]
    with pytest.raises(ExportStillGeneratingError):
        delete_job(client, ref, second.export_id)
    delete_job(client, ref, first.export_id)
    assert [j.export_id for j in list_jobs(client, ref)] == [second.export_id]
    with pytest.raises(NotFoundError):
        delete_job(client, ref, first.export_id)
    with pytest.raises(NotFoundError):
        get_export(client, ref, first.export_id)


def test_export_limit_lists_existing_jobs(emu: Emulator) -> None:
    ref = ExportRef("batch", emu.add_batch(seed=14, n_submissions=1))
    client, _ = connect(emu)
    for i in range(10):
        request_export(client, ref, ExportFilter(study_id=f"S{i}"))
    with pytest.raises(ExportLimitError) as info:
        request_export(client, ref, ExportFilter(study_id="S10"))
    assert len(info.value.existing_jobs) == 10
    assert info.value.status == 409
    assert "existing jobs" in str(info.value)


def test_collections(emu: Emulator) -> None:
    ref = ExportRef("collection", emu.add_collection(seed=15, n_submissions=2))
    client, clock = connect(emu)
    done = wait(client, request_export(client, ref), clock)
    assert done.is_complete
    assert "/collections/" in logged(emu, 1)[0].path


def test_error_statuses_from_the_api(emu: Emulator) -> None:
    bid = emu.add_batch(seed=16, n_submissions=1)
    client, _ = connect(emu)
    with pytest.raises(NotFoundError):
        request_export(client, ExportRef("batch", "no-such-batch"))
    with pytest.raises(BadRequestError, match="from"):
        client.request("POST", f"batches/{bid}/export", params={"from": "yesterday"})
    denied = emu.add_batch(seed=17, n_submissions=1, access=False)
    with pytest.raises(PermissionDeniedError):
        list_jobs(client, ExportRef("batch", denied))
    bad = ProlificClient(Settings(base_url=emu.base_url, token=Secret("wrong-token")))
    with pytest.raises(AuthenticationError):
        list_jobs(bad, ExportRef("batch", bid))


def test_every_api_call_is_authenticated(emu: Emulator) -> None:
    ref = ExportRef("batch", emu.add_batch(seed=18, n_submissions=1))
    client, clock = connect(emu)
    wait(client, request_export(client, ref), clock)
    list_jobs(client, ref)
    api_calls = [r for r in logged(emu, 5) if r.host == "api"]
    assert len(api_calls) >= 4
    for record in api_calls:
        headers = {k.lower(): v for k, v in record.headers.items()}
        assert "authorization" in headers
        assert headers["user-agent"].startswith("prolific-ingest/")


# -- a 'complete' status without a usable url --------------------------------------------------


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"status": "complete"}, "has no url"),
        ({"status": "complete", "url": None}, "has no url"),
        ({"status": "complete", "url": 12345}, "JSON int, not a string"),
        ({"status": "complete", "url": ["https://x"]}, "JSON list, not a string"),
        ({"status": "complete", "url": "  "}, "has an empty url"),
    ],
)
def test_complete_without_a_usable_url_is_a_typed_error_not_still_generating(
    body: dict[str, Any], problem: str
) -> None:
    import json
    from http.server import BaseHTTPRequestHandler

    from tests._helpers import serve

    payload = json.dumps(body).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    with serve(Handler) as url:
        client = ProlificClient(Settings(base_url=url, token=Secret("t0ken-value")))
        job = ExportJob(ExportRef("batch", "b1"), "e1", "generating", ExportFilter())
        with pytest.raises(APIError, match=problem) as info:
            get_export(client, job.ref, "e1")
        assert "'complete'" in str(info.value) and "e1" in str(info.value)
        assert "is still generating" not in str(info.value)
        clock = FakeClock()
        with pytest.raises(APIError, match=problem):
            wait_for_export(client, job, timeout=600, sleep=clock.sleep, clock=clock)
        assert clock.sleeps == []  # at once, not after polling until the timeout
