"""Each fault as the emulator puts it on the wire, and a load that meets it.

A section per fault: first what the emulator sends (raw requests, no library client), then
that a load through it ends with exact data or a typed error and no cache entry. How the
fault rules themselves match, count and clear is in ``test_emulator_fault_rules.py``.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import threading
import zipfile
from pathlib import Path

import pytest
import requests

from prolific_ingest import (
    BadRecordError,
    CorruptArchiveError,
    ExportFailedError,
    ExportLimitError,
    ExportRef,
    ExportTimeoutError,
    ProlificClient,
    ProlificIngestError,
    RetryPolicy,
    Settings,
    load_batch_export,
    read_export,
    request_export,
)
from prolific_ingest.testing import Emulator
from tests._helpers import auth_header, complete_url, export_url, poll_export, post_export
from tests._truth import assert_matches_truth

FAST_RETRY = RetryPolicy(max_attempts=6, backoff_base=0.001, backoff_max=0.01, max_elapsed=30)


@pytest.fixture
def emu(prolific_emulator):
    return prolific_emulator


@pytest.fixture
def conn(conn):
    """The shared emulator ``conn`` with fast retries."""
    return {**conn, "client": ProlificClient(conn["client"], retry=FAST_RETRY)}


@pytest.fixture
def batch(emu: Emulator) -> str:
    """A batch whose exports complete at once, for the tests that poll the wire by hand."""
    emu.polls_until_complete = 0
    return emu.add_batch(seed=11, n_submissions=6)


def _manifests(conn) -> list[Path]:
    return sorted(Path(conn["cache"]).rglob("manifest.json"))


def _downloads(emu) -> list:
    return [r for r in emu.requests if r.host == "download" and r.method == "GET"]


# -- rate limits and server errors: answered as the API would, retried to exact data ---------


def test_rate_limit_with_and_without_retry_after(emu: Emulator, batch: str) -> None:
    with_header = emu.faults.rate_limit(times=1, retry_after=2)
    without = emu.faults.rate_limit(times=1)
    first, second, third = (post_export(emu, batch) for _ in range(3))
    assert first.status_code == 429
    assert first.headers["Retry-After"] == "2"
    assert first.json()["error"]["status"] == 429
    assert second.status_code == 429
    assert "Retry-After" not in second.headers
    assert third.status_code == 202
    assert (with_header.triggered, with_header.remaining) == (1, 0)
    assert (without.triggered, without.remaining) == (1, 0)
    assert len(emu.jobs(batch)) == 1  # refused requests did not create jobs


def test_rate_limit_http_date_and_fraction(emu: Emulator, batch: str) -> None:
    emu.faults.rate_limit(retry_after="Wed, 21 Oct 2026 07:28:00 GMT")
    emu.faults.rate_limit(retry_after=0.5)
    assert post_export(emu, batch).headers["Retry-After"] == "Wed, 21 Oct 2026 07:28:00 GMT"
    assert post_export(emu, batch).headers["Retry-After"] == "0.5"


def test_server_error_filtered_by_method_and_path(emu: Emulator, batch: str) -> None:
    rule = emu.faults.server_error(times=2, status=502, method="GET", path_contains="/export/")
    export_id = post_export(emu, batch).json()["export_id"]  # POST is not affected
    url = export_url(emu, batch, export_id)
    codes = [requests.get(url, headers=auth_header(emu), timeout=10).status_code for _ in range(3)]
    assert codes == [502, 502, 200]
    assert rule.triggered == 2
    assert rule.remaining == 0


def test_rate_limits_and_server_errors_are_retried_to_exact_data(emu, conn):
    batch_id = emu.add_batch(seed=1, n_submissions=6)
    emu.faults.rate_limit(times=2, retry_after=0)
    emu.faults.rate_limit(times=1)
    emu.faults.server_error(times=2, status=503)
    exp = load_batch_export(batch_id, **conn)
    assert_matches_truth(exp.arrow.tables, emu.ground_truth(batch_id))
    assert [r.status for r in emu.requests if r.status in (429, 503)] == [429, 429, 429, 503, 503]


# -- a lost response: the request was processed, and retrying it makes no second job ---------


def test_drop_api_response_does_not_leak_jobs(emu: Emulator, batch: str) -> None:
    emu.polls_until_complete = 3
    rule = emu.faults.drop_api_response(times=1)
    with pytest.raises(requests.ConnectionError):
        post_export(emu, batch)
    assert rule.triggered == 1
    jobs = emu.jobs(batch)
    assert len(jobs) == 1  # the request was processed
    retry = post_export(emu, batch)
    assert retry.json()["export_id"] == jobs[0]["export_id"]  # reused, not a second job
    assert len(emu.jobs(batch)) == 1
    assert [r.status for r in emu.requests if r.method == "POST"] == [0, 202]


def test_lost_post_response_does_not_leak_jobs(emu, conn):
    batch_id = emu.add_batch(seed=2, n_submissions=4)
    emu.faults.drop_api_response(times=1, method="POST")
    exp = load_batch_export(batch_id, **conn)
    assert len(emu.jobs(batch_id)) == 1
    assert_matches_truth(exp.arrow.tables, emu.ground_truth(batch_id))


# -- failing jobs: a job that fails, or completes and then fails, is reported typed ----------


def test_fail_job(emu: Emulator, batch: str) -> None:
    emu.polls_until_complete = 1
    rule = emu.faults.fail_job()
    export_id = post_export(emu, batch).json()["export_id"]
    assert poll_export(emu, batch, export_id)["status"] == "generating"
    assert poll_export(emu, batch, export_id) == {"status": "failed"}
    assert rule.triggered == 1
    assert emu.jobs(batch)[0]["status"] == "failed"
    second = post_export(emu, batch).json()["export_id"]
    poll_export(emu, batch, second)
    assert poll_export(emu, batch, second)["status"] == "complete"


def test_complete_then_fail(emu: Emulator, batch: str) -> None:
    emu.faults.complete_then_fail()
    export_id = post_export(emu, batch).json()["export_id"]
    first = poll_export(emu, batch, export_id)
    assert first["status"] == "complete"
    assert poll_export(emu, batch, export_id) == {"status": "failed"}
    assert requests.get(first["url"], timeout=10).status_code == 404


def test_job_that_completes_then_fails_is_reported(emu, conn):
    batch_id = emu.add_batch(seed=7, n_submissions=3)
    first = load_batch_export(batch_id, **conn)
    emu.delete_archive(batch_id, first.export_id)
    # The cached copy still serves an export_id reload; a fresh fetch of it must fail typed.
    again = load_batch_export(batch_id, export_id=first.export_id, **conn)
    assert again.export_id == first.export_id
    other = dict(conn, cache=conn["cache"] + "-other")
    with pytest.raises(ExportFailedError):
        load_batch_export(batch_id, export_id=first.export_id, **other)


# -- expired download URLs: refused as S3 does, refreshed by the load ------------------------


def test_expired_url_then_fresh(emu: Emulator, batch: str) -> None:
    rule = emu.faults.expired_url()
    export_id, url = complete_url(emu, batch)
    refused = requests.get(url, timeout=10)
    assert refused.status_code == 403
    assert "Request has expired" in refused.text
    fresh = poll_export(emu, batch, export_id)["url"]
    assert fresh != url
    assert requests.get(fresh, timeout=10).status_code == 200
    assert rule.triggered == 1


def test_expired_url_is_refreshed_and_the_load_continues(emu, conn):
    batch_id = emu.add_batch(seed=3, n_submissions=4)
    emu.faults.expired_url(times=1)
    exp = load_batch_export(batch_id, **conn)
    assert [r.status for r in _downloads(emu)][:1] == [403]
    assert_matches_truth(exp.arrow.tables, emu.ground_truth(batch_id))


# -- broken downloads: errors, drops and corruption, resumed or fetched again within the budget ---


def test_download_error(emu: Emulator, batch: str) -> None:
    rule = emu.faults.download_error(status=500, times=1)
    _, url = complete_url(emu, batch)
    first = requests.get(url, timeout=10)
    assert first.status_code == 500
    assert "<Error>" in first.text
    assert requests.get(url, timeout=10).status_code == 200
    assert rule.triggered == 1


def test_drop_download_part_way(emu: Emulator, batch: str) -> None:
    _, url = complete_url(emu, batch)
    whole = requests.get(url, timeout=10).content
    rule = emu.faults.drop_download(after_bytes=1000)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url, timeout=10).content  # noqa: B018
    assert rule.triggered == 1
    # a Range request resumes where the drop happened
    rest = requests.get(url, headers={"Range": "bytes=1000-"}, timeout=10)
    assert rest.status_code == 206
    assert whole[:1000] + rest.content == whole


def test_corrupt_download(emu: Emulator, batch: str) -> None:
    _, url = complete_url(emu, batch)
    good = requests.get(url, timeout=10)
    emu.faults.corrupt_download(offset=123)
    bad = requests.get(url, timeout=10)
    assert bad.status_code == 200
    assert len(bad.content) == len(good.content)
    diff = [i for i, (a, b) in enumerate(zip(good.content, bad.content, strict=True)) if a != b]
    assert diff == [123]
    assert bad.headers["ETag"] == f'"{hashlib.md5(good.content).hexdigest()}"'
    assert hashlib.md5(bad.content).hexdigest() not in bad.headers["ETag"]
    assert requests.get(url, timeout=10).content == good.content


def test_dropped_download_resumes_with_range(emu, conn):
    batch_id = emu.add_batch(seed=4, n_submissions=30)
    emu.faults.drop_download(after_bytes=200_000, times=1)
    exp = load_batch_export(batch_id, **conn)
    ranged = [r for r in _downloads(emu) if "range" in {k.lower() for k in r.headers}]
    assert ranged, "the second request should resume with a Range header"
    range_value = next(v for k, v in ranged[0].headers.items() if k.lower() == "range")
    assert range_value.startswith("bytes=") and range_value != "bytes=0-"
    assert_matches_truth(exp.arrow.tables, emu.ground_truth(batch_id))


def test_corrupt_download_is_fetched_again(emu, conn):
    batch_id = emu.add_batch(seed=5, n_submissions=10)
    emu.faults.corrupt_download(offset=2_000, times=1)
    exp = load_batch_export(batch_id, **conn)
    assert len([r for r in _downloads(emu) if r.status in (200, 206)]) >= 2
    assert_matches_truth(exp.arrow.tables, emu.ground_truth(batch_id))


def test_always_corrupt_download_raises_and_caches_nothing(emu, conn):
    batch_id = emu.add_batch(seed=5, n_submissions=10)
    emu.faults.corrupt_download(offset=2_000, times=None)
    with pytest.raises(CorruptArchiveError):
        load_batch_export(batch_id, **conn)
    assert _manifests(conn) == []
    leftovers = [p for p in Path(conn["cache"]).rglob("*") if p.is_file() and ".lock" not in p.name]
    assert leftovers == []


def test_corrupt_downloads_spend_the_same_retry_budget_as_a_503(emu, conn):
    batch_id = emu.add_batch(seed=5, n_submissions=10)
    emu.faults.corrupt_download(offset=2_000, times=FAST_RETRY.max_attempts - 1)
    exp = load_batch_export(batch_id, **conn)  # was: CorruptArchiveError after two tries
    served = [r for r in _downloads(emu) if r.status in (200, 206)]
    assert len(served) == FAST_RETRY.max_attempts
    assert_matches_truth(exp.arrow.tables, emu.ground_truth(batch_id))


def test_always_corrupt_download_fails_after_the_whole_retry_budget(emu, conn):
    batch_id = emu.add_batch(seed=5, n_submissions=10)
    emu.faults.corrupt_download(offset=2_000, times=None)
    policy = RetryPolicy(max_attempts=3, backoff_base=0.001, backoff_max=0.01, max_elapsed=30)
    client = ProlificClient(conn["client"].settings, retry=policy)
    with pytest.raises(CorruptArchiveError, match="3 download"):
        load_batch_export(batch_id, **{**conn, "client": client})
    assert len([r for r in _downloads(emu) if r.status in (200, 206)]) == 3
    assert _manifests(conn) == []


# -- waiting, concurrent loads and the job cap -----------------------------------------------


def test_timeout_names_the_export_and_export_id_resumes_the_same_job(tmp_path):
    with Emulator(polls_until_complete=8) as slow:
        batch_id = slow.add_batch(seed=6, n_submissions=4)
        settings = Settings.from_env(base_url=slow.base_url, token=slow.token)
        conn = {"client": settings, "cache": str(tmp_path), "progress": False}
        with pytest.raises(ExportTimeoutError) as info:
            load_batch_export(batch_id, **{**conn, "client": settings.replace(wait_timeout=0.0)})
        export_id = info.value.export_id
        assert export_id and export_id in str(info.value)
        assert f"export_id={export_id}" in str(info.value) or "export_id=" in str(info.value)
        exp = load_batch_export(batch_id, export_id=export_id, **conn)
        assert exp.export_id == export_id
        assert len([r for r in slow.requests if r.method == "POST"]) == 1
        assert_matches_truth(exp.arrow.tables, slow.ground_truth(batch_id))


def test_four_concurrent_loads_of_one_export_download_it_once(emu, conn):
    batch_id = emu.add_batch(seed=8, n_submissions=20)
    emu.faults.bandwidth(2_000_000)  # keep the download in flight while the others arrive
    client = ProlificClient(Settings.from_env(token=emu.token, base_url=emu.base_url))
    job = request_export(client, ExportRef("batch", batch_id))
    results, errors = [], []

    def load() -> None:
        try:
            results.append(load_batch_export(batch_id, export_id=job.export_id, **conn))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 4
    assert len([r for r in _downloads(emu) if r.status in (200, 206)]) == 1
    truth = emu.ground_truth(batch_id)
    for exp in results:
        assert_matches_truth(exp.arrow.tables, truth)


def test_export_limit_error_lists_the_existing_jobs(tmp_path):
    with Emulator(polls_until_complete=1000) as busy:
        batch_id = busy.add_batch(seed=9, n_submissions=2)
        settings = Settings.from_env(base_url=busy.base_url, token=busy.token)
        conn = {"client": settings, "cache": str(tmp_path), "progress": False}
        no_wait = settings.replace(wait_timeout=0.0)
        for day in range(1, 11):
            load_kw = dict(conn, since=f"2026-10-{day:02d}T00:00:00Z", client=no_wait)
            with pytest.raises(ExportTimeoutError):
                load_batch_export(batch_id, **load_kw)
        with pytest.raises(ExportLimitError) as info:
            load_batch_export(batch_id, max_age=0, **conn)
        assert info.value.status == 409
        assert len(info.value.existing_jobs) == 10


# -- bad lines, random faults, archives in memory --------------------------------------------


def _zip_with_lines(path: Path, lines: list[bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("responses-by-submission.jsonl", b"\n".join(lines) + b"\n")
        zf.writestr("batch.json", json.dumps({"id": "b1", "instructions": []}))


GOOD = json.dumps(
    {
        "submission_id": "s1",
        "participant_id": "p1",
        "batch_id": "b1",
        "tasks": [
            {
                "task_id": "t1",
                "responses": [
                    {
                        "id": "r1",
                        "created_at": "2026-11-01T00:00:00Z",
                        "instruction_id": "i1",
                        "type": "free_text",
                        "answer": [{"value": "ok"}],
                    }
                ],
            }
        ],
    }
).encode()


def test_bad_jsonl_line_is_named_or_quarantined_whole(tmp_path):
    path = tmp_path / "bad.zip"
    bad = b'{"submission_id": "s2", "tasks": [ broken'
    _zip_with_lines(path, [GOOD, bad, GOOD.replace(b"s1", b"s3").replace(b"r1", b"r3")])
    with pytest.raises(BadRecordError) as info:
        read_export(str(path))
    assert info.value.member == "responses-by-submission.jsonl"
    assert info.value.line == 2
    assert "responses-by-submission.jsonl" in str(info.value) and "2" in str(info.value)
    exp = read_export(str(path), on_bad_records="quarantine")
    rejected = exp.rejected
    assert list(rejected["line_number"]) == [2]
    assert rejected["raw"].iloc[0] == bad.decode()
    assert sorted(exp.answers["response_id"]) == ["r1", "r3"]


def test_soak_random_faults_every_load_exact_or_typed(tmp_path):
    """Seeded and bounded: random fault mixes, each load exact or a typed error, then exact."""
    rng = random.Random(20261129)
    with Emulator(polls_until_complete=1) as soak:
        batches = [soak.add_batch(seed=100 + i, n_submissions=rng.randint(3, 25)) for i in range(4)]
        truths = {b: soak.ground_truth(b) for b in batches}
        outcomes = {"exact": 0, "typed": 0}
        for round_ in range(24):
            soak.faults.clear()
            for _ in range(rng.randint(1, 3)):
                kind = rng.choice(["429", "5xx", "expired", "drop", "corrupt", "latency"])
                if kind == "429":
                    soak.faults.rate_limit(
                        times=rng.randint(1, 3), retry_after=rng.choice([None, 0])
                    )
                elif kind == "5xx":
                    soak.faults.server_error(
                        times=rng.randint(1, 3), status=rng.choice([500, 502, 503])
                    )
                elif kind == "expired":
                    soak.faults.expired_url(times=rng.randint(1, 2))
                elif kind == "drop":
                    soak.faults.drop_download(
                        after_bytes=rng.randint(100, 30_000), times=rng.randint(1, 2)
                    )
                elif kind == "corrupt":
                    soak.faults.corrupt_download(
                        offset=rng.randint(0, 3_000), times=rng.randint(1, 3)
                    )
                else:
                    soak.faults.latency(0.01, times=3)
            batch_id = rng.choice(batches)
            cache = tmp_path / f"cache-{round_ % 3}"
            conn = {
                "client": ProlificClient(
                    Settings.from_env(base_url=soak.base_url, token=soak.token), retry=FAST_RETRY
                ),
                "cache": str(cache),
                "progress": False,
                "max_age": rng.choice([0, 600]),
            }
            try:
                exp = load_batch_export(batch_id, **conn)
            except ProlificIngestError:
                outcomes["typed"] += 1
                soak.faults.clear()
                exp = load_batch_export(batch_id, **conn)  # the next load from this cache is exact
            else:
                outcomes["exact"] += 1
            assert_matches_truth(exp.arrow.tables, truths[batch_id])
        assert outcomes["exact"] + outcomes["typed"] == 24
        assert outcomes["exact"] > 0


def test_read_export_from_bytes_in_memory_fs():
    import fsspec

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("responses-by-submission.jsonl", GOOD + b"\n")
    with fsspec.open("memory://faults/x.zip", "wb") as fh:
        fh.write(buf.getvalue())
    exp = read_export("memory://faults/x.zip")
    assert exp.export_id == f"sha256-{hashlib.sha256(buf.getvalue()).hexdigest()[:16]}"
    assert list(exp.answers["value"]) == ["ok"]
